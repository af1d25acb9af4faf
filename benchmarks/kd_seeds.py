"""How much of a plan's accuracy is its recovery's draw? Rebuild plans under other KD seeds.

Recovery (KD) is seeded: the same plan and seed give the same model, so a single build says
nothing about how far another seed would land. This script rebuilds named plans — hand plans of
``benchmarks/planner.py`` and members of its searches' fronts — with other seeds (the seed moves
the order of the training batches and dropout), scores each on validation and test, and prints
each plan's figure per seed, the mean and the spread, beside the figure recorded when it was first
built. Resumes from ``OUT/kd_seeds.json`` (one entry per plan and seed, written after each build).

    python benchmarks/kd_seeds.py --out runs/planner26 --seeds 1,2,3 \
        --plans "hand: drop top 2" torch-allocated-s0:3 torch-allocated-s0:5
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


def plan_of(out: Path, name: str, n_layers: int) -> tuple[dict, dict]:
    """(plan dict, recorded figures) of a hand plan's name or of ``<search>:<trial number>``."""
    if ":" in name and not name.startswith("hand:"):
        search, number = name.rsplit(":", 1)
        pareto = json.loads((out / "searches" / search / "pareto.json").read_text())
        member = next((m for m in pareto["members"] if m["number"] == int(number)), None)
        if member is None:
            raise SystemExit(f"kd_seeds: trial {number} is not on the front of {search}")
        return member["plan"], {"validation_accuracy": member["accuracy"], "accuracy": member["test_accuracy"]}
    plans = hand_plans(n_layers)
    if name not in plans:
        raise SystemExit(f"kd_seeds: no hand plan {name!r} (have: {', '.join(plans)})")
    refs = out / "references.json"
    recorded = json.loads(refs.read_text()).get(name, {}) if refs.is_file() else {}
    return plans[name], {k: recorded.get(k) for k in ("validation_accuracy", "accuracy")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="a benchmarks/planner.py folder")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--plans", nargs="+", required=True,
                        help='hand plan names ("hand: drop top 2") or <search>:<trial number>')
    args = parser.parse_args()

    from autocompress.apply import compress
    from autocompress.context import TaskContext
    from autocompress.evaluate import task_metrics
    from autocompress.plan import CompressionPlan
    from autocompress.progress import progress_bar

    ctx = TaskContext.default(progress=True)
    # the structure a plan keeps (which heads and neurons) comes from importance on the calibration
    # batches of seed 0, as in the search: only the recovery's seed changes below (the context's
    # cache is shared by every seed's copy of it)
    ctx.calibration_batches(), ctx.importance()
    path = args.out / "kd_seeds.json"
    done = json.loads(path.read_text()) if path.is_file() else {}
    seeds = [int(s) for s in args.seeds.split(",")]
    plans = {name: plan_of(args.out, name, ctx.dims()["num_layers"]) for name in args.plans}
    todo = [(n, s) for n in plans for s in seeds if str(s) not in done.get(n, {}).get("seeds", {})]
    with progress_bar(total=len(todo), desc="builds", unit="build") as bar:
        for name, seed in todo:
            data, recorded = plans[name]
            plan = CompressionPlan.from_dict(data, source=name)
            cm = compress(plan, dataclasses.replace(ctx, seed=seed), progress=False)
            metrics = task_metrics(cm.model, ctx)
            entry = done.setdefault(name, {"recorded": recorded, "kd_steps": plan.distill.steps, "seeds": {}})
            entry["seeds"][str(seed)] = {"validation_accuracy": round(metrics["validation_accuracy"], 4),
                                         "accuracy": round(metrics["accuracy"], 4)}
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(done, indent=2))
            os.replace(tmp, path)
            bar.update(1)

    print(f"{'plan':34} {'KD steps':>8}  {'recorded (seed 0)':>17}  per seed (val / test)")
    for name in plans:
        entry = done[name]
        rec = entry["recorded"]
        runs = [entry["seeds"][str(s)] for s in seeds if str(s) in entry["seeds"]]
        per = "  ".join(f"s{s} {r['validation_accuracy']:.4f}/{r['accuracy']:.4f}" for s, r in zip(seeds, runs))
        print(f"{name:34} {entry['kd_steps']:>8}  {rec['validation_accuracy']:.4f}/{rec['accuracy']:.4f}  {per}")
        for split, key in (("validation", "validation_accuracy"), ("test", "accuracy")):
            values = [rec[key]] + [r[key] for r in runs]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            print(f"{'':34} {split:>8}: mean {statistics.mean(values):.4f} of {len(values)} seeds (seed 0 included),"
                  f" range {min(values):.4f}-{max(values):.4f}, sd {sd * 100:.2f} points")


if __name__ == "__main__":
    main()
