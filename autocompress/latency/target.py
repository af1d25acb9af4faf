"""Where a model will serve: runtime, threads, batch size, sequence length, and the device."""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field, replace

@dataclass(frozen=True)
class Target:
    runtime: str = "torch"
    threads: int = field(default_factory=lambda: _cores())
    batch_size: int = 1
    seq_len: int = 128
    #: the arithmetic of every plan timed on this target: ``bf16`` times plans as
    #: ``precision: {dtype: bf16}`` runs them (the latency table of bf16 plans, beside the fp32 one)
    precision: str = "fp32"

    def __post_init__(self):
        from ..errors import UserError
        from .runtime import runtime_class

        kind = runtime_class(self.runtime)  # UserError for an unknown runtime (an uninstalled one is known)
        for name in ("threads", "batch_size", "seq_len"):
            if int(getattr(self, name)) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.precision not in ("fp32", "bf16"):
            raise UserError(f"precision must be fp32 or bf16, got {self.precision!r}")
        if self.precision == "bf16" and not kind.bf16:
            raise UserError(f"{self.runtime} has no bf16 kernels on this CPU (it needs AVX512-BF16 or AMX)")

    def describe(self) -> str:
        bf16 = ", bf16" if self.precision == "bf16" else ""
        return f"{self.runtime}, {self.threads} threads, batch {self.batch_size}, seq {self.seq_len}{bf16}"

    def with_precision(self, precision: str) -> "Target":
        return replace(self, precision=precision)

    def to_dict(self) -> dict:
        """The fields; ``precision`` only when it is not fp32 (so fp32 keys are as before it existed)."""
        out = asdict(self)
        if out["precision"] == "fp32":
            del out["precision"]
        return out

    def device(self) -> dict:
        """The fingerprint of the machine this target is measured on (taken now)."""
        return device_fingerprint()

    def key(self) -> dict:
        """Everything a cached latency figure depends on: this target plus the device."""
        return {"target": self.to_dict(), "device": device_fingerprint()}

    @classmethod
    def from_args(cls, args) -> "Target":
        return cls(runtime=args.runtime, threads=_cores() if args.threads is None else args.threads,
                   batch_size=args.batch_size, seq_len=args.seq_len, precision=getattr(args, "precision", "fp32"))


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def device_fingerprint() -> dict:
    """CPU model, cores this process may use, ISA flags that matter for int8/fp32 kernels, and the
    versions of the libraries that run the model. Cached latency tables are keyed by it."""
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
    isa = sorted(f for f in flags if f in {"avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
                                            "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_int8", "amx_bf16",
                                            "amx_tile", "sse4_2", "asimd", "sve", "i8mm", "bf16"})
    versions = {"torch": torch.__version__}
    for name in ("onnxruntime", "onnx", "transformers"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            pass
    capability = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", lambda: "unknown")()
    return {"cpu": cpu, "cores": _cores(), "machine": platform.machine(), "isa": isa,
            "torch_cpu_capability": capability, "versions": versions}
