"""OpenVINO on the CPU (the ``openvino`` package): the model exported to ONNX as for ONNX Runtime,
read and compiled by OpenVINO for the target's static shape (batch × sequence: OpenVINO compiles
a faster graph for a static shape, and a served classifier pads to one), ``INFERENCE_NUM_THREADS
= target.threads``, one stream, the latency hint.

int8 linears: not wired yet (``int8 = False``). The plan's int8 linears would reach OpenVINO as
ONNX Runtime's dynamic quantization (``DynamicQuantizeLinear`` + ``MatMulInteger``) or through
NNCF's static quantization with calibration data from the task; which is faster here is still to
measure. Until then a plan with int8 linears is refused on this runtime, and the search spaces
offer only fp32 linears on it. int8 embeddings are fine (an int8 ``Gather`` and a scale).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ..errors import UserError
from .runtime import Runtime, Session, file_bytes


class OpenVINOSession(Session):
    def __init__(self, compiled, target, tmp: tempfile.TemporaryDirectory | None, vocab: int,
                 path: Path | None = None):
        self.compiled, self.target, self._tmp = compiled, target, tmp
        self._bytes = None if path is None else file_bytes(path)
        self.request = compiled.create_infer_request()
        rng = np.random.default_rng(0)
        shape = (target.batch_size, target.seq_len)
        feeds = {"input_ids": rng.integers(min(5, vocab - 1), vocab, shape, dtype=np.int64),
                 "attention_mask": np.ones(shape, dtype=np.int64)}
        names = {n for port in compiled.inputs for n in port.get_names()}
        self.feeds = {k: v for k, v in feeds.items() if k in names}

    def logits(self, input_ids, attention_mask) -> np.ndarray:
        out = self.request.infer({"input_ids": np.asarray(input_ids, dtype=np.int64),
                                  "attention_mask": np.asarray(attention_mask, dtype=np.int64)})
        return next(iter(out.values()))

    def time(self, *, warmup: int = 5, runs: int = 30, retries: int = 3, min_seconds: float = 0.3,
             max_seconds: float = 5.0):
        from .measure import timed

        return timed(lambda: self.request.infer(self.feeds), warmup=warmup, runs=runs, retries=retries,
                     min_seconds=min_seconds, max_seconds=max_seconds)

    def artefact_bytes(self) -> int | None:
        return self._bytes  # the exported file OpenVINO read (its IR's .bin holds the same weights)

    def close(self) -> None:
        self.request = self.compiled = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


class OpenVINORuntime(Runtime):
    name = "openvino"
    package = "openvino"
    int8 = False    # not wired yet: see the module docstring
    sparse = False
    build_seconds = (2.0, 20.0)  # export, read and compile

    def build(self, model, target, *, resolved=None, plan=None, workdir=None) -> Session:
        from .onnx import export_onnx, exportable

        fp32, torch_int8 = exportable(model, plan)
        if torch_int8 or any(d == "int8" for r in (resolved or ()) if r.keep for d in r.dtype.values()):
            raise UserError("int8 linears on OpenVINO are not supported yet; use a plan whose linears are fp32 "
                            "(int8 embeddings are fine)")
        tmp = tempfile.TemporaryDirectory(dir=workdir, prefix="autocompress-openvino-")
        try:
            path = export_onnx(fp32, Path(tmp.name) / "model.onnx")
            compiled = compile_model(path, target)
            return OpenVINOSession(compiled, target, tmp, int(getattr(fp32.config, "vocab_size", 1000)), path)
        except BaseException:
            tmp.cleanup()
            raise


def compile_model(path, target):
    """An OpenVINO model from an ONNX or IR file, compiled on the CPU for ``target``: static
    (batch, sequence) shape, ``target.threads`` threads, one stream, latency hint."""
    import openvino as ov

    core = ov.Core()
    try:
        model = core.read_model(str(path))
        model.reshape({port.get_any_name(): [target.batch_size, target.seq_len] for port in model.inputs})
        return core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": int(target.threads), "NUM_STREAMS": 1,
                                                 "PERFORMANCE_HINT": "LATENCY"})
    except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own
        raise UserError(f"{path}: OpenVINO cannot compile it: {str(exc).splitlines()[0]}") from exc


__all__ = ["OpenVINORuntime", "OpenVINOSession", "compile_model"]
