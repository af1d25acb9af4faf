"""PyTorch eager on the CPU: the model as torch runs it, int8 linears as torch's dynamic
quantization (fbgemm/x86), ``torch.set_num_threads(target.threads)``."""

from __future__ import annotations

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
    build_seconds = (0.5, 10.0)
    fast_build = True  # a plan builds ~4x faster than an exported one: calibration fits more

    def build(self, model, target, *, resolved=None, plan=None, workdir=None) -> Session:
        """``model`` with the int8 linears of ``resolved`` and ``plan``'s whole-model techniques
        applied in place."""
        from ..plan import CompressionPlan
        from ..transform import finalize_

        if resolved is not None or plan is not None:
            finalize_(model, plan or CompressionPlan(name="build"), list(resolved or ()))
        return TorchSession(model, target)

    def build_compressed(self, cm, target, workdir=None) -> Session:
        return TorchSession(cm.model, target)  # already as it runs
