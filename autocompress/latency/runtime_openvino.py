"""OpenVINO on the CPU (the ``openvino`` package): the model exported to ONNX as for ONNX Runtime,
read and compiled by OpenVINO for the target's static shape (batch × sequence: OpenVINO compiles
a faster graph for a static shape, and a served classifier pads to one), ``INFERENCE_NUM_THREADS
= target.threads``, one stream, the latency hint.

int8 linears: NNCF's static post-training quantization (:func:`quantize_ir`), the fastest of the
paths measured on the default teacher (``benchmarks/openvino_int8.py``, docs/runtimes.md: 7.38 ms
against 11.35 ms for NNCF's weight-only int8, 16.22 ms fp32, 20.97 ms for ONNX Runtime's
dynamic-int8 graph read by OpenVINO, and 11.92 ms for that graph on ONNX Runtime). Its activation
scales come from calibration data, so a plan's score on OpenVINO is not torch's dynamic-int8
score: :meth:`OpenVINORuntime.scorer` writes the IR calibrated on the task's training examples
(``<model folder>/openvino/model.xml``, :data:`IR_FOLDER`) and the search scores that; timing the same folder
compiles that IR (the graph and its kernels do not depend on the scales, so a model without one
is timed calibrated on random inputs). int8 embeddings: an int8 ``Gather`` and a scale.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..cpu import has_bf16
from .runtime import Runtime, Session, file_bytes


#: The subfolder of a model folder that holds the IR scored for it (:meth:`OpenVINORuntime.scorer`).
IR_FOLDER = "openvino"
#: Every compile asks for the plan's precision: fp32 where the plan says fp32. On a CPU with bf16
#: units (measured on an Intel Xeon with AMX) OpenVINO's CPU plugin otherwise runs fp32 layers in
#: bf16: the default teacher's logits then differ from torch's by up to 0.037 (1e-5 with the f32
#: hint) and it runs in 3.3 ms instead of 9.2 ms (validation / test .8329 / .8447 against .8337 /
#: .8447; runs/ovprec, 2 rounds). The accuracy scored and the latency timed must be of the plan's
#: model on every CPU, so bf16 is the plan's choice (``precision: {dtype: bf16}``,
#: :func:`compile_config`). The exported IR's recipe passes the hint.
PRECISION = {"INFERENCE_PRECISION_HINT": "f32"}


def compile_config(precision: str = "fp32") -> dict:
    """The compile option that makes OpenVINO run a plan in ``precision`` (fp32 or bf16)."""
    return {"INFERENCE_PRECISION_HINT": "bf16"} if precision == "bf16" else dict(PRECISION)


def plan_precision(plan, target) -> str:
    """The arithmetic a plan runs in on ``target``: the plan's ``precision`` when it sets one, else
    the target's (a bf16 latency table times plans that do not say)."""
    if plan is not None and "precision" in plan.techniques:
        return plan.technique("precision").dtype
    return getattr(target, "precision", "fp32")


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
    int8 = True     # NNCF's static int8 (see the module docstring)
    sparse = False
    bf16 = has_bf16()  # INFERENCE_PRECISION_HINT bf16 (AMX / AVX512-BF16 kernels)
    shares_quantized_inputs = True  # NNCF puts one FakeQuantize on a tensor for all its int8 consumers
    build_seconds = (2.0, 20.0)  # export, read and compile
    #: NNCF's quantization of a plan with int8 linears, on top of ``build_seconds``: export, NNCF and
    #: compile of MiniLM-L6 int8-all took 9.6-12.6 s here (:meth:`scorer`, 64 calibration examples)
    int8_build_seconds = 8.0

    def build(self, model, target, *, resolved=None, plan=None, workdir=None, calibration=None) -> Session:
        """``calibration``: the task's inputs for the int8 linears' activation scales
        (:func:`quantize_ir`); timing needs none."""
        from .onnx import export_onnx, exportable, int8_nodes

        check_bf16(plan)
        fp32, torch_int8 = exportable(model, plan)
        nodes = int8_nodes(fp32, resolved, module_names=torch_int8)
        vocab = int(getattr(fp32.config, "vocab_size", 1000))
        tmp = tempfile.TemporaryDirectory(dir=workdir, prefix="autocompress-openvino-")
        try:
            path = export_onnx(fp32, Path(tmp.name) / "model.onnx")
            if nodes:
                path = quantize_ir(path, nodes, Path(tmp.name) / "model.xml", calibration, target=target, vocab=vocab)
            compiled = compile_model(path, target, plan_precision(plan, target))
            return OpenVINOSession(compiled, target, tmp, vocab, path)
        except BaseException:
            tmp.cleanup()
            raise

    def build_compressed(self, cm, target, workdir=None) -> Session:
        """The IR the search scored (:meth:`scorer`, saved in the model's folder) when there is
        one for this plan; otherwise built as :meth:`build` builds it."""
        ir = scored_ir(cm)
        if ir is None:
            return super().build_compressed(cm, target, workdir)
        vocab = int(cm.base_config.get("vocab_size", 1000))
        return OpenVINOSession(compile_model(ir, target, plan_precision(cm.plan, target)), target, None, vocab, ir)

    def scorer(self, cm, folder: Path, calibration, threads: int = 1):
        """A plan with int8 linears: its IR calibrated on ``calibration()`` in
        ``folder/``:data:`IR_FOLDER```/model.xml`` (with ``scored.json``: the plan's fingerprint and
        how it was calibrated) and its logits
        function (dynamic shapes, ``threads`` threads). fp32 plans: None (OpenVINO's fp32 logits
        are torch's to rounding). A model loaded from a folder that holds the IR scored for its plan
        (:func:`scored_ir`) is scored on that IR, as it is timed and shipped, not quantized again."""
        import json

        import openvino as ov

        from .onnx import export_onnx, exportable, int8_nodes

        fp32, torch_int8 = exportable(cm.fp32_model(), cm.plan)
        nodes = int8_nodes(fp32, cm.resolved, module_names=torch_int8)
        precision = plan_precision(cm.plan, None)
        if not nodes and precision == "fp32":
            return None
        check_bf16(cm.plan)
        path = scored_ir(cm)
        if path is None:
            folder = Path(folder) / IR_FOLDER
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix="autocompress-openvino-") as tmp:
                onnx_path = export_onnx(fp32, Path(tmp) / "model.onnx")
                if nodes:
                    calibration = calibration()
                    path = quantize_ir(onnx_path, nodes, folder / "model.xml", calibration)
                    examples = sum(int(np.asarray(item["input_ids"]).shape[0]) for item in calibration)
                    how = f"NNCF static int8, activation scales from {examples} training examples"
                else:  # bf16 alone: fp32 weights, compiled in bf16
                    path = folder / "model.xml"
                    ov.save_model(ov.convert_model(str(onnx_path)), str(path), compress_to_fp16=False)
                    how = "none (fp32 weights)"
            (folder / "scored.json").write_text(json.dumps({
                "plan_fingerprint": cm.plan.fingerprint(), "int8_linears": len(nodes), "calibration": how,
                "compile_config": compile_config(precision)}, indent=2))
        config = {"INFERENCE_NUM_THREADS": int(threads), **compile_config(precision)}
        request = ov.Core().compile_model(str(path), "CPU", config).create_infer_request()
        return lambda ids, mask: next(iter(request.infer({"input_ids": np.asarray(ids, dtype=np.int64),
                                                          "attention_mask": np.asarray(mask, dtype=np.int64)}).values()))

    def estimated_build_seconds(self, plan_seconds: float) -> float:
        return super().estimated_build_seconds(plan_seconds) + self.int8_build_seconds / 2  # half the plans


