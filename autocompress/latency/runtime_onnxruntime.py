"""ONNX Runtime on the CPU: the model exported to ONNX, the plan's int8 linears quantized by ONNX
Runtime's dynamic quantization, one ``InferenceSession`` with ``intra_op_num_threads =
target.threads`` (:mod:`autocompress.latency.onnx`)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from .runtime import Runtime, Session, file_bytes


class OnnxSession(Session):
    def __init__(self, session, target, tmp: tempfile.TemporaryDirectory | None, path: Path | None = None):
        self.session, self.target, self._tmp = session, target, tmp
        self._bytes = None if path is None else file_bytes(path)

    def time(self, **protocol):
        from .onnx import measure_onnx

        return measure_onnx(self.session, self.target, **protocol)

    def artefact_bytes(self) -> int | None:
        return self._bytes  # the exported file, int8 linears quantized

    def close(self) -> None:
        self.session = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


class OnnxRuntime(Runtime):
    name = "onnxruntime"
    package = "onnxruntime"
    int8 = True     # DynamicQuantizeLinear + MatMulInteger
    sparse = False  # dense kernels only
    shares_quantized_inputs = True  # q, k and v quantize their shared input once
    build_seconds = (1.5, 20.0)  # export and quantization too

    def build(self, model, target, *, resolved=None, plan=None, workdir=None) -> Session:
        from .onnx import build_onnx, onnx_session

        tmp = tempfile.TemporaryDirectory(dir=workdir, prefix="autocompress-onnx-")
        try:
            path = build_onnx(model, Path(tmp.name) / "model.onnx", resolved=resolved, plan=plan)
            return OnnxSession(onnx_session(path, target.threads), target, tmp, path)
        except BaseException:
            tmp.cleanup()
            raise
