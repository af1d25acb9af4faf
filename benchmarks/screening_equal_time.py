"""Does cheaper screening make the default task's front worse? (issue: base-size models in a night)

Per sampler seed, two searches one after the other, each for ``--time-limit`` (set-up included):
the shipped allocated space (80 KD steps, own head) and the same space with ``screen_steps: 0,
screen_score: probe`` (no gradient step; a ridge probe of the last hidden state). Prints, per
search, the hypervolume in fractions of its own teacher's latency (as ``benchmarks/planner.py``
compares spaces), the trials screened / fully evaluated / skipped as repeats, the seconds per
screen, and the pick; then the probe ÷ shipped hypervolume per seed. Outputs stay in ``--out``
(a finished search is not run again), so seeds can be added in later sessions.

    python benchmarks/screening_equal_time.py --seeds 0,1,2 --budget 3x --time-limit 15m --out runs/screen
    python benchmarks/screening_equal_time.py --report-only --out runs/screen
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

KINDS = ("shipped", "probe")


def probe_space(out: Path) -> Path:
    """The built-in allocated space with untrained probe screening, written to ``out``."""
    from autocompress.search import spaces

    src = Path(spaces.__file__).parent / "builtin" / "allocated.yaml"
    space = yaml.safe_load(src.read_text())
    space["name"] = "allocated-probe"
    space["fidelity"] = {**space.get("fidelity", {}), "screen_steps": 0, "screen_score": "probe"}
    path = out / "allocated-probe.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


def run(out: Path, kind: str, seed: int, args) -> None:
    folder = out / f"{kind}-s{seed}"
    if (folder / "pareto.json").is_file():
        return
    space = str(probe_space(out)) if kind == "probe" else "allocated"
    cmd = [sys.executable, "-m", "autocompress.cli", "search", "--space", space, "--runtime", args.runtime,
           "--sampler-seed", str(seed), "--budget", args.budget, "--time-limit", args.time_limit,
           "--trials", "1000", "--out", str(folder), "--study-name", folder.name]
    print("running:", " ".join(cmd[3:]), file=sys.stderr)
    start = time.time()
    subprocess.run(cmd, check=True)
    (folder / "command_seconds.txt").write_text(f"{time.time() - start:.1f}\n")


def summary(folder: Path) -> dict:
    from autocompress.pareto import hypervolume

    pareto = json.loads((folder / "pareto.json").read_text())
    with open(folder / "trials.csv") as fh:
        rows = list(csv.DictReader(fh))
    teacher = pareto["teacher"]
    remeasured = {m["number"]: m.get("latency_ms") for m in pareto["members"]}
    full = [r for r in rows if r["state"] == "COMPLETE" and r["fidelity"] == "full"]
    points = [(float(r["accuracy"]), float(remeasured.get(int(r["number"])) or r["latency_ms"]) / teacher["latency_ms"])
              for r in full]
    screens = sorted(float(r["seconds"]) for r in rows if r["state"] == "COMPLETE" and r["fidelity"] == "screen")
    pick = json.loads((folder / "recommended.json").read_text()).get("candidate") or {}
    return {"hv": hypervolume(points, (teacher["validation_accuracy"] - 0.10, 1.0)), "teacher_ms": teacher["latency_ms"],
            "screened": len(screens), "full": len(full), "repeats": sum(1 for r in rows if r.get("duplicate_of")),
            "screen_s": statistics.median(screens) if screens else None, "pick": pick}


def report(out: Path) -> None:
    ratios = []
    for seed_dir in sorted(out.glob("shipped-s*")):
        seed = seed_dir.name.split("-s")[-1]
        got = {k: summary(out / f"{k}-s{seed}") for k in KINDS if (out / f"{k}-s{seed}" / "pareto.json").is_file()}
        for kind, s in got.items():
            p = s["pick"]
            pick = (f"{p['accuracy']:.4f} / {p['test_accuracy']:.4f} @ {p['latency_ms']:.2f} ms" if p.get("accuracy")
                    else "none")
            screen = f"{s['screen_s']:.1f}" if s["screen_s"] is not None else "-"
            print(f"seed {seed} {kind:>7}: HV {s['hv']:.4f}  teacher {s['teacher_ms']:.2f} ms  screened {s['screened']}  "
                  f"full {s['full']}  repeats {s['repeats']}  s/screen {screen}  pick (val / test) {pick}")
        if len(got) == 2 and got["shipped"]["hv"] > 0:
            ratios.append(got["probe"]["hv"] / got["shipped"]["hv"])
    if ratios:
        print("HV probe / shipped: " + ", ".join(f"{r:.2f}" for r in ratios)
              + f" (median {statistics.median(ratios):.2f}, {len(ratios)} seeds)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--runtime", default="torch")
    parser.add_argument("--budget", default="3x")
    parser.add_argument("--time-limit", default="15m")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--out", default="runs/screen")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        for seed in map(int, args.seeds.split(",")):
            for kind in KINDS:
                run(out, kind, seed, args)
    report(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
