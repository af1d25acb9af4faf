"""``autocompress export RUN_DIR``: ship one candidate of a search run to other tools.

``--pick`` chooses the candidate: ``recommended`` (``recommended.json``) or a trial number (the
front in ``pareto.json``, else any trial of the study in ``RUN_DIR/study.db``). ``--format``:

- ``plan``: ``plan.yaml`` (``autocompress.plan/v1``), what ``autocompress apply --plan`` reads.
  It comes from the trial's record, so it works even when the trial's model was not kept.
- ``hf``: the compressed model folder (``config.json``, ``model.safetensors``, tokenizer,
  ``autocompress.json``; :meth:`~autocompress.compressed.CompressedModel.save_pretrained`) with a
  ``README.md`` card: the plan, the metrics the search measured, how to load it.
- ``onnx``: ``model.onnx`` (every linear fp32) with the tokenizer beside it, its latency measured
  in ONNX Runtime and its logits checked against torch's (max abs difference).
- ``onnx-int8``: the same with the plan's int8 linears quantized by ONNX Runtime (what a search
  on ``--runtime onnxruntime`` measures), checked by argmax agreement with torch's int8 model.
- ``openvino``: OpenVINO IR (``model.xml``/``model.bin``) with the tokenizer, timed in OpenVINO
  and checked against torch (:mod:`autocompress.export_openvino`; int8 linears: the IR an
  OpenVINO search scored).

When the plan has int8 linears, both ONNX formats carry ``ort_quantize.json`` (the
``onnxruntime.quantization.quantize_dynamic`` arguments that turn the fp32 ``model.onnx`` into the
int8 one) and ``ort_config.json`` (the same settings as a Hugging Face Optimum ``ORTConfig``).

Saved models are read from ``RUN_DIR/models/`` (the search keeps only the front and the
recommendation). Every export is written to a temporary sibling of ``--out`` and renamed into
place when complete, with an ``export.json`` manifest; ``--out`` may only replace a previous export.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from . import cache
from .errors import UserError
from .export_onnx import CHECK_EXAMPLES, ORT_QUANTIZE, check_inputs  # noqa: F401  (re-exported)
from .export_onnx import logits_check, onnx_latency, onnx_sections, ort_config, ort_quantize, write_onnx
from .export_run import TASK_KEYS, study_rows  # noqa: F401  (re-exported)
from .latency.runtime import describe_size_source
from .export_run import (TARGET_KEYS, Run, apply_command, model_folder, onnx_target, pick_row, read_run, row_plan,
                         task_options)

SCHEMA = "autocompress.export/v1"
MANIFEST = "export.json"
FORMATS = ("plan", "hf", "onnx", "onnx-int8", "openvino")
METRIC_KEYS = ("fidelity", "accuracy", "test_accuracy", "agreement", "latency_ms", "latency_p90_ms", "size_mb",
               "size_source", "weights_mb", "score_source",
               "params", "feasible", "warm_start")


# ---------------------------------------------------------------- command line


def register(subparsers, parser_class, target_options) -> None:
    """Add the ``export`` command to the CLI's sub-parsers."""
    p = subparsers.add_parser("export", help="export a run's recommended candidate or a trial: plan, HF folder, ONNX",
                              description="Export one candidate of a search run. The ONNX formats measure the "
                              "exported file in onnxruntime on the run's target (threads, batch size, sequence "
                              "length) unless --threads/--batch-size/--seq-len say otherwise; the other formats "
                              "take no target options.")
    p.add_argument("run_dir", help="a search output folder (with pareto.json and recommended.json)")
    p.add_argument("--pick", default="recommended", help="'recommended' (default) or a trial number")
    p.add_argument("--format", required=True, help=f"one of {', '.join(FORMATS)}")
    p.add_argument("--out", required=True, help="folder to write (replaced if it is a previous export)")
    target_options(p)
    p.set_defaults(**dict.fromkeys(TARGET_KEYS))  # ONNX formats: the run's target unless given
    p.add_argument("--json", action="store_true", help="print the manifest of what was written as JSON")
    p.set_defaults(func=_run)


