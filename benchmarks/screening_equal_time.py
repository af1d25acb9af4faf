"""Does cheaper screening make the default task's front worse? (issue: base-size models in a night)

Per sampler seed, two searches one after the other, each for ``--time-limit`` (set-up included):
the shipped allocated space (80 KD steps, own head) and the same space with ``screen_steps: 0,
screen_score: probe`` (no gradient step; a ridge probe of the last hidden state). Prints, per
search, the hypervolume in fractions of its own teacher's latency (as ``benchmarks/planner.py``
compares spaces), the trials screened / fully evaluated / skipped as repeats, the seconds per
screen, and the pick; then the probe ÷ shipped hypervolume per seed. Outputs stay in ``--out``
(``searches/<kind>-s<seed>``; a finished search is not run again), so seeds can be added in later sessions.

    python benchmarks/screening_equal_time.py --seeds 0,1,2 --budget 3x --time-limit 15m --out runs/screen
    python benchmarks/screening_equal_time.py --report-only --out runs/screen
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from planner import load_search, own_frame_hypervolume, run_search  # noqa: E402

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


def search(out: Path, kind: str, seed: int, args) -> Path:
    """One search (planner.py's runner: ``out/searches/<kind>-s<seed>``, not run again once finished)."""
    space = str(probe_space(out)) if kind == "probe" else "allocated"
    return run_search(out, args.runtime, seed, space, args.time_limit, args.budget, name=f"{kind}-s{seed}")


def summary(folder: Path) -> dict:
    s = load_search(folder)
    with open(folder / "trials.csv") as fh:
        screens = sorted(float(r["seconds"]) for r in csv.DictReader(fh)
                         if r["state"] == "COMPLETE" and r["fidelity"] == "screen")
    return {"hv": own_frame_hypervolume(s), "teacher_ms": s["teacher"]["latency_ms"], "screened": len(screens),
            "full": s["full"], "repeats": (s["fidelity"] or {}).get("duplicates", 0),
            "screen_s": statistics.median(screens) if screens else None,
            "pick": (s["recommended"] or {}).get("candidate") or {}}


def report(out: Path) -> None:
    ratios = []
    for seed_dir in sorted((out / "searches").glob("shipped-s*")):
        seed = seed_dir.name.split("-s")[-1]
        folders = {k: out / "searches" / f"{k}-s{seed}" for k in KINDS}
        got = {k: summary(f) for k, f in folders.items() if (f / "pareto.json").is_file()}
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
                search(out, kind, seed, args)
    report(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
