"""Where does the default model run fastest, and how small does it ship? (default task: minilm-l6
on rotten-tomatoes; batch 1, sequence 128, all cores)

For each runtime (torch, ONNX Runtime, OpenVINO): the fp32 teacher, the one-line peers (torch
``quantize_dynamic`` of every ``nn.Linear``; ONNX Runtime ``quantize_dynamic`` of the exported
teacher, as ``optimum-cli onnxruntime quantize`` does), and autocompress's quantize-only plans:
every linear int8, with and without int8 word embeddings, and with the vocabulary trimmed to the
training split's tokens too, and fp32 linears with int8 embeddings; on a CPU with bf16 kernels
also the teacher in bf16 (``precision: {dtype: bf16}``; torch and OpenVINO), int8 linears inside
a bf16 model, and plain OpenVINO's default compile of the teacher (bf16 there: a one-line peer). ``--search RUN_DIR``
(repeatable) adds a search's recommended model on the runtime it was searched for, timed in the
same rounds: the best-under-budget row of that runtime.

Every model is timed in a fresh process, ``--rounds`` rounds, the models interleaved in each
round (this machine's speed drifts by tens of percent over minutes: only figures taken side by
side compare); the table gives the median p50 and p90 of the rounds and the spread of p50 across
them. Size is the artefact a user ships on that runtime: the weights as torch runs them
(``torch.save`` of the state dict), the ONNX file, the OpenVINO IR (``.xml`` + ``.bin``).
Accuracy: test (validation) of the model as built; ONNX Runtime computes torch's values within
float tolerance (dynamic int8 both), OpenVINO's int8 linears are static int8 (NNCF), so those rows
are scored in OpenVINO (as ``--runtime openvino`` searches score them); the one-line ORT model's
accuracy is its own, computed in ONNX Runtime; a search's row carries the figures the search
reported for it.

    python benchmarks/runtimes.py --rounds 3 --out runs/runtimes [--search runs/ov-search ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from planner import ort_one_line, split_accuracies, time_in_child, torch_one_line  # noqa: E402


def build(ctx, out: Path) -> dict:
    """Our models, saved; their accuracy and per-runtime artefact size."""
    import openvino  # noqa: F401  (the OpenVINO rows need it)

    from autocompress.apply import compress
    from autocompress.compressed import load
    from autocompress.evaluate import candidate_metrics, task_metrics
    from autocompress.export_openvino import write_ir
    from autocompress.latency import Target
    from autocompress.latency.runtime_openvino import scored_ir
    from autocompress.latency.onnx import build_onnx
    from autocompress.plan import CompressionPlan
    from autocompress.errors import UserError
    from autocompress.latency.runtime import runtime_class
    from autocompress.techniques import Embeddings, Precision, Vocabulary

    int8 = CompressionPlan.load(REPO / "examples" / "plans" / "minilm-int8-all.yaml")
    plans = {"teacher (fp32)": CompressionPlan.keep_all("teacher"),
             "int8 linears": int8,
             "int8 linears + int8 embeddings": replace(int8, name="int8-emb").with_techniques(Embeddings("int8")),
             "fp32 linears + int8 embeddings": CompressionPlan(name="emb").with_techniques(Embeddings("int8")),
             "int8 linears + int8 trimmed embeddings": replace(int8, name="int8-emb-trim").with_techniques(
                 Embeddings("int8"), Vocabulary("train"))}
    if runtime_class("torch").bf16:  # a CPU with bf16 kernels: the teacher in bf16, and int8 linears inside it
        plans["teacher in bf16"] = CompressionPlan(name="bf16").with_techniques(Precision("bf16"))
        plans["int8 linears in bf16"] = replace(int8, name="int8-bf16").with_techniques(Precision("bf16"))
    models = {}
    for name, plan in plans.items():
        folder = out / "models" / plan.name
        cm = compress(plan, ctx, progress=False)
        cm.save_pretrained(folder)
        sizes = {"torch": cm.size_bytes()}
        try:
            onnx = build_onnx(cm.fp32_model(), out / "files" / f"{plan.name}.onnx", resolved=cm.resolved, plan=plan)
            sizes["onnxruntime"] = onnx.stat().st_size
        except UserError as exc:  # bf16: ONNX Runtime has no CPU kernels for it
            print(f"{name}: no ONNX Runtime row ({exc})", flush=True)
        by_runtime = {"torch": task_metrics(cm.model, ctx)}
        ov = candidate_metrics(cm, ctx, Target(runtime="openvino"), folder=folder)  # int8: the calibrated IR
        if ov["score_source"] == "openvino":
            by_runtime["openvino"] = ov
        loaded = load(folder)  # the IR the timing process will compile
        ir_folder = out / "files" / plan.name
        ir_folder.mkdir(parents=True, exist_ok=True)
        ir = scored_ir(loaded) or write_ir(loaded, ir_folder)
        sizes["openvino"] = ir.stat().st_size + ir.with_suffix(".bin").stat().st_size
        models[name] = {"folder": str(folder), "metrics": by_runtime["torch"], "by_runtime": by_runtime,
                        "bytes": sizes}
        print(f"built {name}: {models[name]['metrics']}, {sizes}", flush=True)
    return models


def openvino_default_metrics(ctx, ir: Path) -> dict:
    """Accuracy of the teacher's IR compiled by plain OpenVINO, with no precision hint."""
    import openvino as ov

    request = ov.Core().compile_model(str(ir), "CPU", {"INFERENCE_NUM_THREADS": 2}).create_infer_request()
    return split_accuracies(ctx, lambda ids, mask: next(iter(request.infer(
        {"input_ids": ids, "attention_mask": mask}).values())))


