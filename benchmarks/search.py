"""Search quality at equal wall time on the default task (minilm-l6, rotten-tomatoes, torch b1 L128).

Runs joint/TPE, joint/random and quant_only/TPE for the same time limit each (one after the other,
nothing else running), then prints: hypervolume with one shared reference point and the ratios
joint-TPE/random and joint-TPE/quant_only; the best validation accuracy under 20, 13 and 8 ms;
trials, fully evaluated trials, seconds per trial and orchestration overhead per trial; and where
the decision-tree baseline lands (it is the second warm-start trial of every joint run).

    python benchmarks/search.py --time-limit 15m [--budget 13ms] [--out runs/bench] [--sampler-seed 1]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

RUNS = (("joint", "tpe"), ("joint", "random"), ("quant_only", "tpe"))
BUDGETS_MS = (20.0, 13.0, 8.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-limit", default="15m")
    parser.add_argument("--budget", default="13ms")
    parser.add_argument("--out", default="runs/bench")
    parser.add_argument("--only", default="", help="comma-separated space/sampler pairs to run, e.g. joint/tpe")
    parser.add_argument("--sampler-seed", type=int, default=0,
                        help="seed of every run's sampler (repeat the comparison with others; the teacher stays)")
    args = parser.parse_args()
    out = Path(args.out)
    dirs = []
    for space, sampler in RUNS:
        name = f"{space}-{sampler}"
        if args.only and f"{space}/{sampler}" not in args.only.split(","):
            dirs.append(out / name)
            continue
        cmd = [sys.executable, "-m", "autocompress.cli", "search", "--space", space, "--sampler", sampler,
               "--budget", args.budget, "--time-limit", args.time_limit, "--trials", "1000",
               "--out", str(out / name), "--study-name", name, "--sampler-seed", str(args.sampler_seed)]
        print("running:", " ".join(cmd[2:]), file=sys.stderr)
        subprocess.run(cmd, check=True)
        dirs.append(out / name)

    from autocompress.compare import compare

    result = compare([d for d in dirs if (d / "pareto.json").is_file()], budgets_ms=list(BUDGETS_MS))
    hv = {r["label"]: r["hypervolume"] for r in result["rows"]}
    print(f"\nreference point: accuracy {result['reference'][0]:.4f}, {result['reference'][1]:.2f} ms")
    print(f"{'run':<18} {'trials':>6} {'full':>5} {'s/trial':>8} {'overhead s':>10} {'HV':>8} "
          + " ".join(f"{'best@' + f'{b:g}ms':>11}" for b in BUDGETS_MS))
    baseline = None
    for row, d in zip(result["rows"], dirs):
        with open(d / "trials.csv") as fh:
            trials = list(csv.DictReader(fh))
        secs = [float(t["seconds"]) for t in trials if t["seconds"]]
        over = [float(t["overhead_seconds"]) for t in trials if t["overhead_seconds"]]
        base = [t for t in trials if t["warm_start"] == "baseline" and t["state"] == "COMPLETE"]
        if base and baseline is None:
            baseline = base[0]
        best = " ".join(f"{v:>11.4f}" if v is not None else f"{'-':>11}" for v in row["best_under"].values())
        wall = row["wall_seconds"] or 0.0
        print(f"{row['label']:<18} {row['trials']:>6} {row['full_points']:>5} {wall / max(1, row['trials']):>8.1f} "
              f"{statistics.median(over) if over else float('nan'):>10.3f} {row['hypervolume']:>8.4f} {best}"
              f"   (median trial {statistics.median(secs) if secs else float('nan'):.1f} s)")
    # The baseline warm start is the same fixed plan in every run, and in quant_only it lies outside
    # the space: the hypervolumes without it show what each search found on its own.
    from autocompress.pareto import hypervolume

    hv_own = {run["label"]: hypervolume([(p["accuracy"], p["latency_ms"]) for p in run["points"]
                                         if p["warm_start"] != "baseline"], result["reference"])
              for run in result["runs"]}
    if "joint/tpe" in hv:
        for other in ("joint/random", "quant_only/tpe"):
            if other in hv and hv[other] > 0:
                print(f"HV joint/tpe ÷ {other}: {hv['joint/tpe'] / hv[other]:.2f}x with the baseline point in both; "
                      f"{hv_own['joint/tpe'] / hv_own[other]:.2f}x without it "
                      f"({hv_own['joint/tpe']:.4f} vs {hv_own[other]:.4f})" if hv_own[other] > 0 else "")
    if baseline:
        front = result["rows"][0]["front"]
        dominated = any(p["accuracy"] >= float(baseline["accuracy"]) and p["latency_ms"] <= float(baseline["latency_ms"])
                        and (p["accuracy"] > float(baseline["accuracy"]) or p["latency_ms"] < float(baseline["latency_ms"]))
                        for p in front)
        print(f"baseline (decision tree): accuracy {float(baseline['accuracy']):.4f}, p50 {float(baseline['latency_ms']):.2f} ms; "
              f"dominated by the joint/tpe front: {dominated}")
    print(json.dumps({"hypervolume": hv, "hypervolume_without_baseline_point": hv_own}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
