"""The OpenVINO part of ``autocompress export``: ``--format openvino`` writes OpenVINO IR
(``model.xml`` + ``model.bin``, dynamic batch and sequence, fp32 weights as the search ran them:
no fp16 compression) with the tokenizer beside it, times it in OpenVINO on the target, and checks
its logits against torch's. A plan with int8 linears ships the IR the search scored on OpenVINO
(NNCF's static int8, calibrated on the task's training examples; saved in the model's folder by
an ``--runtime openvino`` search): its activation scales come from the task's data, which an
export does not have. int8 embeddings are kept (an int8 table, a ``Gather`` and per-row scales).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from .errors import UserError
from .export_onnx import described


def openvino_target(run_target: dict, overrides: dict):
    """The OpenVINO target to measure on: the run's target with ``overrides`` applied."""
    from .export_run import TARGET_KEYS
    from .latency import Target

    if overrides.get("runtime", "openvino") != "openvino":
        raise UserError(f"--runtime {overrides['runtime']}: an OpenVINO export runs in openvino")
    values = {**Target().to_dict(), **{k: v for k, v in run_target.items() if k in TARGET_KEYS}, **overrides}
    return Target.from_args(argparse.Namespace(**{**values, "runtime": "openvino"}))


def check_plan(cm) -> None:
    """UserError before anything is written when the plan cannot be exported to OpenVINO yet."""
    from .latency.runtime import get_runtime
    from .latency.runtime_openvino import check_bf16, scored_ir

    get_runtime("openvino")  # the package must be installed
    check_bf16(cm.plan)
    if any(d == "int8" for r in cm.resolved if r.keep for d in r.dtype.values()) and scored_ir(cm) is None:
        raise UserError(f"plan '{cm.plan.name}' has int8 linears and its folder holds no OpenVINO int8 IR (a "
                        "search with --runtime openvino writes it, calibrated on the task); export it with "
                        "--format onnx-int8 (ONNX Runtime) or search with --runtime openvino")


def write_ir(cm, folder: Path) -> Path:
    """``folder/model.xml`` (+ ``.bin``): the model as the search built it, converted from its ONNX
    export by OpenVINO, weights kept fp32; a plan with int8 linears: the int8 IR the search scored."""
    import shutil

    import openvino as ov

    from .latency.onnx import export_onnx, exportable
    from .latency.runtime_openvino import scored_ir

    path = folder / "model.xml"
    ir = scored_ir(cm)
    if ir is not None:
        shutil.copyfile(ir, path)
        shutil.copyfile(ir.with_suffix(".bin"), path.with_suffix(".bin"))
        return path
    fp32, _ = exportable(cm.fp32_model(), cm.plan)
    with tempfile.TemporaryDirectory(prefix="autocompress-ir-") as tmp:
        onnx_path = export_onnx(fp32, Path(tmp) / "model.onnx")
        ov.save_model(ov.convert_model(str(onnx_path)), str(path), compress_to_fp16=False)
    return path


def linears(cm) -> str:
    """How the IR's linears are stored, in words."""
    import json

    from .latency.runtime_openvino import scored_ir

    ir = scored_ir(cm)
    if ir is None:
        return "fp32"
    scored = json.loads((ir.parent / "scored.json").read_text())
    if not scored["int8_linears"]:
        return "fp32"
    return f"int8 where the plan says ({scored['int8_linears']} MatMuls; {scored['calibration']})"


def ir_check(path: Path, cm, target, config: dict) -> dict:
    """The IR's logits in plain OpenVINO compiled with ``config`` against torch's (the model as the
    search evaluated it, or for an IR the search scored itself, int8 or bf16, torch's dynamic int8
    or bf16 of the same plan)."""
    import numpy as np
    import openvino as ov
    import torch

    from .export_onnx import check_inputs

    ids, mask = check_inputs(cm, target.seq_len)
    with torch.no_grad():
        expected = cm.model(input_ids=ids, attention_mask=mask).logits.numpy()
    from .latency.runtime_openvino import scored_ir

    compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": int(target.threads), **config})
    got = next(iter(compiled({"input_ids": ids.numpy(), "attention_mask": mask.numpy()}).values()))

    reference = ("torch (load(DIR).model, as the search evaluated it)" if scored_ir(cm) is None else
                 "torch's dynamic int8 / bf16 of the same plan (load(DIR).model; the search scored this IR itself, "
                 "whose static int8 differs by its activation scales and whose bf16 kernels round differently)")
    return {"reference": reference, "examples": int(ids.shape[0]),
            "seq_len": int(ids.shape[1]), "max_abs_diff": float(np.abs(got - expected).max()),
            "argmax_agreement": float((got.argmax(-1) == expected.argmax(-1)).mean())}


def ir_latency(path: Path, target, vocab: int, precision: str = "fp32") -> dict:
    """The IR's latency in OpenVINO on ``target`` in ``precision`` (the measurement protocol,
    compiled for the target's static shape, as ``--runtime openvino`` times candidates)."""
    from .latency.runtime_openvino import OpenVINOSession, compile_model

    session = OpenVINOSession(compile_model(path, target, precision), target, None, vocab)
    try:
        stats = session.time()
    finally:
        session.close()
    return {**stats.to_dict(), "target": target.to_dict(), "target_description": target.describe(),
            "device": target.device()}


def ir_section(info: dict, out: str) -> list[str]:
    lat, check = info["latency"], info["check"]
    return ["## This OpenVINO model", "",
            f"`{info['file']}` + `model.bin` (OpenVINO IR): inputs `input_ids`, `attention_mask` (int64, dynamic "
            f"batch and sequence), output `logits`; linears {info.get('linears', 'fp32')}{described(info['techniques'])}.", "",
            "| | |", "| --- | --- |",
            f"| latency p50 / p90 | {lat['p50']:.3f} / {lat['p90']:.3f} ms (compiled for batch "
            f"{lat['target']['batch_size']} x {lat['target']['seq_len']} tokens, {lat['runs']} runs"
            f"{', CONTENDED' if lat.get('contended') else ''}) |",
            f"| target | {lat['target_description']}, {lat['device'].get('cpu', '?')} |",
            f"| vs {check['reference']} | argmax agreement {check['argmax_agreement']:.4f}, max abs logit "
            f"difference {check['max_abs_diff']:.3g} ({check['examples']} random inputs of {check['seq_len']} "
            "tokens) |", "",
            "```python", "import openvino as ov", "from transformers import AutoTokenizer", "",
            f"tokenizer = AutoTokenizer.from_pretrained({out!r})",
            ("# bf16, as the search measured it" if info["compile_config"].get("INFERENCE_PRECISION_HINT") == "bf16"
             else "# fp32 as measured: on CPUs with bf16 units OpenVINO otherwise runs fp32 layers in bf16"),
            f"model = ov.Core().compile_model({str(Path(out) / info['file'])!r}, 'CPU', {info['compile_config']!r})",
            "batch = tokenizer(['an example'], padding=True, truncation=True, return_tensors='np')",
            "logits = model({'input_ids': batch['input_ids'], 'attention_mask': batch['attention_mask']})[0]",
            "```", ""]


__all__ = ["check_plan", "ir_check", "ir_latency", "ir_section", "linears", "openvino_target", "write_ir"]