def scored_ir(cm) -> Path | None:
    """``<cm's folder>/openvino/model.xml`` when it holds the IR scored for ``cm``'s plan."""
    import json

    folder = None if cm.source is None else Path(cm.source) / IR_FOLDER
    if folder is None or not (folder / "scored.json").is_file() or not (folder / "model.xml").is_file():
        return None
    if json.loads((folder / "scored.json").read_text()).get("plan_fingerprint") != cm.plan.fingerprint():
        return None
    return folder / "model.xml"


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
    nncf.set_log_level(logging.ERROR)  # NNCF logs every node it leaves alone, on stdout
    quiet = io.StringIO()  # and draws progress bars of its own, into ours and into --json output
    with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
        quantized = nncf.quantize(model, nncf.Dataset(items), model_type=nncf.ModelType.TRANSFORMER, subset_size=len(items),
                                  ignored_scope=nncf.IgnoredScope(names=others, validate=False))
    ov.save_model(quantized, str(out), compress_to_fp16=False)
    return out


def check_bf16(plan) -> None:
    """UserError when ``plan`` runs in bf16 and OpenVINO has no bf16 kernels on this CPU (it would
    run it in fp32: neither the accuracy nor the latency would be the plan's)."""
    if plan is not None and plan_precision(plan, None) == "bf16" and not OpenVINORuntime.bf16:
        raise UserError(f"plan {plan.name!r} runs in bf16 and OpenVINO has no bf16 kernels on this CPU "
                        "(it needs AVX512-BF16 or AMX)")


def compile_model(path, target, precision: str = "fp32"):
    """An OpenVINO model from an ONNX or IR file, compiled on the CPU for ``target``: static
    (batch, sequence) shape, ``target.threads`` threads, one stream, latency hint, in the plan's
    ``precision`` (:func:`compile_config`: fp32 where the plan says fp32)."""
    import openvino as ov

    core = ov.Core()
    try:
        model = core.read_model(str(path))
        model.reshape({port.get_any_name(): [target.batch_size, target.seq_len] for port in model.inputs})
        return core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": int(target.threads), "NUM_STREAMS": 1,
                                                 "PERFORMANCE_HINT": "LATENCY", **compile_config(precision)})
    except Exception as exc:  # OpenVINO raises RuntimeError subclasses of its own
        raise UserError(f"{path}: OpenVINO cannot compile it: {str(exc).splitlines()[0]}") from exc


__all__ = ["PRECISION", "OpenVINORuntime", "OpenVINOSession", "check_bf16", "compile_config", "compile_model",
           "plan_precision", "quantize_ir", "scored_ir"]
