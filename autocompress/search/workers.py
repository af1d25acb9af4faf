"""What runs inside the search's Ray Tune workers (the per-trial function) and beside them (the
progress bar)."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path

WORKER_CONTEXTS: dict = {}


def run_trial(config: dict, ctx, target, fidelity, decide, models_dir: Path, threads: int,
              predictor=None, reference=None) -> dict:
    """Evaluate one suggested trial (``config`` from :meth:`StudySearcher.suggest`) and return its
    result row; an exception is returned as the row's ``error`` (a failed trial; the study goes
    on). ``decide(accuracy, latency_ms, force, full_seconds)`` is the promotion rule (:class:`Promoter`)."""
    import torch

    from ..plan import CompressionPlan
    from .trial import evaluate_candidate

    begin = time.perf_counter()
    torch.set_num_threads(threads)
    try:
        plan = CompressionPlan.from_dict(config["plan"], source=f"trial {config['number']}")
        row = evaluate_candidate(
            plan, ctx, target, fidelity, force_full=config["force_full"],
            screen_latency=(lambda cm: predictor.predict(cm.resolved, cm.plan.technique("precision").dtype))
            if predictor is not None else None,
            decide=decide, save_dir=models_dir / f"trial-{config['number']:04d}", reference=reference,
            step_s=config.get("step_s"))
    except Exception as exc:  # recorded as a failed trial; the study goes on
        import traceback

        where = traceback.extract_tb(exc.__traceback__)[-1]
        row = {"error": f"{type(exc).__name__}: {exc} (at {Path(where.filename).name}:{where.lineno})"}
    row["worker_pid"] = os.getpid()
    row["worker_overhead_seconds"] = round(time.perf_counter() - begin - row.get("seconds", 0.0), 3)
    row.update(release_memory())
    return row


def release_memory() -> dict:
    """Give freed memory back to the system after a trial and say what the worker holds: its
    resident and peak memory in MB (Linux; nothing elsewhere). A night on a base-size model lost
    its Ray worker to the out-of-memory killer at 18 GB after six trials, each of which peaks at
    ~3.6 GB in a process of its own; the figures in each trial's row show whether a worker grows."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # glibc keeps freed pages of every thread's arena
        status = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return {}
    kb = {line.split(":")[0]: int(line.split()[1]) for line in status if line.startswith(("VmRSS", "VmHWM"))}
    return {"worker_rss_mb": round(kb.get("VmRSS", 0) / 1024), "worker_peak_rss_mb": round(kb.get("VmHWM", 0) / 1024)}


def make_trainable(payload_ref: list, key: str, target, fidelity, promoter, models_dir: Path, threads: int,
                    predictor=None, reference=None):
    """The function each Ray worker runs per trial. The task context travels once per worker
    process (fetched from the object store on first use, then kept)."""

    def trainable(config: dict) -> None:
        import ray
        from ray import tune

        if key not in WORKER_CONTEXTS:
            WORKER_CONTEXTS.clear()
            WORKER_CONTEXTS[key] = ray.get(payload_ref[0])
        row = run_trial(config, WORKER_CONTEXTS[key], target, fidelity,
                        lambda *args: tuple(ray.get(promoter.decide.remote(*args))),
                        models_dir, threads, predictor, reference)
        row["node"] = ray.get_runtime_context().get_node_id()[:12]
        tune.report(row)

    return trainable


def fit_tuner(tuner) -> bool:
    """Run ``tuner``; True when a worker was lost (Ray killed it, e.g. out of memory, which Ray Tune's
    controller does not survive) instead of finishing: the search then ends as an interrupted one
    (its finished trials written; the next run on the same storage continues the study) with one
    line saying why. A night on a base-size model lost its whole record this way after 72 minutes."""
    import sys

    from ray.exceptions import RayError

    try:
        tuner.fit()
    except Exception as exc:
        cause = exc if isinstance(exc, RayError) else exc.__cause__
        if not isinstance(cause, RayError):
            raise
        print(f"autocompress: warning: the search stopped early, a worker was lost "
              f"({type(cause).__name__}: {str(cause).splitlines()[0][:200]}); the finished trials are "
              f"written, and the next run with the same --out continues the study", file=sys.stderr)
        return True
    return False


def trials_end(deadline: float | None, stop_at=None, *, at_least: float = 30.0, every: float = 5.0):
    """When running trials are stopped, as a function of no arguments (``time.time()`` seconds), or
    None without a deadline: ``stop_at.end()`` (the deadline less the final re-measurement of the
    front, which grows with the front; read at most every ``every`` seconds), the deadline itself
    without ``stop_at``, and never sooner than ``at_least`` seconds from now (as Ray Tune's time
    budget). Trials stopped at the deadline itself left the re-measurement after it: the README's
    command ran 1822 s for its 30-minute limit."""
    if deadline is None:
        return None
    floor = time.time() + at_least
    read = [-float("inf"), deadline]

    def end() -> float:
        now = time.time()
        if stop_at is not None and now - read[0] >= every:
            read[:] = [now, min(deadline, stop_at.end())]
        return max(read[1], floor)

    return end


def end_stopper(end):
    """A Ray Tune stopper that stops every trial at ``end()`` (:func:`trials_end`); the controller
    asks it at every step."""
    from ray.tune import Stopper

    class EndStopper(Stopper):
        def __call__(self, trial_id, result) -> bool:
            return False

        def stop_all(self) -> bool:
            return time.time() >= end()

    return EndStopper()


