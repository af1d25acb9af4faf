"""Latency of a saved model, measured in a fresh process.

A process that has just trained runs inference slower than a fresh one: measured here on one
MiniLM candidate (5 layers, int8), the search worker that had recovered it timed 7.92 ms while a
new process loading the saved folder at the same moment timed 7.20 ms; over the 29 front members
of four benchmark searches, the in-worker figure was −3% to +23% (median +11%) off the figure
taken again at the end (timed this way, over 21: −12% to +12%, median −1%). The model that
serves is loaded by a new process, so every figure of a built model (a search's candidates and
teacher, ``apply``/``evaluate``, the baseline) is taken the same way:
:func:`measure_saved` starts ``python -m autocompress.latency.isolated FOLDER``,
which loads the folder (:func:`autocompress.compressed.load`) and times it on the target under
the usual protocol (measurement slot, >= 20 runs, contention check), and prints the figures as
JSON. :func:`measure_isolated` saves a model to a temporary folder first when it has none.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from .measure import LatencyStats
from .target import Target


def measure_saved(folder: str | Path, target: Target, *, runs: int = 30, timeout: float = 900.0) -> LatencyStats:
    """Time the compressed model saved in ``folder`` on ``target``, in a new Python process."""
    import autocompress

    env = dict(os.environ)
    package_root = str(Path(autocompress.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "autocompress.latency.isolated", str(folder),
           "--target", json.dumps(target.to_dict()), "--runs", str(runs)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"measuring {folder} in a fresh process failed (exit {done.returncode}): {last}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    figures.pop("spread", None)
    return LatencyStats(**figures)


def measure_isolated(cm, target: Target, *, folder: str | Path | None = None, runs: int = 30) -> LatencyStats:
    """Time ``cm`` in a new process: from ``folder`` if it is saved there, else from a temporary
    folder it is saved to first."""
    if folder is not None:
        return measure_saved(folder, target, runs=runs)
    with tempfile.TemporaryDirectory(prefix="autocompress-measure-") as tmp:
        cm.save_pretrained(Path(tmp) / "model")
        return measure_saved(Path(tmp) / "model", target, runs=runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autocompress.latency.isolated",
                                     description="time a saved compressed model; print the figures as JSON")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--target", required=True, help="the target as JSON (Target.to_dict())")
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args(argv)
    from ..compressed import load
    from ..errors import UserError
    from ..evaluate import measure_candidate

    try:
        stats = measure_candidate(load(args.folder), Target(**json.loads(args.target)), runs=args.runs)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(stats.to_dict()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
