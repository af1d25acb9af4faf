"""PyTorch eager on the CPU: the model as torch runs it, int8 linears as torch's dynamic
quantization (fbgemm/x86), bf16 plans on the CPU's bf16 kernels (oneDNN; AVX512-BF16 or AMX),
``torch.set_num_threads(target.threads)``."""

from __future__ import annotations

from ..cpu import has_bf16
from .runtime import Runtime, Session


class TorchSession(Session):
    def __init__(self, model, target):
        self.model, self.target = model, target

    def time(self, **protocol):
        from .measure import time_torch

        return time_torch(self.model, self.target, **protocol)

    def artefact_bytes(self) -> int:
        """The weights as they run (int8 linears packed), serialised by ``torch.save``."""
        import io

        import torch

        buffer = io.BytesIO()
        torch.save(self.model.state_dict(), buffer)
        return buffer.tell()


class TorchRuntime(Runtime):
    name = "torch"
    package = "torch"
    int8 = True     # fbgemm/x86 dynamic int8 linear
    sparse = False  # dense GEMM only
    bf16 = has_bf16()  # oneDNN bf16 GEMMs; emulated (slower than fp32) without these instructions
    build_seconds = (0.5, 10.0)
    fast_build = True  # a plan builds ~4x faster than an exported one: calibration fits more

    def build(self, model, target, *, resolved=None, plan=None, workdir=None) -> Session:
        """``model`` with the int8 linears of ``resolved`` and ``plan``'s whole-model techniques
        applied in place; in bf16 when the target's ``precision`` is (a calibration table of bf16
        plans)."""
        from ..plan import CompressionPlan
        from ..techniques.precision import cast_bf16_
        from ..transform import finalize_

        if resolved is not None or plan is not None:
            finalize_(model, plan or CompressionPlan(name="build"), list(resolved or ()))
        if target.precision == "bf16":
            cast_bf16_(model)
        return TorchSession(model, target)

    def build_compressed(self, cm, target, workdir=None) -> Session:
        return TorchSession(cm.model, target)  # already as it runs
