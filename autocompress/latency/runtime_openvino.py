"""OpenVINO on the CPU (the ``openvino`` package): the model exported to ONNX as for ONNX Runtime,
read and compiled by OpenVINO for the target's static shape (batch × sequence: OpenVINO compiles
a faster graph for a static shape, and a served classifier pads to one), ``INFERENCE_NUM_THREADS
= target.threads``, one stream, the latency hint.

int8 linears: through NNCF's static post-training quantization (:func:`quantize_ir`), the fastest
of the paths measured on the default teacher (``benchmarks/openvino_int8.py``, docs/runtimes.md:
7.38 ms against 11.35 ms for NNCF's weight-only int8, 16.22 ms fp32, 20.97 ms for ONNX Runtime's
dynamic-int8 graph read by OpenVINO, and 11.92 ms for that graph on ONNX Runtime). Not switched on
yet (``int8 = False``): the calibration grid, the search's accuracy of an int8 plan (computed in
torch's dynamic int8) and the IR export (which needs the task's inputs for the scales) have still
to follow it. Until then a plan with int8 linears is refused on this runtime, and the search
spaces offer only fp32 linears on it. int8 embeddings are fine (an int8 ``Gather`` and a scale).
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

    def build(self, model, target, *, resolved=None, plan=None, workdir=None, calibration=None) -> Session:
        """``calibration``: the task's inputs for the int8 linears' activation scales
        (:func:`quantize_ir`); timing needs none."""
        from .onnx import export_onnx, exportable, int8_nodes

        fp32, torch_int8 = exportable(model, plan)
        nodes = int8_nodes(fp32, resolved, module_names=torch_int8)
        if nodes and not self.int8:
            raise UserError("int8 linears on OpenVINO are not supported yet; use a plan whose linears are fp32 "
                            "(int8 embeddings are fine)")
        vocab = int(getattr(fp32.config, "vocab_size", 1000))
        tmp = tempfile.TemporaryDirectory(dir=workdir, prefix="autocompress-openvino-")
        try:
            path = export_onnx(fp32, Path(tmp.name) / "model.onnx")
            if nodes:
                path = quantize_ir(path, nodes, Path(tmp.name) / "model.xml", calibration, target=target, vocab=vocab)
            compiled = compile_model(path, target)
            return OpenVINOSession(compiled, target, tmp, vocab, path)
        except BaseException:
            tmp.cleanup()
            raise


def quantize_ir(onnx_path: Path, nodes, out: Path, calibration: list[dict] | None = None, *,
                target=None, vocab: int = 1000) -> Path:
    """``out`` (``.xml`` + ``.bin``): the ONNX model with the linears named ``nodes`` (ONNX node
    names, which OpenVINO keeps) int8 by NNCF's post-training quantization (weights and activations,
    ``model_type=TRANSFORMER``); every other MatMul stays fp32. ``calibration``: input dicts from
    the task, which set the activations' scales; without it (timing only: the graph and its kernels
    do not depend on the scales) eight random inputs of the target's shape."""
    import nncf
    import openvino as ov

    model = ov.Core().read_model(str(onnx_path))
    keep = set(nodes)
    others = [op.get_friendly_name() for op in model.get_ops()
              if op.get_type_name() == "MatMul" and op.get_friendly_name() not in keep]
    if calibration is None:
        rng = np.random.default_rng(0)
        shape = (target.batch_size, target.seq_len)
        calibration = [{"input_ids": rng.integers(min(5, vocab - 1), vocab, shape, dtype=np.int64),
                        "attention_mask": np.ones(shape, dtype=np.int64)} for _ in range(8)]
    names = {n for port in model.inputs for n in port.get_names()}
    items = [{k: v for k, v in item.items() if k in names} for item in calibration]
    quantized = nncf.quantize(model, nncf.Dataset(items), model_type=nncf.ModelType.TRANSFORMER,
                              subset_size=len(items), ignored_scope=nncf.IgnoredScope(names=others, validate=False))
    ov.save_model(quantized, str(out), compress_to_fp16=False)
    return out


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
