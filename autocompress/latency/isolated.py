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

**Side by side with a reference.** This machine's speed drifts by 10–35% over minutes, so two
figures taken a quarter of an hour apart do not compare: in one search the decision-tree plan read
7.74 ms (over a 7.61 ms budget) and 4.85 ms when timed again beside the others. With a
:class:`Reference` (a saved model, typically the teacher, and its p50 at the start of the run),
the child times the candidate and the reference alternately (candidate, reference, candidate,
reference; the faster pass of each) and scales the candidate's figures by
``reference.p50 / reference now``: every figure of a run is then in the machine-speed frame of
the run's start, so a speed-up budget compares like with like. ``raw_p50`` keeps the unscaled
figure and ``drift`` the factor.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from .measure import LatencyStats
from .target import Target


@dataclass(frozen=True)
class Reference:
    """A saved model timed beside every candidate, and its p50 (ms) in the frame figures are put in."""

    folder: Path
    p50: float

    def to_dict(self) -> dict:
        return {"folder": str(self.folder), "p50": self.p50}


def measure_saved(folder: str | Path, target: Target, *, runs: int = 30, timeout: float = 900.0,
                  reference: Reference | None = None) -> LatencyStats:
    """Time the compressed model saved in ``folder`` on ``target``, in a new Python process; with a
    ``reference``, beside it and scaled to its frame (see the module's docstring)."""
    import autocompress

    env = dict(os.environ)
    package_root = str(Path(autocompress.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "autocompress.latency.isolated", str(folder),
           "--target", json.dumps(target.to_dict()), "--runs", str(runs)]
    if reference is not None:
        cmd += ["--reference", str(reference.folder)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"measuring {folder} in a fresh process failed (exit {done.returncode}): {last}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    reference_now = figures.pop("reference_p50", None)
    figures.pop("spread", None)
    stats = LatencyStats(**figures)
    if reference is None or not reference_now:
        return stats
    return scaled(stats, reference.p50 / reference_now)


def scaled(stats: LatencyStats, factor: float) -> LatencyStats:
    """``stats`` with its times multiplied by ``factor`` (``raw_p50`` keeps the measured median)."""
    return replace(stats, p50=stats.p50 * factor, p90=stats.p90 * factor, mean=stats.mean * factor,
                   std=stats.std * factor, min=stats.min * factor, max=stats.max * factor, iqr=stats.iqr * factor,
                   raw_p50=stats.p50 if stats.raw_p50 is None else stats.raw_p50, drift=stats.drift * factor)


def measure_isolated(cm, target: Target, *, folder: str | Path | None = None, runs: int = 30,
                     reference: Reference | None = None) -> LatencyStats:
    """Time ``cm`` in a new process: from ``folder`` if it is saved there, else from a temporary
    folder it is saved to first."""
    if folder is not None:
        return measure_saved(folder, target, runs=runs, reference=reference)
    with tempfile.TemporaryDirectory(prefix="autocompress-measure-") as tmp:
        cm.save_pretrained(Path(tmp) / "model")
        return measure_saved(Path(tmp) / "model", target, runs=runs, reference=reference)


def measure_candidate(cm, target: Target, *, runs: int = 30) -> LatencyStats:
    """Latency of the compressed model ``cm`` on the target's runtime, in this process (under the
    exclusive measurement slot)."""
    with tempfile.TemporaryDirectory(prefix="autocompress-measure-") as tmp:
        return _timer(cm, target, Path(tmp))(runs)


def _timer(cm, target: Target, workdir: Path):
    """``timer(runs) -> LatencyStats`` for ``cm`` on the target's runtime, built once (on ONNX
    Runtime: exported and quantized once into ``workdir``), so it can be timed again and again."""
    from .runtime import get_runtime

    session = get_runtime(target.runtime).build_compressed(cm, target, workdir)
    return lambda runs: session.time(runs=runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autocompress.latency.isolated",
                                     description="time a saved compressed model; print the figures as JSON")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--target", required=True, help="the target as JSON (Target.to_dict())")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--reference", type=Path, help="a saved model timed alternately beside FOLDER")
    args = parser.parse_args(argv)
    from ..compressed import load
    from ..errors import UserError

    target = Target(**json.loads(args.target))
    try:
        model = load(args.folder)
        if args.reference is None:
            print(json.dumps(measure_candidate(model, target, runs=args.runs).to_dict()))
            return 0
        with tempfile.TemporaryDirectory(prefix="autocompress-measure-") as tmp:
            (Path(tmp) / "candidate").mkdir()
            (Path(tmp) / "reference").mkdir()
            # each built once (ONNX Runtime: exported and quantized once), then timed
            # candidate, reference, candidate, reference
            time_model = _timer(model, target, Path(tmp) / "candidate")
            time_reference = _timer(load(args.reference), target, Path(tmp) / "reference")
            passes = [(time_model(args.runs), time_reference(args.runs)) for _ in range(2)]
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # a slow phase only ever adds time: the faster pass of each is the better estimate
    stats = min((c for c, _ in passes), key=lambda s: s.p50)
    reference_now = min(r.p50 for _, r in passes)
    print(json.dumps({**stats.to_dict(), "reference_p50": reference_now}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