def _run(args) -> int:
    given = [k for k in TARGET_KEYS if getattr(args, k) is not None]
    if given and args.format not in ("onnx", "onnx-int8", "openvino"):
        raise UserError(f"--{given[0].replace('_', '-')} only applies to --format onnx, onnx-int8 and openvino "
                        "(the latency of the exported file)")
    overrides = {k: getattr(args, k) for k in given}
    manifest = export(Path(args.run_dir), args.pick, args.format, Path(args.out), target=overrides)
    print(json.dumps(manifest, indent=2) if args.json else summary(manifest))
    return 0


def summary(manifest: dict) -> str:
    """A few lines: what was exported, where, and how to use it."""
    which = "the recommended candidate" if manifest["recommended"] else "not the recommended candidate"
    lines = [f"exported trial {manifest['trial']} of study '{manifest['study']}' ({which}) as {manifest['format']} "
             f"to {manifest['out']}", f"  files: {', '.join(manifest['files'])}"]
    onnx = manifest.get("onnx") or manifest.get("openvino")
    if onnx:
        lat, check = onnx["latency"], onnx["check"]
        lines.append(f"  latency p50 {lat['p50']:.2f} ms, p90 {lat['p90']:.2f} ms, spread {lat['spread']:.1%} "
                     f"({lat['target_description']}, {lat['runs']} runs)")
        lines.append(f"  {onnx['file_bytes'] / 1e6:.1f} MB; vs torch on {check['examples']} inputs: argmax agreement {check['argmax_agreement']:.3f}, "
                     f"max |logit difference| {check['max_abs_diff']:.2g}")
    lines.append(f"  use: {manifest['usage']}")
    return "\n".join(lines)


# ---------------------------------------------------------------- export


