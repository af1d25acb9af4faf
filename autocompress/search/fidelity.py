"""Multi-fidelity over several objectives, built on top of Optuna and Ray Tune.

Optuna's multi-objective studies have no pruners and Ray's schedulers take one metric, so the
search does its own two-stage evaluation. Every candidate is *screened*: built, recovered for the
first ``Fidelity.screen_steps`` KD steps of its plan, scored on a validation subset, its latency
predicted (or measured when no predictor is calibrated). The :class:`Promoter` then decides whether
it earns the *full* run: the same recovery run continues to the plan's step count (nothing is
rebuilt, and the result is the model ``autocompress apply`` builds from the plan), then the full
validation set and a latency measurement on the target. It does when
its screened point is not dominated by an earlier screened point by more than ``promote_slack``
accuracy — i.e. it sits on (or next to) the current screened Pareto front — and it does not
exceed the latency budget by more than 10%. Under a latency budget the default rule
(``promote: auto``) is stricter, ``pick``: a candidate is promoted only if it could become the
recommendation — its screened accuracy is within ``promote_slack`` of the best screened candidate
that meets the budget (once a promoted candidate is measured, by its measured latency, not its
predicted one), the slack being at least one standard error of that screen (:meth:`Promoter.screen_error`) — because the search's answer is the most accurate plan under the budget and
a full run costs 5-10 screens; ``promote: front`` keeps the front rule. The first ``min_promote``
candidates and the forced warm starts (the teacher, the baseline) are always promoted. With a
``deadline`` (the command's time limit), a candidate whose full run is expected to end after it is
not promoted: a full run cut by the time limit is time spent for nothing, while the screen it
would have continued is kept. The promoter is shared by all workers (a Ray actor in a search).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..objectives import Budget
from .space_file import Fidelity


#: Screened latency is predicted: a candidate up to 10% over the budget may still meet it when
#: measured (the allocated space samples targets up to 1.1x the budget for the same reason).
TOLERANCE = 1.1


@dataclass
class Promoter:
    fidelity: Fidelity
    budget: Budget = Budget()
    screened: list[tuple[float, float]] = field(default_factory=list)  # (accuracy, latency ms)
    deadline: float | None = None  # a time.time() by which a full run must end (None: no limit)
    # (screened accuracy, screened latency, measured latency) of the promoted candidates measured so far
    measured: list[tuple[float, float, float]] = field(default_factory=list)

    def measure(self, accuracy: float, latency_ms: float, measured_ms: float) -> None:
        """A promoted candidate's measured latency. The pick rule then counts its screened point
        as under the budget only when the measurement is: in runs/planner19 (ONNX Runtime, budget
        8.43 ms) the decision tree's plan screened best at 8.34 ms predicted and measured 8.84, and
        every later candidate was held below its screen though it could not be the pick."""
        self.measured.append((accuracy, latency_ms, measured_ms))

    def set_deadline(self, deadline: float | None) -> None:
        self.deadline = deadline

    def under_budget(self, accuracy: float, latency_ms: float) -> bool:
        """Whether a screened point may meet the latency budget: measured, under it (one timing,
        the one the search has when it decides; the report's median comes later); predicted,
        within :data:`TOLERANCE` of it. Points match by the rounded figures a trial's row keeps."""
        limit = self.budget.latency_ms
        if limit is None:
            return True
        for acc, lat, measured in reversed(self.measured):
            if acc == accuracy and lat == latency_ms:
                return measured <= limit
        return latency_ms <= TOLERANCE * limit

    def decide(self, accuracy: float, latency_ms: float, force: bool = False,
               full_seconds: float | None = None) -> tuple[bool, str]:
        """Record a screened point; return (promote?, why). ``full_seconds``: how long the full run
        would take from now (compared with ``deadline``)."""
        earlier = list(self.screened)
        self.screened.append((accuracy, latency_ms))
        if force:
            return True, "warm start"
        if self.deadline is not None and full_seconds is not None and time.time() + full_seconds > self.deadline:
            return False, f"its full run (~{full_seconds:.0f} s) would end after the time limit"
        if self.budget.latency_ms is not None and latency_ms > TOLERANCE * self.budget.latency_ms:
            return False, f"screened latency {latency_ms:.1f} ms is over the budget"
        if len(earlier) < self.fidelity.min_promote:
            return True, "among the first screened candidates"
        slack = self.fidelity.promote_slack
        if self.rule() == "pick":
            best = max((acc for acc, lat in earlier if self.under_budget(acc, lat)), default=None)
            if best is not None and accuracy < best - max(slack, self.screen_error(best)):
                return False, f"below the best screened candidate under the budget ({best:.3f})"
            return True, "within the screen's error of the best screened candidate under the budget"
        for acc, lat in earlier:
            if lat <= latency_ms and acc >= accuracy + slack and (lat < latency_ms or acc > accuracy + slack):
                return False, f"dominated at screening by ({acc:.3f}, {lat:.1f} ms)"
        return True, "on the screened front"

    def screen_error(self, score: float) -> float:
        """One standard error of a screened score ``score`` read as an accuracy on
        ``screen_examples`` examples (binomial): about 2 points on 400 examples near .79. A
        candidate that close to the best screen could be the pick. With the shipped slack of 0, the
        README's main command (2026-12-02, torch, 3x) screened 22 sampled candidates at .70-.78 and
        promoted none behind a recipe's .7925."""
        if not 0.0 <= score <= 1.0:
            return 0.0
        return (score * (1.0 - score) / max(1, self.fidelity.screen_examples)) ** 0.5

    def rule(self) -> str:
        """``pick`` or ``front`` (``auto``: pick under a latency budget)."""
        if self.fidelity.promote != "auto":
            return self.fidelity.promote
        return "pick" if self.budget.latency_ms is not None else "front"

    def state(self) -> list[tuple[float, float]]:
        return list(self.screened)


def study_points(study) -> tuple[list[tuple[float, float]], list[tuple[float, float, float]]]:
    """What the promotion rule of a continued study must know: (accuracy, latency ms) of every
    screened trial, in order, and (screened accuracy, screened latency, measured latency) of every
    fully evaluated one (:meth:`Promoter.measure`). Finished trials only: a trial's figures are
    written one attribute at a time, so a driver killed while writing leaves a running trial with
    some of them (CI, kill -9 mid-trial: ``screen_accuracy`` without ``screen_latency_ms``)."""
    trials = [t.user_attrs for t in study.get_trials(deepcopy=False)
              if t.state.name == "COMPLETE" and "screen_accuracy" in t.user_attrs]
    return ([(a["screen_accuracy"], a["screen_latency_ms"]) for a in trials],
            [(a["screen_accuracy"], a["screen_latency_ms"], a["latency_ms"]) for a in trials
             if a.get("fidelity") == "full" and "latency_ms" in a])


def result_hook(call, stop_at=None):
    """The searcher's ``on_result`` for a promoter reached through ``call(method, *args)`` (the
    object, or a Ray actor): a full trial's measured latency (:meth:`Promoter.measure`), and the
    deadline for full runs moved to ``stop_at.end()`` (the command's deadline less the final
    re-measurement of the front as it now stands)."""
    def on_result(row: dict) -> None:
        if row.get("fidelity") == "full" and "screen_accuracy" in row and "latency_ms" in row:
            call("measure", row["screen_accuracy"], row["screen_latency_ms"], row["latency_ms"])
        if stop_at is not None:
            call("set_deadline", stop_at.end())

    return on_result
