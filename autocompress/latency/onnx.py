"""The ONNX Runtime target: export, int8 quantization, and timing in an ``InferenceSession``.

- :func:`export_onnx` writes an fp32 Hugging Face classifier (pruned heads/FFN, dropped layers,
  low-rank linears: any structure ``autocompress.techniques`` produces, e.g. ``cm.fp32_model()``)
  with the TorchScript-based exporter (``dynamo=False``: it keeps module scopes in node names,
  which is how int8 linears are found again) and dynamic batch and sequence axes. Inputs are
  ``input_ids`` and ``attention_mask``; the output is ``logits``.
- :func:`quantize_onnx` is ONNX Runtime dynamic int8 quantization (per channel, QInt8 weights)
  restricted to chosen ``MatMul`` nodes: :func:`int8_nodes` names the nodes of exactly the
  linears a plan marks int8 (both factors of a low-rank linear), so the ONNX model quantizes
  the same linears as the torch one. ONNX Runtime quantizes the input of q/k/v once when several
  of them are int8 (they share it); torch quantizes it per linear.
- :func:`onnx_session` / :func:`measure_onnx` time a session with ``intra_op_num_threads =
  target.threads`` under the same protocol as torch (measurement slot, >= 20 runs, contention).
- :func:`onnx_latency` does all of it for a :class:`~autocompress.compressed.CompressedModel`.

All four supported architectures (BERT/MiniLM, RoBERTa, DistilBERT, MPNet, including MPNet's
per-layer head selection of the shared relative position bias) export; anything else, or an
export failure, is a :class:`~autocompress.errors.UserError`.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from .measure import LatencyStats, timed

DEFAULT_OPSET = 17
META_VOCAB = "autocompress.vocab_size"
META_TYPE = "autocompress.model_type"
INPUTS = ("input_ids", "attention_mask")


class _Logits(nn.Module):
    """``model(input_ids, attention_mask).logits`` as a plain function of two tensors."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def _is_quantized_linear(module: nn.Module) -> bool:
    """A torch dynamically quantized linear (packed int8 weight behind a ``weight()`` method)."""
    return hasattr(module, "_packed_params") and callable(getattr(module, "weight", None))


def dequantized_copy(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """An fp32 copy of ``model`` in which torch dynamically quantized linears are float linears
    again (weights dequantized), and the names of those linears (to quantize in ONNX Runtime)."""
    names = [name for name, m in model.named_modules() if _is_quantized_linear(m)]
    if not names:
        return model, []
    model = copy.deepcopy(model)
    for name in names:
        q = model.get_submodule(name)
        weight = q.weight().dequantize()
        bias = q.bias()
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        with torch.no_grad():
            linear.weight.copy_(weight)
            if bias is not None:
                linear.bias.copy_(bias)
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, linear)
    return model, names


def node_name(module_name: str, prefix: str = "") -> str:
    """The ``MatMul`` node the TorchScript exporter emits for linear ``module_name`` (dotted path
    from the exported module): scopes joined by ``/``, list indices kept as ``name.i``."""
    parts: list[str] = []
    for part in (prefix + module_name).split("."):
        if part.isdigit() and parts:
            parts[-1] = f"{parts[-1]}.{part}"
        else:
            parts.append(part)
    return "/" + "/".join(parts) + "/MatMul"


def linear_nodes(onnx_model) -> list[str]:
    """Names of the ``MatMul`` nodes whose weight is an initializer (the linears)."""
    inits = {i.name for i in onnx_model.graph.initializer}
    return [n.name for n in onnx_model.graph.node if n.op_type == "MatMul" and any(x in inits for x in n.input)]