def check_out(out: Path) -> None:
    """``out`` must be new, empty, or a previous export (which is then replaced)."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not _is_export(out):
        raise UserError(f"--out {out} is a non-empty folder that autocompress export did not write; choose another")


def _is_export(folder: Path) -> bool:
    try:
        return json.loads((folder / MANIFEST).read_text()).get("schema") == SCHEMA
    except (OSError, ValueError, AttributeError):
        return False


def export(run_dir: Path, pick: str, fmt: str, out: Path, *, target: dict | None = None) -> dict:
    """Export the picked trial of a search run as ``fmt`` into ``out``; return the manifest.

    ``target``: target options (``runtime``/``threads``/``batch_size``/``seq_len``) overriding
    the run's target for the ONNX formats' latency. Every input is checked before anything is
    written; the folder appears complete or not at all.
    """
    if fmt not in FORMATS:
        raise UserError(f"unknown format '{fmt}'; choose one of {', '.join(FORMATS)}")
    check_out(out)
    run = read_run(run_dir)
    row = pick_row(run, str(pick))
    plan = row_plan(row)
    manifest = _manifest(run, row, plan, fmt, out, str(pick))
    if fmt == "plan":
        write = _plan_writer(plan, apply_command(out / "plan.yaml", task_options(run, row), run.target))
    elif fmt == "hf":
        write = _hf_writer(*_load_model(run, row, plan))
    elif fmt == "openvino":
        from .export_openvino import openvino_target

        write = _openvino_writer(*_load_model(run, row, plan), openvino_target(run.target, target or {}))
    else:
        write = _onnx_writer(*_load_model(run, row, plan), fmt, onnx_target(run.target, target or {}))
    with cache.atomic_dir(out, replace=True) as tmp:
        manifest.update(write(tmp, manifest))
        manifest["files"] = sorted({p.name for p in tmp.iterdir()} | {MANIFEST})
        cache.atomic_write_json(tmp / MANIFEST, manifest)
    return manifest


def _manifest(run: Run, row: dict, plan, fmt: str, out: Path, pick: str) -> dict:
    return {"schema": SCHEMA, "format": fmt, "out": str(out), "run": str(run.path.resolve()), "study": run.study,
            "pick": pick, "trial": row["number"], "recommended": row["number"] == run.recommended_number,
            "why": run.recommended.get("why") if row["number"] == run.recommended_number else None,
            "plan": {"name": plan.name, "fingerprint": plan.fingerprint(), "file": "plan.yaml"},
            "metrics": {k: row.get(k) for k in METRIC_KEYS}, "measured_on": run.target,
            "budget": run.recommended.get("budget"), "teacher": run.pareto.get("teacher")}


def _load_model(run: Run, row: dict, plan):
    """``(model, folder)``: the trial's saved model; UserError if it is missing or was built from
    another plan."""
    from .compressed import load

    folder = model_folder(run, row)
    cm = load(folder)
    if cm.plan.fingerprint() != plan.fingerprint():
        raise UserError(f"{folder} holds a model of plan '{cm.plan.name}', not of trial {row['number']}'s plan")
    return cm, folder


def save_plan(plan, path: Path) -> None:
    """Write the plan and load it back with the plan module (it must read the same plan)."""
    from .plan import CompressionPlan

    plan.save(path)
    if CompressionPlan.load(path).fingerprint() != plan.fingerprint():
        raise RuntimeError(f"{path} does not read back as the plan it was written from")


def _plan_writer(plan, command: str):
    def write(tmp: Path, manifest: dict) -> dict:
        save_plan(plan, tmp / "plan.yaml")
        return {"usage": command}

    return write


# ---------------------------------------------------------------- hf


def plain_loadable(cm) -> bool:
    """True when the structure is the original one (every layer, head, FFN neuron kept, no
    low-rank linear, no technique that changes the structure, e.g. a trimmed vocabulary): then
    ``config.json`` describes it and plain transformers can load it."""
    config = cm.base_config
    heads = config.get("num_attention_heads", config.get("n_heads"))
    ffn = config.get("intermediate_size", config.get("hidden_dim"))
    return not cm.plan.techniques_at("structure") and all(r.keep and r.heads == heads and r.ffn == ffn and not any(r.rank.values()) for r in cm.resolved)


def _int8_count(cm) -> int:
    from .transform import quantize_config

    return sum(d == "int8" for d in quantize_config(cm.resolved).modules.values())


def _hf_writer(cm, folder: Path):
    def write(tmp: Path, manifest: dict) -> dict:
        info = {k: v for k, v in cm.info.items() if k != "metrics"}  # load() put the folder's metrics there
        # the search's metrics; save_pretrained replaces the (empty) temporary folder
        replace(cm, info=info).save_pretrained(tmp, metrics=manifest["metrics"])
        plain = plain_loadable(cm)
        usage = f"autocompress.compressed.load({manifest['out']!r}).model" + \
            (" (plain transformers loads it too: see README.md)" if plain else "")
        loading = _hf_loading(cm, manifest["out"], plain)
        cache.atomic_write_text(tmp / "README.md", card(cm, folder, manifest, loading, front_matter=True))
        return {"usage": usage, "source_model": str(folder), "plain_transformers": plain, "labels": cm.label_names}

    return write


def _hf_loading(cm, out: str, plain: bool) -> list[str]:
    from .tasks import get_task

    int8 = _int8_count(cm)
    head = get_task(cm.task).auto_class
    lines = ["## Loading", "",
             "Load it with autocompress's loader: it rebuilds the compressed structure from `autocompress.json` and "
             f"loads the fp32 weights from `model.safetensors`{' (re-quantizing the int8 linears)' if int8 else ''}, "
             "so the logits are identical to the model the search measured:", "", "```python",
             "from autocompress.compressed import load", "", f"cm = load({out!r})",
             'batch = cm.tokenizer(["an example"], padding=True, truncation=True, return_tensors="pt")',
             "logits = cm.model(**batch).logits", "```", ""]
    if plain:
        note = (" Its int8 linears then run in fp32: the logits are those of `load(...).fp32_model()`, "
                "not of the int8 model the search measured." if int8 else
                " The logits are identical to the loader's.")
        if cm.plan.technique("precision").dtype == "bf16":
            note += (" The plan runs in bf16: `model.to(torch.bfloat16)` gives the arithmetic the search measured "
                     "(the loader does it, and returns fp32 logits).")
        lines += ["The structure is the original architecture's (every layer, head and FFN neuron kept, no low-rank "
                  "linear), so plain transformers loads this folder too:", "", "```python",
                  f"from transformers import {head}", "",
                  f"model = {head}.from_pretrained({out!r})", "```", "", note.strip(), ""]
    else:
        lines += ["Its layers have widths a Hugging Face config cannot express (`config.json` describes the "
                  f"uncompressed architecture), so plain `transformers.{head}."
                  "from_pretrained` cannot load it: use `autocompress.compressed.load`.", ""]
    return lines


def _openvino_writer(cm, folder: Path, target):
    from .export_openvino import check_plan, ir_check, ir_latency, ir_section, linears, write_ir
    from .latency.runtime_openvino import compile_config, plan_precision

    check_plan(cm)
    precision = plan_precision(cm.plan, None)
    config = compile_config(precision)

    def write(tmp: Path, manifest: dict) -> dict:
        path = write_ir(cm, tmp)
        cm.tokenizer.save_pretrained(tmp)
        save_plan(cm.plan, tmp / "plan.yaml")
        info = {"file": path.name, "linears": linears(cm),
                "techniques": {key: t.to_dict() for key, t in cm.plan.techniques.items()},
                "file_bytes": path.stat().st_size + path.with_suffix(".bin").stat().st_size,
                "inputs": ["input_ids", "attention_mask"], "output": "logits", "labels": cm.label_names,
                "compile_config": config,  # what the latency and the check below were compiled with
                "latency": ir_latency(path, target, int(cm.base_config.get("vocab_size", 1000)), precision),
                "check": ir_check(path, cm, target, config)}
        cache.atomic_write_text(tmp / "README.md", card(cm, folder, manifest, ir_section(info, manifest["out"])))
        return {"openvino": info, "source_model": str(folder),
                "usage": f"openvino.Core().compile_model({str(Path(manifest['out']) / path.name)!r}, 'CPU', "
                         f"{config!r}) on "
                         f"AutoTokenizer.from_pretrained({manifest['out']!r}) inputs"}

    return write


# ---------------------------------------------------------------- card


def card(cm, folder: Path, manifest: dict, sections: list[str], *, front_matter: bool = False) -> str:
    """README.md: where the model comes from, the search's metrics, the plan, then ``sections``."""
    from .models import model_dims

    m, teacher, target = manifest["metrics"], manifest.get("teacher") or {}, manifest["measured_on"]
    dims = model_dims(folder)
    chosen = f"recommended: {manifest['why']}" if manifest["recommended"] else "picked by trial number"
    task = cm.info.get("task") or {}
    lines = (["---", "tags: [autocompress, compressed, text-classification]", "pipeline_tag: text-classification",
              "---", ""] if front_matter else [])
    lines += [f"# {manifest['study']}: trial {manifest['trial']}, plan '{cm.plan.name}'", "",
              f"Compressed by `autocompress search` (study `{manifest['study']}`, trial {manifest['trial']}, "
              f"{chosen}) from `{task.get('model', '?')}` fine-tuned on `{task.get('dataset', '?')}`. "
              f"Labels: {', '.join(cm.label_names)}.", "",
              "## Metrics measured by the search", "", "| metric | value |", "| --- | --- |",
              f"| validation accuracy | {_num(m.get('accuracy'))} "
              f"(teacher {_num(teacher.get('validation_accuracy'))}) |",
              f"| test accuracy | {_num(m.get('test_accuracy'))} (teacher {_num(teacher.get('test_accuracy'))}) |",
              f"| agreement with the teacher (test predictions) | {_num(m.get('agreement'))} |",
              f"| latency p50 / p90 | {_num(m.get('latency_ms'), 3)} / {_num(m.get('latency_p90_ms'), 3)} ms "
              f"(teacher p50 {_num(teacher.get('latency_ms'), 3)} ms) |",
              f"| latency target | {target.get('runtime')}, {target.get('threads')} threads, batch "
              f"{target.get('batch_size')}, seq {target.get('seq_len')} |",
              f"| size ({describe_size_source(m.get('size_source'))}) | {_num(m.get('size_mb'), 3)} MB |",
              f"| parameters | {m.get('params'):,} |" if m.get("params") is not None else "| parameters | ? |",
              f"| meets the budget | {'yes' if m.get('feasible') else 'no'} ({_budget(manifest.get('budget'))}) |",
              f"| trial / study | {manifest['trial']} / {manifest['study']} |", "",
              "## Plan", "", f"`plan.yaml` (`autocompress.plan/v1`), fingerprint `{cm.plan.fingerprint()[:16]}`; "
              f"{_int8_count(cm)} int8 linears:", "", "```",
              cm.plan.table(dims["num_layers"], dims["num_heads"], dims["intermediate_size"], dims["hidden_size"]),
              "```", ""]
    return "\n".join(lines + sections)