def torch_one_line_bytes(ctx) -> int:
    """``torch.save`` size of the one-line torch int8 teacher's state dict (what it ships)."""
    import copy
    import io

    import torch

    model = torch.ao.quantization.quantize_dynamic(copy.deepcopy(ctx.teacher_model()), {torch.nn.Linear},
                                                   dtype=torch.qint8)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="runs/runtimes")
    parser.add_argument("--search", action="append", default=[], metavar="RUN_DIR",
                        help="a search's folder: its recommended model joins the rounds on its target runtime")
    args = parser.parse_args()
    from autocompress.context import TaskContext
    from autocompress.latency import Target
    from autocompress.latency.isolated import measure_saved
    from autocompress.latency.runtime import runtime_class

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = TaskContext.default()
    models = build(ctx, out)
    peer_torch = torch_one_line(ctx)
    peer_ort, peer_file = ort_one_line(ctx, out / "files")
    rows = {}  # (model, runtime) -> {"p50": [...], "p90": [...], "bytes", "metrics"}
    for name, m in models.items():
        for runtime, size in m["bytes"].items():
            rows[name, runtime] = {"p50": [], "p90": [], "bytes": size, "folder": m["folder"],
                                   "metrics": m["by_runtime"].get(runtime, m["metrics"])}
    for run in map(Path, args.search):
        rec = json.loads((run / "recommended.json").read_text())
        c, runtime = rec["candidate"], rec["target"]["runtime"]
        rows[f"search {run.name}: recommended #{c['number']}", runtime] = {
            "p50": [], "p90": [], "bytes": c["size_mb"] * 1e6, "folder": c["model_dir"],
            "metrics": {"accuracy": c["test_accuracy"], "validation_accuracy": c["accuracy"]}}
    rows["one-line torch int8", "torch"] = {"p50": [], "p90": [], "bytes": torch_one_line_bytes(ctx),
                                            "metrics": peer_torch}
    if runtime_class("openvino").bf16:  # plain OpenVINO on this CPU: its default runs fp32 layers in bf16
        rows["one-line OpenVINO default (bf16 here)", "openvino"] = {
            "p50": [], "p90": [], "bytes": models["teacher (fp32)"]["bytes"]["openvino"],
            "metrics": openvino_default_metrics(ctx, out / "files" / "teacher" / "model.xml"),
            "ir": out / "files" / "teacher" / "model.xml"}
    rows["one-line ORT int8", "onnxruntime"] = {"p50": [], "p90": [], "bytes": peer_file.stat().st_size,
                                                "metrics": {"accuracy": peer_ort["accuracy"],
                                                            "validation_accuracy": peer_ort["validation_accuracy"]}}
    for r in range(args.rounds):
        for (name, runtime), row in rows.items():
            target = Target(runtime=runtime)
            if name == "one-line torch int8":
                stats = time_in_child("torch", str(ctx.teacher.path), target)
            elif name == "one-line ORT int8":
                stats = time_in_child("onnxruntime", str(peer_file), target)
            elif "ir" in row:
                stats = time_in_child("openvino-default", str(row["ir"]), target)
            else:
                stats = measure_saved(row["folder"], target, runs=50).to_dict()
            row["p50"].append(stats["p50"])
            row["p90"].append(stats["p90"])
        print(f"round {r + 1} of {args.rounds} done", flush=True)
    table = []
    for (name, runtime), row in sorted(rows.items(), key=lambda kv: (kv[0][1], -statistics.median(kv[1]["p50"]))):
        p50 = statistics.median(row["p50"])
        table.append({"model": name, "runtime": runtime, "p50_ms": round(p50, 2),
                      "p90_ms": round(statistics.median(row["p90"]), 2),
                      "p50_spread": round((max(row["p50"]) - min(row["p50"])) / p50, 3), "rounds": row["p50"],
                      "mb": None if row["bytes"] is None else round(row["bytes"] / 1e6, 1),
                      "test": row["metrics"].get("accuracy"), "validation": row["metrics"].get("validation_accuracy")})
    (out / "runtimes.json").write_text(json.dumps(table, indent=2))
    print("\n| runtime | model | p50 ms | p90 ms | p50 spread over rounds | MB shipped | test / validation |")
    print("|---|---|---|---|---|---|---|")
    for t in table:
        size = "–" if t["mb"] is None else f"{t['mb']:.1f}"
        print(f"| {t['runtime']} | {t['model']} | {t['p50_ms']:.2f} | {t['p90_ms']:.2f} | {t['p50_spread']:.0%} | "
              f"{size} | {t['test']:.4f} / {t['validation']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
