"""The ONNX part of ``autocompress export``: writing ``model.onnx`` (fp32, or with the plan's int8
linears quantized by ONNX Runtime), its latency in ONNX Runtime, its logits against torch's, the
``ort_quantize.json``/``ort_config.json`` settings and the README section of an ONNX export.
"""

from __future__ import annotations

from pathlib import Path

CHECK_EXAMPLES = 32
# The onnxruntime.quantization.quantize_dynamic arguments of autocompress.latency.onnx.quantize_onnx
# besides nodes_to_quantize (tests/test_export.py checks that they reproduce its output).
ORT_QUANTIZE = {"op_types_to_quantize": ["MatMul"], "per_channel": True, "reduce_range": False,
                "weight_type": "QInt8", "nodes_to_exclude": [], "extra_options": {}}


def described(techniques: dict) -> str:
    """``techniques`` (key → section as in the plan) as text after a comma, or nothing."""
    return "".join(f", {key} " + " ".join(f"{k}={v}" for k, v in section.items())
                   for key, section in techniques.items())


def write_onnx(fp32, resolved, path: Path, plan=None) -> Path:
    """Export the fp32 structure; with ``resolved``, quantize the plan's int8 linears and apply
    ``plan``'s whole-model techniques (e.g. int8 embeddings) as torch runs them."""
    from .latency.onnx import build_onnx, export_onnx

    if resolved is None:
        return export_onnx(fp32, path)
    return build_onnx(fp32, path, resolved=resolved, plan=plan)


def onnx_latency(path: Path, target) -> dict:
    """Latency of the exported file in ONNX Runtime on ``target`` (the measurement protocol)."""
    from .latency.onnx import measure_onnx

    stats = measure_onnx(path, target)
    return {**stats.to_dict(), "target": target.to_dict(), "target_description": target.describe(),
            "device": target.device()}