def _num(value, digits: int = 4) -> str:
    return "?" if value is None else f"{value:.{digits}f}"


def _budget(budget: dict | None) -> str:
    limits = (("latency_ms", "p50 ≤", " ms"), ("size_mb", "size ≤", " MB"), ("max_drop", "drop ≤", " points"))
    parts = [f"{label} {budget[key]:g}{unit}" for key, label, unit in limits if (budget or {}).get(key) is not None]
    return ", ".join(parts) or "no budget"


# ---------------------------------------------------------------- onnx


# The ONNX writer stays here: it calls onnx_latency through this module (tests patch export.onnx_latency).
def _onnx_writer(cm, folder: Path, fmt: str, target):
    from .latency.onnx import int8_nodes, refuse_bf16

    refuse_bf16(cm.plan)
    fp32 = cm.fp32_model()
    nodes = sorted(set(int8_nodes(fp32, cm.resolved)))
    whole = {key: t.to_dict() for key, t in cm.plan.techniques.items()}  # e.g. int8 embeddings
    if fmt == "onnx-int8" and not nodes and not whole:
        raise UserError(f"plan '{cm.plan.name}' keeps every linear fp32 and changes nothing else, so there is "
                        "nothing to quantize; export it with --format onnx")

    def write(tmp: Path, manifest: dict) -> dict:
        path = write_onnx(fp32, cm.resolved if fmt == "onnx-int8" else None, tmp / "model.onnx", cm.plan)
        cm.tokenizer.save_pretrained(tmp)
        save_plan(cm.plan, tmp / "plan.yaml")
        if nodes:
            cache.atomic_write_json(tmp / "ort_quantize.json", ort_quantize(nodes))
            config = json.dumps(ort_config(nodes), indent=2, sort_keys=True)  # as ORTConfig.to_json_file
            cache.atomic_write_text(tmp / "ort_config.json", config + "\n")
        info = {"file": path.name, "int8_matmuls": len(nodes) if fmt == "onnx-int8" else 0,
                "plan_int8_matmuls": len(nodes), "techniques": whole if fmt == "onnx-int8" else {},
                "file_bytes": path.stat().st_size, "inputs": ["input_ids", "attention_mask"], "output": "logits",
                "labels": cm.label_names, "latency": onnx_latency(path, target),
                "check": logits_check(path, cm, fp32, fmt, target)}
        usage = f"onnxruntime.InferenceSession({str(Path(manifest['out']) / path.name)!r}) on " \
                f"AutoTokenizer.from_pretrained({manifest['out']!r}) inputs"
        sections = onnx_sections(info, manifest["out"], fmt)
        cache.atomic_write_text(tmp / "README.md", card(cm, folder, manifest, sections))
        return {"onnx": info, "usage": usage, "source_model": str(folder)}

    return write
