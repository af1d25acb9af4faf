"""Latency of minilm-l6 on torch and ONNX Runtime (batch 1, seq 128, 2 threads), and the predictor.

Prints, per runtime: p50/p90 of keep-all, int8 (all linears), half the heads, half the FFN and half
the layers (two passes seconds apart, the faster kept, as the predictor's calibration measures),
with speed-ups over keep-all and the predictor's estimate; then the calibration time and the
``latency check`` figures (MAPE, share within ±10%, worst; also against the first pass alone and
the machine's drift since calibration) over random plans. Plans are built structurally (first
heads/neurons kept, no training): latency does not depend on the weights. Run it on a quiet
machine (it takes the measurement slot for every measurement and flags results taken while other
processes computed). About 3 minutes with cached tables, plus about 2 + 2.5 minutes to calibrate:

    flock /tmp/autocompress-bench.lock python benchmarks/latency.py [--plans 30] [--seed 7] [--force] \
        [--runtimes torch,onnxruntime] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from autocompress import assets
from autocompress.latency import Target
from autocompress.latency.commands import summary_lines
from autocompress.latency.predictor import (_resolve, best, check, get_predictor, measure_plans, model_dims,
                                            reference_plans)
from autocompress.models import load_model

LABELS = {"keep-all": "keep all", "int8": "int8 (all linears)", "half-heads": "half the heads",
          "half-ffn": "half the FFN", "half-layers": "half the layers"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtimes", default="torch,onnxruntime")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--plans", type=int, default=30, help="random plans for the check (0: skip)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the check's random plans (default 7)")
    parser.add_argument("--force", action="store_true", help="re-calibrate even if a table is cached")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    model = load_model(assets.fetch("minilm-l6"), num_labels=2)
    dims = model_dims(model)
    results = {}
    for runtime in args.runtimes.split(","):
        target = Target(runtime=runtime, threads=args.threads, batch_size=1, seq_len=128)
        start = time.perf_counter()
        predictor = get_predictor(model, target, rebuild=args.force, progress=True)
        calibrate_s = predictor.table.get("build_seconds") if predictor.from_cache else time.perf_counter() - start
        rows = []
        plans = reference_plans(dims)
        resolved = [_resolve(plan, dims) for plan in plans]
        for plan, res, got in zip(plans, resolved, measure_plans(model, resolved, target, runs=50, lag=2)):
            stats = best(got)
            rows.append({"plan": plan.name, "p50": stats.p50, "p90": stats.p90, "spread": stats.spread,
                         "contended": any(s.contended for s in got), "predicted": predictor.predict(res)})
        base = rows[0]["p50"]
        for r in rows:
            r["speedup"] = base / r["p50"]
        result = {"target": target.to_dict(), "plans": rows, "calibrate_seconds": calibrate_s,
                  "calibrated_now": not predictor.from_cache}
        if args.plans:
            c = check(predictor, model, target, plans=args.plans, seed=args.seed, progress=True)
            result["check"] = {k: c[k] for k in ("plans", "mape", "within_10pct", "worst", "worst_plan", "contended",
                                                 "single_pass", "unanchored", "anchor")}
            result["check"]["seed"] = args.seed
        results[runtime] = result
        _print(runtime, result)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)
    return 0


def _print(runtime: str, result: dict) -> None:
    t = result["target"]
    print(f"\n== {runtime}: minilm-l6, batch {t['batch_size']}, seq {t['seq_len']}, {t['threads']} threads")
    print(f"{'plan':<20} {'p50 ms':>8} {'p90 ms':>8} {'speed-up':>9} {'predicted':>10}")
    for r in result["plans"]:
        flag = "  (contended)" if r["contended"] else ""
        print(f"{LABELS[r['plan']]:<20} {r['p50']:>8.2f} {r['p90']:>8.2f} {r['speedup']:>8.2f}x "
              f"{r['predicted']:>8.2f}ms{flag}")
    how = "now" if result["calibrated_now"] else "cached table"
    print(f"calibrate: {result['calibrate_seconds']:.0f} s ({how})")
    if "check" in result:
        c = result["check"]
        contended = f", {c['contended']} contended" if c["contended"] else ""
        print(f"check ({c['plans']} random plans, seed {c['seed']}{contended}):")
        print("\n".join("  " + line for line in summary_lines(c)))
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