def int8_nodes(model: nn.Module, resolved=None, *, module_names: Iterable[str] = ()) -> list[str]:
    """Node names of the linears to quantize in the model exported from ``model``.

    ``resolved``: a resolved plan matching ``model``'s structure (layers already dropped), whose
    int8 groups are selected; ``module_names``: further linears by dotted name.
    """
    from ..arch import get_adapter
    from ..techniques import LowRankLinear
    from ..transform import quantize_config

    names = {id(m): n for n, m in model.named_modules()}
    selected = list(module_names)
    if resolved is not None:
        adapter = get_adapter(model)
        layers = adapter.encoder_layers(model)
        for (position, group), dtype in quantize_config(resolved).modules.items():
            if dtype != "int8":
                continue
            if position >= len(layers):
                raise UserError(f"int8 linear in layer position {position} but the model has {len(layers)} layers")
            module = adapter.get_linear(layers[position], group)
            parts = [module.down, module.up] if isinstance(module, LowRankLinear) else [module]
            selected += [names[id(p)] for p in parts]
    return [node_name(n, "model.") for n in selected]


@contextlib.contextmanager
def _quiet():
    """Silence exporter/quantizer chatter (deprecation warnings, "consider pre-processing")."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def export_onnx(model: nn.Module, path: str | Path, *, opset: int = DEFAULT_OPSET, batch_size: int = 2,
                seq_len: int = 16) -> Path:
    """Export an fp32 sequence classifier to ``path`` (dynamic batch and sequence axes).

    Torch-quantized linears are not exportable: pass ``cm.fp32_model()`` (or see
    :func:`dequantized_copy`) and quantize with :func:`quantize_onnx`.
    """
    import onnx

    path = Path(path)
    proto = export_proto(model, opset=opset, batch_size=batch_size, seq_len=seq_len)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    return path


def export_proto(model: nn.Module, *, opset: int = DEFAULT_OPSET, batch_size: int = 2, seq_len: int = 16):
    """:func:`export_onnx` without the file: the ``onnx.ModelProto``."""
    import onnx

    from ..arch import get_adapter

    get_adapter(model)  # UserError for unsupported architectures
    if any(_is_quantized_linear(m) for m in model.modules()):
        raise UserError("cannot export torch int8 linears to ONNX; export the fp32 model (cm.fp32_model()) "
                        "and quantize with autocompress.latency.onnx.quantize_onnx")
    model, tables = _plain_tables(model)
    vocab = int(getattr(model.config, "vocab_size", 1000))
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(min(5, vocab - 1), vocab, (batch_size, seq_len), generator=gen)
    mask = torch.ones_like(ids)
    mask[-1, seq_len // 2:] = 0  # exercise the padding path while tracing
    was_training = model.training
    model.eval()
    buffer = io.BytesIO()
    try:
        with _quiet(), torch.no_grad():
            torch.onnx.export(_Logits(model), (ids, mask), buffer, input_names=list(INPUTS),
                              output_names=["logits"], opset_version=opset, dynamo=False,
                              dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                                            "attention_mask": {0: "batch", 1: "sequence"},
                                            "logits": {0: "batch"}})
    except Exception as exc:  # the exporter raises many types
        model_type = getattr(model.config, "model_type", "?")
        raise UserError(f"cannot export this {model_type} model to ONNX: {type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
    finally:
        model.train(was_training)
    proto = onnx.load_from_string(buffer.getvalue())
    _store_int8_tables(proto, tables)
    onnx.helper.set_model_props(proto, {META_VOCAB: str(vocab),
                                        META_TYPE: str(getattr(model.config, "model_type", ""))})
    return proto


def _plain_tables(model: nn.Module):
    """``model`` with each int8 embedding table (:class:`~autocompress.techniques.Int8Embedding`)
    replaced by the fp32 ``nn.Embedding`` of its values (a copy; ``model`` itself is left alone),
    and those tables as ``(int8 rows, per-row scales, fp32 values)``."""
    from ..techniques import Int8Embedding

    if not any(isinstance(m, Int8Embedding) for m in model.modules()):
        return model, []
    model = copy.deepcopy(model)
    tables = []
    for name, module in list(model.named_modules()):
        if isinstance(module, Int8Embedding):
            plain = module.dequantized()
            parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
            setattr(parent, name.rpartition(".")[2], plain)
            tables.append((module.weight.numpy(), module.scale.numpy(), plain.weight.detach().numpy()))
    return model, tables


def _store_int8_tables(proto, tables) -> None:
    """Store each exported fp32 table of ``tables`` as int8 rows and per-row scales, turned back into
    the same fp32 values by ``Cast`` and ``Mul`` of constants. ONNX Runtime folds those at load, so
    it runs the graph of a plain table (same op counts after optimisation, tested; no latency cost,
    measured: docs/runtimes.md) while the file holds a quarter of the bytes; the values are the
    ones torch computes (int8 x scale, then the lookup)."""
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    for q, scale, values in tables:
        for init in list(graph.initializer):
            if tuple(init.dims) != values.shape or init.data_type != TensorProto.FLOAT:
                continue
            if not np.array_equal(numpy_helper.to_array(init), values):
                continue
            name = init.name
            graph.initializer.remove(init)
            graph.initializer.extend([numpy_helper.from_array(q, f"{name}.int8"),
                                      numpy_helper.from_array(scale.astype(np.float32), f"{name}.scale")])
            nodes = [helper.make_node("Cast", [f"{name}.int8"], [f"{name}.cast"], to=TensorProto.FLOAT,
                                      name=f"{name}.dequantize_cast"),
                     helper.make_node("Mul", [f"{name}.cast", f"{name}.scale"], [name], name=f"{name}.dequantize_mul")]
            for node in reversed(nodes):
                graph.node.insert(0, node)
            break


def quantize_onnx(src, dst: str | Path, nodes: Sequence[str] | None = None) -> Path:
    """ONNX Runtime dynamic int8 quantization (per channel, QInt8 weights) of ``nodes``
    (``MatMul`` node names; None: every linear) of ``src`` (a path or an ``onnx.ModelProto``).
    An empty list copies the model unchanged."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if isinstance(src, onnx.ModelProto):
        proto, src = src, "model"
    else:
        proto = onnx.load(str(src))
    dst = Path(dst)
    available = linear_nodes(proto)
    if nodes is None:
        nodes = available
    missing = sorted(set(nodes) - set(available))
    if missing:
        raise UserError(f"{src}: no linear MatMul node named {missing[0]!r} ({len(missing)} missing); "
                        "was the model exported with export_onnx from the same structure?")
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not nodes:
        onnx.save(proto, str(dst))
        return dst
    with _quiet():
        quantize_dynamic(proto, dst, per_channel=True, weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul"], nodes_to_quantize=list(nodes))
    return dst


def exportable(model: nn.Module, plan=None) -> tuple[nn.Module, list[str]]:
    """``model`` ready for the ONNX exporter: torch int8 linears dequantized (their names returned,
    to quantize again after export; :func:`dequantized_copy`) and ``plan``'s whole-model techniques
    applied (e.g. int8 embeddings: every runtime runs the values torch runs), except its precision
    (the graph is exported fp32; a runtime runs it in bf16 by an option). ``model`` itself is left
    alone."""
    from ..transform import finalize_

    fp32, torch_int8 = dequantized_copy(model)
    if plan is not None and [t for t in plan.techniques_at("finalize") if t.key != "precision"]:
        exported = replace(plan, techniques={k: t for k, t in plan.techniques.items() if k != "precision"})
        fp32 = finalize_(copy.deepcopy(fp32), exported, (), linears=False)
    return fp32, torch_int8


def refuse_bf16(plan) -> None:
    """UserError for a plan that runs in bf16: ONNX Runtime's CPU kernels for these graphs are fp32
    and int8 (the graph is exported fp32; OpenVINO compiles it in bf16 by a compile option)."""
    if plan is not None and plan.technique("precision").dtype != "fp32":
        raise UserError(f"plan {plan.name!r} runs in {plan.technique('precision').dtype}, which ONNX Runtime cannot run "
                        "on the CPU; serve it on torch or OpenVINO (export --format openvino)")


def build_onnx(model: nn.Module, path: str | Path, *, resolved=None, plan=None,
               opset: int = DEFAULT_OPSET) -> Path:
    """Export ``model`` and quantize its int8 linears: those of ``resolved`` (the plan the model
    was built from) and any torch dynamically quantized linears (dequantized for export).
    ``plan``'s whole-model techniques are exported with the values torch computes (int8
    embeddings: stored int8, see :func:`_store_int8_tables`); a model that already has them keeps
    them."""
    path = Path(path)
    refuse_bf16(plan)
    fp32, torch_int8 = exportable(model, plan)
    nodes = int8_nodes(fp32, resolved, module_names=torch_int8)
    if not nodes:
        return export_onnx(fp32, path, opset=opset)
    return quantize_onnx(export_proto(fp32, opset=opset), path, sorted(set(nodes)))


def onnx_session(path: str | Path, threads: int, *, profile: str | None = None):
    """An ``InferenceSession`` on the CPU with ``threads`` intra-op threads (one inter-op thread,
    all graph optimizations). ``profile``: prefix of a per-node profiling file."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = profile
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise UserError(f"{path}: ONNX Runtime cannot load it: {str(exc).splitlines()[0]}") from exc


def session_inputs(session, target, *, seed: int = 0) -> dict[str, np.ndarray]:
    """Random token ids (within the exported vocabulary) and an all-ones mask for ``target``."""
    meta = session.get_modelmeta().custom_metadata_map
    vocab = int(meta.get(META_VOCAB, 1000))
    rng = np.random.default_rng(seed)
    shape = (target.batch_size, target.seq_len)
    feeds = {"input_ids": rng.integers(min(5, vocab - 1), vocab, shape, dtype=np.int64),
             "attention_mask": np.ones(shape, dtype=np.int64)}
    names = [i.name for i in session.get_inputs()]
    return {k: v for k, v in feeds.items() if k in names}


def measure_onnx(path_or_session, target, *, warmup: int = 5, runs: int = 30, retries: int = 3,
                 min_seconds: float = 0.3, max_seconds: float = 5.0) -> LatencyStats:
    """Latency of an exported model (a path, or a session made by :func:`onnx_session`)."""
    if isinstance(path_or_session, (str, Path)):
        session = onnx_session(path_or_session, target.threads)
    else:
        session = path_or_session
    feeds = session_inputs(session, target)
    return timed(lambda: session.run(None, feeds), warmup=warmup, runs=runs, retries=retries,
                 min_seconds=min_seconds, max_seconds=max_seconds)


def run_onnx(path_or_session, input_ids, attention_mask, threads: int = 1) -> np.ndarray:
    """Logits of an exported model for one batch (numpy or torch tensors)."""
    session = onnx_session(path_or_session, threads) if isinstance(path_or_session, (str, Path)) else path_or_session
    as_np = lambda t: t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)  # noqa: E731
    return session.run(["logits"], {"input_ids": as_np(input_ids).astype(np.int64),
                                    "attention_mask": as_np(attention_mask).astype(np.int64)})[0]


def onnx_latency(cm, target, *, warmup: int = 5, runs: int = 30, retries: int = 3,
                 max_seconds: float = 5.0) -> LatencyStats:
    """Latency of a :class:`~autocompress.compressed.CompressedModel` in ONNX Runtime: its fp32
    structure exported, the plan's int8 linears quantized by ONNX Runtime (the ``onnxruntime``
    runtime's session, :mod:`~autocompress.latency.runtime_onnxruntime`)."""
    from .runtime import get_runtime

    session = get_runtime("onnxruntime").build_compressed(cm, target)
    try:
        return session.time(warmup=warmup, runs=runs, retries=retries, max_seconds=max_seconds)
    finally:
        session.close()


__all__ = [
    "DEFAULT_OPSET",
    "build_onnx",
    "dequantized_copy",
    "exportable",
    "export_onnx",
    "export_proto",
    "int8_nodes",
    "linear_nodes",
    "measure_onnx",
    "node_name",
    "onnx_latency",
    "onnx_session",
    "quantize_onnx",
    "run_onnx",
]
