"""Where a model will serve: runtime, threads, batch size, sequence length, and the device."""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field

RUNTIMES = ("torch", "onnxruntime")


@dataclass(frozen=True)
class Target:
    runtime: str = "torch"
    threads: int = field(default_factory=lambda: os.cpu_count() or 1)
    batch_size: int = 1
    seq_len: int = 128

    def __post_init__(self):
        from ..errors import UserError

        if self.runtime not in RUNTIMES:
            raise UserError(f"unknown runtime '{self.runtime}'; choose one of {', '.join(RUNTIMES)}")
        for name in ("threads", "batch_size", "seq_len"):
            if int(getattr(self, name)) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")

    def describe(self) -> str:
        return f"{self.runtime}, {self.threads} threads, batch {self.batch_size}, seq {self.seq_len}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_args(cls, args) -> "Target":
        return cls(runtime=args.runtime, threads=args.threads or os.cpu_count() or 1,
                   batch_size=args.batch_size, seq_len=args.seq_len)


def device_fingerprint() -> dict:
    """CPU model, core count, ISA flags that matter for int8/fp32 kernels, library versions."""
    import torch

    cpu, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name") and cpu in ("unknown", "", "x86_64"):
                    cpu = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    isa = sorted(f for f in flags if f in {"avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni",
                                            "avx_vnni", "amx_int8", "amx_bf16", "sse4_2"})
    versions = {"torch": torch.__version__}
    try:
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "machine": platform.machine(), "isa": isa, "versions": versions}
