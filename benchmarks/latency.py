"""Latency of minilm-l6 on torch and ONNX Runtime (batch 1, seq 128, 2 threads), and the predictor.

Prints, per runtime: p50/p90 of keep-all, int8 (all linears), half the heads, half the FFN and half
the layers, with speed-ups over keep-all and the predictor's estimate; then the calibration time
and the ``latency check`` figures (MAPE, share within ±10%, worst) over random plans.
Plans are built structurally (first heads/neurons kept, no training): latency does not depend on
the weights. Run it on a quiet machine (it takes the measurement slot for every measurement and
flags results taken while other processes computed):

    flock /tmp/autocompress-bench.lock python benchmarks/latency.py [--plans 30] [--force] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from autocompress import assets
from autocompress.latency import Target
from autocompress.latency.predictor import _resolve, check, get_predictor, measure_plan, model_dims, reference_plans
from autocompress.models import load_classifier

LABELS = {"keep-all": "keep all", "int8": "int8 (all linears)", "half-heads": "half the heads",
          "half-ffn": "half the FFN", "half-layers": "half the layers"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtimes", default="torch,onnxruntime")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--plans", type=int, default=30, help="random plans for the check (0: skip)")
    parser.add_argument("--force", action="store_true", help="re-calibrate even if a table is cached")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    model = load_classifier(assets.fetch("minilm-l6"), num_labels=2)
    dims = model_dims(model)
    results = {}
    for runtime in args.runtimes.split(","):
        target = Target(runtime=runtime, threads=args.threads, batch_size=1, seq_len=128)
        start = time.perf_counter()
        predictor = get_predictor(model, target, rebuild=args.force, progress=True)
        calibrate_s = predictor.table.get("build_seconds") if predictor.from_cache else time.perf_counter() - start
        rows = []
        for plan in reference_plans(dims):
            resolved = _resolve(plan, dims)
            stats = measure_plan(model, resolved, target, runs=50)
            rows.append({"plan": plan.name, "p50": stats.p50, "p90": stats.p90, "spread": stats.spread,
                         "contended": stats.contended, "predicted": predictor.predict(resolved)})
        base = rows[0]["p50"]
        for r in rows:
            r["speedup"] = base / r["p50"]
        result = {"target": target.to_dict(), "plans": rows, "calibrate_seconds": calibrate_s,
                  "calibrated_now": not predictor.from_cache}
        if args.plans:
            c = check(predictor, model, target, plans=args.plans, progress=True)
            result["check"] = {k: c[k] for k in ("plans", "mape", "within_10pct", "worst", "contended")}
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
        print(f"check ({c['plans']} random plans): MAPE {c['mape']:.2%}, within ±10% {c['within_10pct']:.0%}, "
              f"worst {c['worst']:+.1%}" + (f", {c['contended']} contended" if c["contended"] else ""))
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
