"""Latency of a saved model, measured in a fresh process.

A process that has just trained runs inference slower than a fresh one: measured here on one
MiniLM candidate (5 layers, int8), the search worker that had recovered it timed 7.92 ms while a
new process loading the saved folder at the same moment timed 7.20 ms; over the 29 front members
of four benchmark searches, the in-worker figure was −3% to +23% (median +11%) off the figure
taken again at the end (timed this way, over 21: −12% to +12%, median −1%). The model that
serves is loaded by a new process, so every figure of a built model (a search's candidates and
teacher, ``apply``/``evaluate``, the baseline) is taken the same way: :func:`measure_saved` asks
a **timing process** — ``python -m autocompress.latency.isolated --serve``, started once per
process that measures and never training anything — to load the folder
(:func:`autocompress.compressed.load`) and time it on the target under the usual protocol
(measurement slot, >= 20 runs, contention check) and answer with the figures as JSON. It imports
Python's libraries once and takes each figure in a child it forks, a process that has loaded no
model before (a long-lived process that had loaded and timed others read 7-15% slower than a
fresh one, measured side by side; forked children read like fresh processes), at 3-5 s a figure
instead of 6-7 s for a new Python (MiniLM on torch). ``fresh=True`` (or a timing process that
fails) starts one new Python process per figure as before. :func:`measure_isolated` saves a model to a
temporary folder first when it has none.

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
                  reference: Reference | None = None, fresh: bool = False) -> LatencyStats:
    """Time the compressed model saved in ``folder`` on ``target`` in the timing process (``fresh``:
    in a new Python process of its own); with a ``reference``, beside it and scaled to its frame
    (see the module's docstring)."""
    request = {"folder": str(folder), "target": target.to_dict(), "runs": runs,
               "reference": None if reference is None else str(reference.folder)}
    figures = None if fresh else _SERVER.ask(request, timeout)
    if figures is None:
        figures = _one_shot(request, timeout)
    reference_now = figures.pop("reference_p50", None)
    figures.pop("spread", None)
    stats = LatencyStats(**figures)
    if reference is None or not reference_now:
        return stats
    return scaled(stats, reference.p50 / reference_now)


def _env() -> dict:
    import autocompress

    env = dict(os.environ)
    package_root = str(Path(autocompress.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return env


def _one_shot(request: dict, timeout: float) -> dict:
    cmd = [sys.executable, "-m", "autocompress.latency.isolated", request["folder"],
           "--target", json.dumps(request["target"]), "--runs", str(request["runs"])]
    if request["reference"] is not None:
        cmd += ["--reference", request["reference"]]
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=timeout)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"measuring {request['folder']} in a fresh process failed (exit {done.returncode}): {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


_ANSWER = "autocompress-timing "  # prefix of the timing process's answers (anything else is ignored)


class _TimingProcess:
    """The process's timing process: started on first use, replaced when it fails (the caller then
    measures in a one-shot process). It loads no model itself (each figure is a forked child), so
    it needs no other renewal. It exits when its standard input closes, so it never outlives the
    process that started it."""

    def __init__(self):
        import threading

        self.proc, self.lock = None, threading.Lock()

    def ask(self, request: dict, timeout: float) -> dict | None:
        """The figures for ``request``, or None when the timing process failed (it is stopped)."""
        with self.lock:
            return self._ask(request, timeout)

    def _ask(self, request: dict, timeout: float) -> dict | None:
        import selectors
        import time

        if self.proc is None or self.proc.poll() is not None:
            self.stop()
            self.proc = subprocess.Popen([sys.executable, "-m", "autocompress.latency.isolated", "--serve"],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                         text=True, env=_env())
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            deadline = time.monotonic() + timeout
            with selectors.DefaultSelector() as sel:
                sel.register(self.proc.stdout, selectors.EVENT_READ)
                while True:
                    if not sel.select(max(0.0, deadline - time.monotonic())):
                        raise TimeoutError
                    line = self.proc.stdout.readline()
                    if not line:
                        raise EOFError
                    if _ANSWER in line:  # after anything a library printed on the same line
                        line = line[line.index(_ANSWER):]
                        break
        except (OSError, ValueError, TimeoutError, EOFError):
            self.stop()
            return None
        except BaseException:  # e.g. Ctrl-C or a time limit mid-answer: its answer must not be read later
            self.stop()
            raise
        answer = json.loads(line[len(_ANSWER):])
        if "error" in answer:  # as a one-shot process reports it
            raise RuntimeError(f"measuring {request['folder']} in the timing process failed: {answer['error']}")
        return answer

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
        self.proc = None


_SERVER = _TimingProcess()


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
    size = session.artefact_bytes()
    return lambda runs: replace(session.time(runs=runs), artefact_bytes=size)


def figures(folder: Path, target: Target, runs: int, reference: Path | None) -> dict:
    """Load ``folder`` and time it on ``target`` (beside ``reference``, alternately, when given)."""
    from ..compressed import load

    model = load(folder)
    if reference is None:
        return measure_candidate(model, target, runs=runs).to_dict()
    with tempfile.TemporaryDirectory(prefix="autocompress-measure-") as tmp:
        (Path(tmp) / "candidate").mkdir()
        (Path(tmp) / "reference").mkdir()
        # each built once (ONNX Runtime: exported and quantized once), then timed
        # candidate, reference, candidate, reference
        time_model = _timer(model, target, Path(tmp) / "candidate")
        time_reference = _timer(load(reference), target, Path(tmp) / "reference")
        passes = [(time_model(runs), time_reference(runs)) for _ in range(2)]
    # a slow phase only ever adds time: the faster pass of each is the better estimate
    stats = min((c for c, _ in passes), key=lambda s: s.p50)
    return {**stats.to_dict(), "reference_p50": min(r.p50 for _, r in passes)}


def serve() -> int:
    """Answer one request (a JSON line: folder, target, runs, reference) per line of standard input
    with ``_ANSWER`` + the figures as JSON, until standard input closes. This process only imports
    the libraries; each request is measured in a child forked from it, a process that has loaded
    no model before (measured side by side: a process that had loaded and timed other models read
    7-15% slower than a fresh one; a fork of one that never ran a model reads like a fresh one)."""
    import importlib

    from ..errors import UserError

    for module in ("torch", "transformers", "onnxruntime", "autocompress.compressed", "autocompress.latency.runtime"):
        try:  # imported once here, inherited by every fork (no model, no thread pool started yet)
            importlib.import_module(module)
        except ImportError:
            pass
    for line in sys.stdin:
        request = json.loads(line)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: measure, answer through the pipe, exit without cleanup
            os.close(read)
            try:
                answer = figures(Path(request["folder"]), Target(**request["target"]), request["runs"],
                                 None if request["reference"] is None else Path(request["reference"]))
            except UserError as exc:
                answer = {"error": str(exc)}
            except BaseException as exc:  # noqa: BLE001 (reported to the caller, who retries in a new process)
                answer = {"crash": f"{type(exc).__name__}: {exc}"}
            with os.fdopen(write, "w") as out:
                out.write(json.dumps(answer))
            os._exit(0)
        os.close(write)
        with os.fdopen(read) as pipe:
            text = pipe.read()
        os.waitpid(pid, 0)
        answer = json.loads(text) if text else {"crash": "the measuring child exited without an answer"}
        if "crash" in answer:
            return 1  # the caller sees the timing process end and measures in a one-shot process
        print(_ANSWER + json.dumps(answer), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m autocompress.latency.isolated",
                                     description="time a saved compressed model; print the figures as JSON")
    parser.add_argument("folder", type=Path, nargs="?")
    parser.add_argument("--target", help="the target as JSON (Target.to_dict())")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--reference", type=Path, help="a saved model timed alternately beside FOLDER")
    parser.add_argument("--serve", action="store_true", help="answer requests on standard input (see serve())")
    args = parser.parse_args(argv)
    from ..errors import UserError

    if args.serve:
        return serve()
    if args.folder is None or args.target is None:
        parser.error("FOLDER and --target are needed (or --serve)")
    try:
        print(json.dumps(figures(args.folder, Target(**json.loads(args.target)), args.runs, args.reference)))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
