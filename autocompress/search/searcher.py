"""Optuna drives, Ray Tune executes: a Tune ``Searcher`` over an Optuna study (ask/tell).

Every Tune trial is one Optuna trial. The sampled plan, the fidelity reached, the secondary
metrics, the constraint values and any error are stored as the Optuna trial's user attributes,
so the study storage alone describes the search: resume, reports and ``optuna-dashboard`` all
read it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import socket
import sys
import time
from typing import Callable

import optuna
from ray.tune.search import Searcher

from ..plan import CompressionPlan
from ..objectives import Budget, Objectives, sampler_constraints

PLAN_ATTR = "plan"
#: Warm starts that always get the full run: the reference points every report shows. The recipes
#: (the one-minute plans) too when they are enqueued with ``force_full`` (without a latency budget);
#: under one they are screened like sampled candidates and promoted on the same rule.
FORCED = ("teacher", "baseline")
CONSTRAINTS = ("latency_ms", "size_mb", "accuracy_drop")  # <= 0 means within budget
DRIVER_ATTR = "driver"  # host and pid of the process that asked for the trial (stale-trial check)
#: A refit aims this much under the budget scaled by the measured miss.
REFIT_MARGIN = 0.03
#: Samples in a row that may repeat a plan already evaluated (or running) before one runs anyway.
MAX_DUPLICATES = 20


def forced_full(trial) -> bool:
    """Whether ``trial`` (an Optuna trial, frozen or live) gets the full run without screening."""
    return trial.user_attrs.get("warm_start") in FORCED or bool(trial.user_attrs.get("force_full"))


class StudySearcher(Searcher):
    def __init__(self, study: optuna.Study, space, dims: dict, objectives: Objectives, budget: Budget,
                 teacher_accuracy: float, max_trials: int | None = None, stop_at=None, min_trials: int = 0):
        """``stop_at()``: a ``time.time()`` after which no new trial starts (once ``min_trials``
        were asked in this run, e.g. the warm starts); None: no such limit."""
        super().__init__(metric=None, mode=None)
        self.study, self.space, self.dims = study, space, dims
        self.objectives, self.budget, self.teacher_accuracy = objectives, budget, teacher_accuracy
        self.max_trials = max_trials
        self.stop_at, self.min_trials = stop_at, min_trials
        # told every finished trial's result row (the runner keeps the promotion rule up to date)
        self.on_result: Callable[[dict], object] | None = None
        self.step_s: float | None = None  # seconds per KD step (search.fit), for trials screened untrained
        self.asked = 0
        # the shortest full run expected after a screen, and the shortest screen, in this run
        # (seconds; warm starts of the FORCED kind excluded): once a screen and a full run can no
        # longer end by ``stop_at.end()``, sampling stops (for good: ``_said_ended``)
        self.cheapest_full: float | None = None
        self.shortest_screen = 0.0
        self._said_ended = False
        self._live: dict[str, optuna.Trial] = {}
        self._started: dict[str, float] = {}

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True

    def suggest(self, trial_id: str):
        if self.max_trials is not None and self.asked >= self.max_trials:
            return Searcher.FINISHED
        if self.stop_at is not None and self.asked >= self.min_trials and time.time() >= self.stop_at():
            # with trials still running (Ray, several workers) wait: when they end the stop may have
            # moved (nothing kept back for a polish that no longer fits), and FINISHED is for good
            return None if self._live else Searcher.FINISHED
        if self.no_full_run_fits():
            return None if self._live else Searcher.FINISHED
        known = self._evaluated()
        for attempt in range(MAX_DUPLICATES + 1):
            trial = self.study.ask()
            trial.set_user_attr(DRIVER_ATTR, {"host": socket.gethostname(), "pid": os.getpid()})
            fixed = trial.user_attrs.get("fixed_plan")  # a warm start given as a whole plan
            plan = CompressionPlan.from_dict(fixed, source="warm start") if fixed else self.space.sample(trial, self.dims)
            if trial.user_attrs.get("plan_name"):  # a warm start keeps its own name
                plan = dataclasses.replace(plan, name=trial.user_attrs["plan_name"])
            trial.set_user_attr(PLAN_ATTR, plan.to_dict())
            twin = known.get(plan.fingerprint())  # two samples often allocate to one plan
            if twin is None or forced_full(trial) or attempt == MAX_DUPLICATES:
                break
            # the same candidate again: not run; recorded as pruned (the sampler learns to look elsewhere)
            trial.set_user_attr("duplicate_of", twin)
            self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            if trial.user_attrs.get("warm_start") and "refit_of" not in trial.user_attrs:
                self.min_trials = max(0, self.min_trials - 1)  # one warm start fewer to run before stopping
        self._started[trial_id] = time.perf_counter()
        self._live[trial_id] = trial
        self.asked += 1
        return {"number": trial.number, "plan": plan.to_dict(),
                "force_full": forced_full(trial), "step_s": self.step_s}

    def no_full_run_fits(self) -> bool:
        """Whether the time left cannot hold the shortest screen and the shortest full run seen in
        this run (after the warm starts): every candidate sampled now would be screened and left
        there, as its full run would end after the time limit. Once true, true for good (a trial
        that ends later cannot make a stop said and recorded untrue). In 20-minute searches of the
        default task the last 2-3 minutes went to 5-6 such screens (runs/planner28), in a base-size night piece its last 6 minutes to
        24; stopping leaves that time to polishing the pick, or ends the command sooner. Recorded in
        the study (``sampling_ended``) and said once."""
        if self._said_ended:
            return True
        end = getattr(self.stop_at, "end", None)
        if end is None or self.cheapest_full is None or self.asked < self.min_trials:
            return False
        left = end() - time.time()
        if left >= self.shortest_screen + self.cheapest_full:
            return False
        self.study.set_user_attr("sampling_ended", {"seconds_left": round(left, 1), "at": time.time(),
                                                    "shortest_full_s": round(self.cheapest_full, 1)})
        print(f"autocompress: sampling stopped with {left / 60:.1f} min left: no full run fits any more "
              f"(the shortest expected {self.cheapest_full:.0f} s after a {self.shortest_screen:.0f} s screen)",
              file=sys.stderr)
        self._said_ended = True
        return True

    def _evaluated(self) -> dict[str, int]:
        """Plan fingerprint → number of a trial that evaluated it (finished) or is evaluating it (running)."""
        trials = [*self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)),
                  *self._live.values()]
        return {CompressionPlan.from_dict(t.user_attrs[PLAN_ATTR]).fingerprint(): t.number
                for t in trials if PLAN_ATTR in t.user_attrs}

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        trial = self._live.pop(trial_id, None)
        started = self._started.pop(trial_id, None)
        if trial is None:
            return
        if result and started is not None and "seconds" in result:
            # orchestration overhead as the driver sees it: ask → result, less the trial's own work
            result = {**result, "overhead_seconds": round(time.perf_counter() - started - result["seconds"], 3)}
        if error or not result or "accuracy" not in result:
            message = (result or {}).get("error") or (
                "the worker failed (see the Ray logs)" if error else
                "stopped before it finished (time limit or interrupt)")
            trial.set_user_attr("error", str(message)[:2000])
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            return
        for key, value in result.items():
            if key in ROW_KEYS and value is not None and not (isinstance(value, float) and math.isnan(value)):
                trial.set_user_attr(key, value)
        for name, value in zip(CONSTRAINTS, sampler_constraints(result, self.budget, self.teacher_accuracy)):
            trial.set_constraint(name, value)
        self.study.tell(trial, self.objectives.values(result))
        expected = result.get("full_seconds_expected")
        if expected and trial.user_attrs.get("warm_start") not in FORCED:
            self.cheapest_full = min(expected, self.cheapest_full or math.inf)
            if result.get("fidelity") == "screen" and result.get("seconds"):
                self.shortest_screen = min(self.shortest_screen or math.inf, result["seconds"])
        if self.on_result is not None:
            self.on_result(result)
        self.refit(trial, result)

    def refit(self, trial, result: dict) -> bool:
        """A fully evaluated candidate that measured over the latency budget, though allocated under
        it, is queued once more with its target scaled by *budget / measured* (less
        :data:`REFIT_MARGIN`): the predictor misses by ~10% (measured), and the one-minute recipes
        aim at the budget itself (torch 3x, seed 1: every other layer read 8.35 ms and the top
        layers dropped 7.96 ms against 7.38 ms). Not a refit of a refit; only in spaces whose
        samples carry a ``target``. Returns whether one was queued."""
        limit, measured = self.budget.latency_ms, result.get("latency_ms")
        lo, _ = getattr(self.space, "target", (None, None))
        if (limit is None or not measured or measured <= limit or lo is None or result.get("fidelity") != "full"
                or "target" not in trial.params or "refit_of" in trial.user_attrs):
            return False
        params = {**trial.params, "target": max(lo, trial.params["target"] * limit / measured * (1 - REFIT_MARGIN))}
        name = trial.user_attrs.get("warm_start")
        attrs = {"refit_of": trial.number, **({"warm_start": f"{name} (refit)"} if name else {})}
        self.study.enqueue_trial(params, user_attrs=attrs)
        return True

    def stop_live(self, reason: str) -> None:
        """Mark trials still running (e.g. after Ctrl-C) as failed with ``reason``."""
        for trial_id in list(self._live):
            trial = self._live.pop(trial_id)
            trial.set_user_attr("error", reason)
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)


ROW_KEYS = ("fidelity", "accuracy", "test_accuracy", "agreement", "validation_agreement", "latency_ms",
            "latency_p90_ms", "latency_spread", "latency_contended", "latency_raw_ms", "latency_drift", "size_mb",
            "weights_mb", "size_source", "score_source", "params", "screen_accuracy",
            "screen_latency_ms", "screen_latency_source", "promotion", "kd_steps", "screen_kd_steps", "recovery_seconds", "seconds",
            "model_dir", "node", "worker_pid", "worker_rss_mb", "worker_peak_rss_mb", "overhead_seconds",
            "full_seconds_expected")
