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
that meets the budget — because the search's answer is the most accurate plan under the budget and
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
            limit = TOLERANCE * self.budget.latency_ms
            best = max((acc for acc, lat in earlier if lat <= limit), default=None)
            if best is not None and accuracy < best - slack:
                return False, f"below the best screened candidate under the budget ({best:.3f})"
            return True, "the best screened candidate under the budget"
        for acc, lat in earlier:
            if lat <= latency_ms and acc >= accuracy + slack and (lat < latency_ms or acc > accuracy + slack):
                return False, f"dominated at screening by ({acc:.3f}, {lat:.1f} ms)"
        return True, "on the screened front"

    def rule(self) -> str:
        """``pick`` or ``front`` (``auto``: pick under a latency budget)."""
        if self.fidelity.promote != "auto":
            return self.fidelity.promote
        return "pick" if self.budget.latency_ms is not None else "front"

    def state(self) -> list[tuple[float, float]]:
        return list(self.screened)