@contextmanager
def main_stack_for_signals():
    """While inside, signal handlers run on this thread's own stack, not on an alternate signal
    stack (Linux; elsewhere nothing changes). CPython installs its handlers with SA_ONSTACK, and
    OpenVINO's CPU plugin leaves its own alternate stack (11.5 kB) installed on the thread that
    compiled a model: a SIGALRM handled there after an OpenVINO model was compiled killed the process
    with SIGSEGV (every run of the predictor, precision and search unit tests in that order). The
    previous alternate stack is put back on the way out."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        yield
        return

    class Stack(ctypes.Structure):  # stack_t
        _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]

    libc = ctypes.CDLL(None, use_errno=True)
    previous = Stack()
    switched = libc.sigaltstack(ctypes.byref(Stack(None, 2, 0)), ctypes.byref(previous)) == 0  # 2: SS_DISABLE
    try:
        yield
    finally:
        if switched:
            libc.sigaltstack(ctypes.byref(previous), None)


class TimeUp(BaseException):
    """The time limit came while a trial of the local executor ran (a BaseException, like
    KeyboardInterrupt, so no ``except Exception`` on the way swallows it)."""


def run_local(searcher, run_one, callback, deadline) -> None:
    """The local executor: trials one after another in this process, no Ray. ``searcher`` suggests
    and records them as under Ray Tune; ``run_one(config) -> row`` evaluates one
    (:func:`run_trial`); ``callback`` is the progress bar. At ``deadline`` (``time.time()``
    seconds, or a function of no arguments giving them, read as each trial starts) the
    running trial is stopped (a SIGALRM sent to this thread alone by a timer thread, when this is
    the main thread: a process-wide interval timer would interrupt whichever thread the kernel
    picks, the intra-op threads of torch among them) and recorded as stopped, as Ray Tune's time
    budget does."""
    import signal
    import threading
    from types import SimpleNamespace

    from ray.tune.search import Searcher

    alarm = threading.current_thread() is threading.main_thread() and hasattr(signal, "pthread_kill")

    def time_up(signum, frame):
        raise TimeUp

    number = 0
    while True:
        trial_id = f"local-{number}"
        number += 1
        limit = deadline() if callable(deadline) else deadline
        if limit is not None and time.time() >= limit:
            return
        config = searcher.suggest(trial_id)
        if config is None or config == Searcher.FINISHED:
            return
        armed = alarm and limit is not None
        previous = signal.signal(signal.SIGALRM, time_up) if armed else None
        row = None
        timer = None
        try:
            with main_stack_for_signals() if armed else nullcontext():
                if armed:
                    timer = threading.Timer(
                        max(0.01, limit - time.time()),
                        signal.pthread_kill,
                        (threading.main_thread().ident, signal.SIGALRM),
                    )
                    timer.daemon = True
                    timer.start()
                try:
                    row = run_one(config)
                finally:
                    if timer is not None:
                        timer.cancel()
                        timer.join()
        except TimeUp:  # (when it comes just after the trial finished, the trial counts)
            pass
        finally:
            if armed:
                signal.signal(signal.SIGALRM, signal.SIG_DFL if previous is None else previous)
        if row is None:
            searcher.on_trial_complete(trial_id, None)  # recorded as stopped before it finished
            callback.on_trial_error(0, [], SimpleNamespace(last_result={}))
            return
        searcher.on_trial_complete(trial_id, row)  # a row with an error: a failed trial, as under Ray
        callback.on_trial_complete(0, [], SimpleNamespace(last_result=row))


def progress_callback(search, progress, teacher_acc, budget, fit=None, stop_at=None):
    from ray.tune import Callback

    from ..objectives import constraint_values, feasible
    from ..progress import progress_bar

    class Progress(Callback):
        """A progress bar: trials done, elapsed time, best feasible accuracy so far and, under a time
        limit, how many more candidates fit (from the finished trials' seconds as they come in).
        Under a time limit the bar's total is the trials done plus the warm starts left plus the
        candidates that fit (not ``--trials``: a night's 100000 read as an ETA of 4500 hours)."""

        def __init__(self):
            fits = fit.fits() if fit is not None else None
            total = search.trials if fits is None else min(search.trials, fit.queued + fits[0])
            self.bar = progress_bar(total=total, desc="search", unit="trial", enabled=progress)
            self.best = None
            self.interrupted = False
            self.rows = []

        def on_trial_complete(self, iteration, trials, trial, **info):
            result = trial.last_result or {}
            self.rows.append(result)
            self.bar.update(1)
            if result.get("fidelity") == "full" and feasible(constraint_values(result, budget, teacher_acc)):
                self.best = max(self.best or 0.0, result["accuracy"])
            text = f"best feasible acc {self.best:.4f}" if self.best else "no feasible yet"
            if fit is not None and stop_at is not None:
                left = [r for r in self.rows if r.get("fidelity")]
                more = replace(fit.observed(self.rows), seconds=max(0.0, stop_at() - time.time()),
                               queued_s=0.0 if len(left) >= fit.queued else fit.queued_s).fits()
                text += f", ~{more[0]} more fit"
                self.bar.total = min(search.trials, self.bar.n + max(0, fit.queued - len(left)) + more[0])
            self.bar.set_postfix_str(text)

        def on_trial_error(self, iteration, trials, trial, **info):
            self.bar.update(1)

        def on_experiment_end(self, trials, **info):
            self.interrupted = any(t.status not in ("TERMINATED", "ERROR") for t in trials)

        def close(self):
            self.bar.close()

    return Progress()


__all__ = ["WORKER_CONTEXTS", "TimeUp", "fit_tuner", "make_trainable", "progress_callback", "run_local", "run_trial"]
