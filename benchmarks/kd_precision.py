"""Does recovery in bf16 pay? KD step seconds and accuracy, fp32 against bf16, side by side.

Recovery (KD) is most of every full candidate's time (a base-size candidate: 300 steps at 2-3 s).
``distill.precision: bf16`` runs the student's forward passes under CPU autocast, which pays on
CPUs with bf16 matrix units. This script builds each named hand plan of ``benchmarks/planner.py``
with fp32 and with bf16 recovery, alternately, per seed, and prints the seconds per KD step and
the validation / test accuracy of each (means over the seeds, spread). ``--model`` runs another
teacher (``--no-finetune``: a model used as already fine-tuned, e.g. the random BERT-base of
``benchmarks/base_size.py``, where only the timings mean anything); ``--steps`` overrides the
plans' KD steps. Resumes from ``OUT/kd_precision.json``.

    python benchmarks/kd_precision.py --out runs/kd-precision --plans "hand: FFN x0.5" "hand: drop top 2" --seeds 0,1
    python benchmarks/kd_precision.py --out runs/kd-precision-base --model runs/base-size28/bert-base-random \\
        --no-finetune --plans "hand: FFN x0.5" --seeds 0 --steps 20
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from planner import hand_plans  # noqa: E402

PRECISIONS = ("fp32", "bf16")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--plans", nargs="+", default=["hand: FFN x0.5"])
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--steps", type=int, default=None, help="KD steps instead of the plans' own")
    parser.add_argument("--model", default=None)
    parser.add_argument("--no-finetune", action="store_true")
    args = parser.parse_args()

    from autocompress.apply import compress
    from autocompress.context import TaskContext
    from autocompress.evaluate import task_metrics
    from autocompress.latency.runtime import runtime_class
    from autocompress.plan import CompressionPlan
    from autocompress.progress import progress_bar

    if not runtime_class("torch").bf16:
        print("kd_precision: this CPU has no bf16 kernels (torch): bf16 recovery would be emulated", file=sys.stderr)
    options = {"model": args.model, "no_finetune": True} if args.model and args.no_finetune else (
        {"model": args.model} if args.model else {})
    ctx = TaskContext.default(progress=True, **options)
    # the structure a plan keeps (which heads and neurons) comes from importance on the calibration
    # batches of seed 0, as in the search: only the recovery's seed changes below (the context's
    # cache is shared by every seed's copy of it)
    ctx.calibration_batches(), ctx.importance()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "kd_precision.json"
    done = json.loads(path.read_text()) if path.is_file() else {}
    hand = hand_plans(ctx.dims()["num_layers"])
    for name in args.plans:
        if name not in hand:
            raise SystemExit(f"kd_precision: no hand plan {name!r} (have: {', '.join(hand)})")
    seeds = [int(s) for s in args.seeds.split(",")]
    todo = [(n, s, p) for n in args.plans for s in seeds for p in PRECISIONS
            if f"{s}/{p}" not in done.get(n, {})]
    with progress_bar(total=len(todo), desc="builds", unit="build") as bar:
        for name, seed, precision in todo:
            plan = CompressionPlan.from_dict(hand[name], source=name)
            distill = dataclasses.replace(plan.distill, precision=precision,
                                          **({"steps": args.steps} if args.steps else {}))
            cm = compress(dataclasses.replace(plan, distill=distill), dataclasses.replace(ctx, seed=seed),
                          progress=False)
            recovery = cm.info["recovery"]
            metrics = task_metrics(cm.model, ctx)
            done.setdefault(name, {})[f"{seed}/{precision}"] = {
                "steps": recovery["steps"], "seconds": recovery["seconds"],
                "step_s": round(recovery["seconds"] / max(1, recovery["steps"]), 4),
                "validation_accuracy": round(metrics["validation_accuracy"], 4), "accuracy": round(metrics["accuracy"], 4)}
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(done, indent=2))
            os.replace(tmp, path)
            bar.update(1)

    print(f"{'plan':24} {'recovery':>8} {'s/step':>14} {'validation':>16} {'test':>16}  per seed (val / test, s/step)")
    for name in args.plans:
        for precision in PRECISIONS:
            runs = [done[name][f"{s}/{precision}"] for s in seeds if f"{s}/{precision}" in done[name]]
            if not runs:
                continue

            def stat(key, runs=runs):
                values = [r[key] for r in runs]
                sd = statistics.stdev(values) if len(values) > 1 else 0.0
                return f"{statistics.mean(values):.4f} ±{sd:.4f}"

            per = "  ".join(f"s{s} {r['validation_accuracy']:.4f}/{r['accuracy']:.4f} {r['step_s']:.3f}"
                            for s, r in zip(seeds, runs))
            print(f"{name:24} {precision:>8} {stat('step_s'):>14} {stat('validation_accuracy'):>16} "
                  f"{stat('accuracy'):>16}  {per}")
        pairs = [(done[name][f"{s}/fp32"]["step_s"], done[name][f"{s}/bf16"]["step_s"]) for s in seeds
                 if f"{s}/fp32" in done[name] and f"{s}/bf16" in done[name]]
        if pairs:
            print(f"{'':24} bf16 step time / fp32, per seed (built one after the other): "
                  + ", ".join(f"{b / a:.2f}" for a, b in pairs))


if __name__ == "__main__":
    main()
