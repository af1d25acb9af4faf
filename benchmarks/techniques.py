"""One row per technique at 2–3 settings on the default task (minilm-l6, rotten-tomatoes).

Prints: params, latency p50 (torch, batch 1, seq 128, all cores), test accuracy before and after
KD recovery, and the recovery time. Latency is measured after all training is done, with nothing
else computing, so training never overlaps a measurement.

    python benchmarks/techniques.py [--steps 300] [--only heads,ffn] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

import torch

from autocompress.apply import compress
from autocompress.context import TaskContext
from autocompress.evaluate import task_metrics
from autocompress.latency import Target, measure
from autocompress.plan import CompressionPlan, DistillConfig, LayerPlan

ALL = {"q": "int8", "k": "int8", "v": "int8", "attn_out": "int8", "ffn_in": "int8", "ffn_out": "int8"}


def settings(steps: int) -> list[tuple[str, str, CompressionPlan]]:
    def plan(name, kd=True, **kw):
        return CompressionPlan(name=name, distill=DistillConfig(steps=steps if kd else 0, lr=1e-4), **kw)

    every = lambda p: LayerPlan(**p)  # noqa: E731
    return [
        ("none", "keep all", plan("keep-all", kd=False)),
        ("int8", "all linears", plan("int8", kd=False, defaults=every({"dtype": ALL}))),
        ("int8", "attention only", plan("int8-attn", kd=False, defaults=every(
            {"dtype": {"q": "int8", "k": "int8", "v": "int8", "attn_out": "int8"}}))),
        ("heads", "8/12 per layer", plan("heads-8", defaults=every({"heads": 8}))),
        ("heads", "6/12 per layer", plan("heads-6", defaults=every({"heads": 6}))),
        ("heads", "3/12 per layer", plan("heads-3", defaults=every({"heads": 3}))),
        ("ffn", "50% neurons", plan("ffn-50", defaults=every({"ffn": 0.5}))),
        ("ffn", "25% neurons", plan("ffn-25", defaults=every({"ffn": 0.25}))),
        ("layers", "keep 4 of 6 (drop 3,5)", plan("layers-4", layers={3: LayerPlan(keep=False), 5: LayerPlan(keep=False)})),
        ("layers", "every other (keep 0,2,4)", plan("layers-3", layers={i: LayerPlan(keep=False) for i in (1, 3, 5)})),
        ("low-rank", "rank 192, all linears", plan("rank-192", defaults=every({"rank": 192}))),
        ("low-rank", "rank 64, all linears", plan("rank-64", defaults=every({"rank": 64}))),
        ("sparsity", "50% unstructured", plan("sparse-50", defaults=every({"sparsity": 0.5}))),
        ("sparsity", "90% unstructured", plan("sparse-90", defaults=every({"sparsity": 0.9}))),
        ("combined", "heads 6 + ffn 50% + int8", plan("combo", defaults=every({"heads": 6, "ffn": 0.5, "dtype": ALL}))),
        ("combined", "3 layers + ffn 50% + int8", plan("combo-deep", defaults=every({"ffn": 0.5, "dtype": ALL}),
                                                       layers={i: LayerPlan(keep=False) for i in (1, 3, 5)})),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="KD recovery steps (batch 32)")
    parser.add_argument("--only", default="", help="comma-separated techniques to run")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    parser.add_argument("--latency-only", action="store_true",
                        help="build each plan without recovery and only time it (KD does not change the shapes)")
    args = parser.parse_args()
    ctx = TaskContext.default()
    target = Target()
    only = set(filter(None, args.only.split(",")))
    rows, models = [], []
    for technique, setting, plan in settings(args.steps):
        if only and technique not in only:
            continue
        no_kd = dataclasses.replace(plan, distill=DistillConfig())
        if args.latency_only:
            cm = compress(no_kd, ctx, progress=False)
            models.append(cm.model)
            rows.append({"technique": technique, "setting": setting, "params_m": round(cm.params / 1e6, 2),
                         "acc_before": float("nan"), "acc_after": float("nan"), "fidelity": float("nan"),
                         "recovery_s": 0.0, "build_s": 0.0})
            continue
        before = task_metrics(compress(no_kd, ctx, progress=False).model, ctx, splits=("test",))
        start = time.perf_counter()
        cm = compress(plan, ctx, progress=False)
        after = task_metrics(cm.model, ctx, splits=("test",)) if plan.distill.steps else before
        rows.append({"technique": technique, "setting": setting, "params_m": round(cm.params / 1e6, 2),
                     "acc_before": before["accuracy"], "acc_after": after["accuracy"],
                     "fidelity": after["fidelity"], "recovery_s": cm.info["recovery"]["seconds"],
                     "build_s": round(time.perf_counter() - start, 1)})
        models.append(cm.model)
        print(f"built {plan.name}", file=sys.stderr)
    for row, model in zip(rows, models):  # measure only once all training is over
        stats = measure(model, target, runs=50)
        row["p50_ms"], row["p90_ms"] = round(stats.p50, 2), round(stats.p90, 2)
        row["contended"] = bool(getattr(stats, "contended", False))
    ref = rows[0]["p50_ms"] if rows and rows[0]["technique"] == "none" else None
    header = (f"{'technique':<10} {'setting':<28} {'params':>7} {'p50 ms':>7} {'p90 ms':>7} {'speed-up':>8} "
              f"{'acc before':>10} {'acc after KD':>12} {'KD s':>6}")
    print(f"minilm-l6 / rotten-tomatoes test split; {target.describe()}; KD {args.steps} steps × 32")
    print(header)
    for r in rows:
        speed = f"{ref / r['p50_ms']:.2f}x" if ref else "-"
        print(f"{r['technique']:<10} {r['setting']:<28} {r['params_m']:>6.2f}M {r['p50_ms']:>7.2f} {r['p90_ms']:>7.2f} "
              f"{speed:>8} {r['acc_before']:>10.4f} {r['acc_after']:>12.4f} {r['recovery_s']:>6.0f}"
              + ("  CONTENDED" if r["contended"] else ""))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 0


if __name__ == "__main__":
    torch.manual_seed(0)
    sys.exit(main())
