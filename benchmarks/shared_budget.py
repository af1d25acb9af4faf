"""One budget, every runtime: the one-line ONNX Runtime int8 of the teacher (latency and file
size) as the budget of a search on torch, ONNX Runtime and OpenVINO (default task: minilm-l6 on
rotten-tomatoes; batch 1, sequence 128, all cores).

1. The peer: ONNX Runtime's ``quantize_dynamic`` of the exported teacher (what ``optimum-cli
   onnxruntime quantize --avx2`` does), timed now in a fresh process, ``--peer-rounds`` times; the
   median p50 in ms and the file's size become ``--budget <ms>ms --size-budget <MB>MB``.
2. ``autocompress search --runtime R`` under that one budget for each runtime, one after another,
   each with the same ``--time-limit`` (which covers the whole command, calibration included
   when the runtime's latency table is not cached); the command's wall time is recorded.
3. ``benchmarks/runtimes.py --search ...``: the teacher, the one-line peers and autocompress's
   quantize-only models of every runtime timed again beside the three picks, interleaved rounds,
   each model in a fresh process (the figures that compare).

A finished search is not run again (delete its folder to redo it).

    python benchmarks/shared_budget.py --out runs/shared [--time-limit 15m] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from planner import ort_one_line, time_in_child  # noqa: E402

RUNTIMES = ("torch", "onnxruntime", "openvino")


def peer_budget(out: Path, rounds: int) -> dict:
    """The one-line ORT int8's median p50 (ms, fresh processes) and file size (MB), saved."""
    path = out / "budget.json"
    if path.is_file():
        return json.loads(path.read_text())
    from autocompress.context import TaskContext
    from autocompress.latency import Target

    metrics, model = ort_one_line(TaskContext.default(), out / "files")
    p50 = [time_in_child("onnxruntime", str(model), Target(runtime="onnxruntime"))["p50"] for _ in range(rounds)]
    # floor to 0.01: the budget must not exceed what the peer measured / weighs
    budget = {"peer": "one-line ORT int8", "p50_rounds": p50, "budget_ms": int(statistics.median(p50) * 100) / 100,
              "size_mb": int(model.stat().st_size / 1e4) / 100, "peer_metrics": metrics,
              "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    path.write_text(json.dumps(budget, indent=2))
    return budget


def search(out: Path, runtime: str, budget: dict, time_limit: str, seed: int) -> Path:
    folder = out / "searches" / runtime
    if (folder / "command_seconds.txt").is_file():
        return folder
    cmd = [sys.executable, "-m", "autocompress.cli", "search", "--runtime", runtime, "--sampler-seed", str(seed),
           "--budget", f"{budget['budget_ms']}ms", "--size-budget", f"{budget['size_mb']}MB",
           "--time-limit", time_limit, "--out", str(folder), "--study-name", f"shared-{runtime}"]
    print("running:", " ".join(cmd[3:]), file=sys.stderr, flush=True)
    start = time.time()
    subprocess.run(cmd, check=True)
    (folder / "command_seconds.txt").write_text(f"{time.time() - start:.1f}\n")
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="runs/shared")
    parser.add_argument("--runtimes", default=",".join(RUNTIMES))
    parser.add_argument("--time-limit", default="15m")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--peer-rounds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="side-by-side rounds after the searches")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    budget = peer_budget(out, args.peer_rounds)
    print(f"budget: p50 <= {budget['budget_ms']} ms, size <= {budget['size_mb']} MB "
          f"(one-line ORT int8: p50 {budget['p50_rounds']} ms)", flush=True)
    folders = [search(out, rt, budget, args.time_limit, args.seed) for rt in args.runtimes.split(",")]
    if args.rounds:
        table = out / "table"
        if not (table / "runtimes.json").is_file():
            subprocess.run([sys.executable, str(REPO / "benchmarks" / "runtimes.py"), "--rounds", str(args.rounds),
                            "--out", str(table)] + [a for f in folders for a in ("--search", str(f))], check=True)
    print("\n| runtime | command s (limit) | recommended | meets budget | search's val / test | p50 ms | MB shipped |")
    print("|---|---|---|---|---|---|---|")
    for f in folders:
        rec = json.loads((f / "recommended.json").read_text())
        c = rec.get("candidate") or {}
        seconds = (f / "command_seconds.txt").read_text().strip()
        print(f"| {f.name} | {seconds} ({args.time_limit}) | #{c.get('number')} {c.get('warm_start') or 'sampled'}"
              f"{', polished' if c.get('polished') else ''} | {rec.get('meets_budget')} | "
              f"{c.get('accuracy')} / {c.get('test_accuracy')} | {c.get('latency_ms')} | {c.get('size_mb')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