def check_inputs(cm, seq_len: int, n: int = CHECK_EXAMPLES):
    """``n`` seeded random sequences of ``seq_len`` token ids, most of them right-padded."""
    import torch

    vocab = int(cm.base_config.get("vocab_size", 1000))
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(min(5, vocab - 1), vocab, (n, seq_len), generator=g)
    mask = torch.ones_like(ids)
    for row in range(n):
        mask[row, seq_len - row % (seq_len // 2 + 1):] = 0
    ids[mask == 0] = cm.tokenizer.pad_token_id or 0
    return ids, mask


def logits_check(path: Path, cm, fp32, fmt: str, target) -> dict:
    """The exported file's logits against torch's: the fp32 model for ``onnx``, the int8 model as
    the search evaluated it for ``onnx-int8``."""
    import numpy as np
    import torch

    from .latency.onnx import run_onnx

    ids, mask = check_inputs(cm, target.seq_len)
    reference = fp32 if fmt == "onnx" else cm.model
    with torch.no_grad():
        expected = reference(input_ids=ids, attention_mask=mask).logits.numpy()
    got = run_onnx(path, ids, mask, threads=target.threads)
    return {"reference": "torch fp32 (load(DIR).fp32_model())" if fmt == "onnx" else
            "torch with the plan's int8 linears (load(DIR).model, as the search evaluated it)",
            "examples": int(ids.shape[0]), "seq_len": int(ids.shape[1]),
            "max_abs_diff": float(np.abs(got - expected).max()),
            "argmax_agreement": float((got.argmax(-1) == expected.argmax(-1)).mean())}


def ort_quantize(nodes: list[str]) -> dict:
    """The ``onnxruntime.quantization.quantize_dynamic`` call that quantizes the plan's int8
    linears of the fp32 export (``--format onnx``) into the ``--format onnx-int8`` model."""
    import onnxruntime

    return {"function": "onnxruntime.quantization.quantize_dynamic", "onnxruntime_version": onnxruntime.__version__,
            "model_input": "model.onnx of 'autocompress export --format onnx' (fp32) of the same trial",
            "arguments": {**ORT_QUANTIZE, "nodes_to_quantize": nodes},
            "usage": "args = json.load(open('ort_quantize.json'))['arguments']; "
                     "quantize_dynamic('model.onnx', 'model-int8.onnx', "
                     "**{**args, 'weight_type': QuantType[args['weight_type']]})"}


def ort_config(nodes: list[str]) -> dict:
    """The same quantization as a Hugging Face Optimum ``ORTConfig`` (the JSON that
    ``ORTConfig.to_json_file`` writes: fields of ``ORTConfig`` and ``QuantizationConfig`` in
    optimum/onnxruntime/configuration.py, enums by name). Dynamic quantization: QOperator format,
    IntegerOps mode, uint8 activations, symmetric int8 weights. The node names are those of our
    exported ``model.onnx``, not of a model exported by Optimum."""
    from .latency.onnx import DEFAULT_OPSET

    quantization = {"is_static": False, "format": "QOperator", "mode": "IntegerOps",
                    "activations_dtype": "QUInt8", "activations_symmetric": False,
                    "weights_dtype": ORT_QUANTIZE["weight_type"], "weights_symmetric": True,
                    "per_channel": ORT_QUANTIZE["per_channel"], "reduce_range": ORT_QUANTIZE["reduce_range"],
                    "nodes_to_quantize": nodes, "nodes_to_exclude": ORT_QUANTIZE["nodes_to_exclude"],
                    "operators_to_quantize": ORT_QUANTIZE["op_types_to_quantize"],
                    "qdq_add_pair_to_weight": False, "qdq_dedicated_pair": False,
                    "qdq_op_type_per_channel_support_to_axis": {"MatMul": 1}}
    return {"opset": DEFAULT_OPSET, "use_external_data_format": False, "one_external_file": True,
            "optimization": {}, "quantization": quantization}


def onnx_sections(info: dict, out: str, fmt: str) -> list[str]:
    lat, check = info["latency"], info["check"]
    what = (f"{info['int8_matmuls']} linear MatMuls int8 (ONNX Runtime dynamic quantization, per channel)"
            if fmt == "onnx-int8" else "every linear fp32") + described(info["techniques"])
    lines = ["## This ONNX file", "",
             f"`{info['file']}`: inputs `input_ids`, `attention_mask` (int64, dynamic batch and sequence), output "
             f"`logits`; {what}.", "", "| | |", "| --- | --- |",
             f"| latency p50 / p90 | {lat['p50']:.3f} / {lat['p90']:.3f} ms (spread {lat['spread']:.1%}, "
             f"{lat['runs']} runs{', CONTENDED' if lat.get('contended') else ''}) |",
             f"| target | {lat['target_description']}, {lat['device'].get('cpu', '?')} |",
             f"| vs {check['reference']} | argmax agreement {check['argmax_agreement']:.4f}, max abs logit "
             f"difference {check['max_abs_diff']:.3g} ({check['examples']} random inputs of {check['seq_len']} "
             "tokens) |", "",
             "```python", "import onnxruntime as ort", "from transformers import AutoTokenizer", "",
             f"tokenizer = AutoTokenizer.from_pretrained({out!r})",
             f"session = ort.InferenceSession({str(Path(out) / info['file'])!r}, providers=['CPUExecutionProvider'])",
             "batch = tokenizer(['an example'], padding=True, truncation=True, return_tensors='np')",
             "logits = session.run(['logits'], {'input_ids': batch['input_ids'], "
             "'attention_mask': batch['attention_mask']})[0]", "```", ""]
    if info["plan_int8_matmuls"]:
        lines += ["`ort_quantize.json`: the `onnxruntime.quantization.quantize_dynamic` arguments that quantize the "
                  "plan's int8 linears of the fp32 export (`--format onnx`), giving the `--format onnx-int8` model; "
                  "`ort_config.json`: the same settings as a Hugging Face Optimum `ORTConfig` (node names are those "
                  "of this export).", ""]
    return lines
