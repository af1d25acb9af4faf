"""One candidate, evaluated at the fidelity it earns (see :mod:`autocompress.search.fidelity`).

Computation holds a *compute slot* and latency is taken under the exclusive *measurement slot*
(:mod:`autocompress.latency.exclusive`), so no measurement overlaps training on the same node;
it is taken in a fresh process that loads the saved model (:mod:`autocompress.latency.isolated`),
not in the worker that has just trained it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from .. import training
from ..apply import compress_stages
from ..compressed import write_metrics
from ..context import TaskContext
from ..evaluate import candidate_metrics, probe_accuracy, size_figures
from ..latency import Target
from ..latency.exclusive import compute_slot
from ..latency.isolated import measure_candidate, measure_isolated
from ..plan import CompressionPlan
from .space_file import Fidelity


def screen_accuracy(model, ctx: TaskContext, examples: int) -> float:
    """The task's score on the first ``examples`` validation examples (a fixed subset)."""
    data = ctx.data["validation"]
    subset = data.select(range(min(examples, len(data))))
    logits, labels = training.predict(model, training.iterate(subset, 64, pad_id=ctx.pad_id))
    return ctx.task_type.score(logits, labels)


#: Seconds a full run spends besides recovery and evaluation: saving the model, starting the
#: fresh timing process and loading it (the timing itself is counted from the latency).
FULL_OVERHEAD_S = 10.0


def full_seconds(cm, plan: CompressionPlan, score_s: float, fidelity: Fidelity, ctx: TaskContext,
                 latency_ms: float, step_s: float | None = None) -> float:
    """How long the full run of a screened candidate ``cm`` will take from now, from its own
    screen: the rest of its recovery at the speed of the steps it took (at ``step_s`` when it took
    none: an untrained screen), the full validation and test sets at the speed its screen was
    scored (a probe's fitting examples counted), and the timing (:func:`.fit.costs` counts the same
    parts before any candidate ran)."""
    recovery = cm.info.get("recovery") or {}
    done = int(recovery.get("steps") or 0)
    left = 0 if cm.info.get("final") else max(0, plan.distill.steps - done)
    step_s = float(recovery.get("seconds") or 0.0) / done if done else float(step_s or 0.0)
    probe = sum(len(b["labels"]) for b in ctx.probe_set()[0]) if fidelity.screen_score == "probe" else 0
    scored = min(fidelity.screen_examples, len(ctx.data["validation"])) + probe
    n_eval = len(ctx.data["validation"]) + len(ctx.data["test"])
    return left * step_s + score_s / max(1, scored) * n_eval + FULL_OVERHEAD_S + 40 * latency_ms / 1000


def evaluate_candidate(plan: CompressionPlan, ctx: TaskContext, target: Target, fidelity: Fidelity, *,
                       decide: Callable[[float, float, bool, float | None], tuple[bool, str]],
                       screen_latency: Callable[[object], float] | None = None, force_full: bool = False,
                       save_dir: Path | None = None, reference=None, step_s: float | None = None) -> dict:
    """Screen ``plan``; if promoted, recover fully, evaluate on the full validation and test sets and
    measure latency on ``target`` (in a fresh process loading the saved model, beside ``reference``
    when given: :mod:`autocompress.latency.isolated`). ``decide(accuracy, latency_ms, force,
    full_seconds)`` gets the screen's figures as the row records them and the expected seconds of
    the full run (:func:`full_seconds`; ``step_s``: seconds per KD step when the screen took none).
    Returns the result row (``fidelity`` is ``screen`` or ``full``)."""
    start = time.perf_counter()
    stages = compress_stages(plan, ctx, pause_at=(fidelity.screen_steps,), progress=False)
    with compute_slot():
        cm = next(stages)  # after screen_steps KD steps, or finished if the plan has no more
        scored = time.perf_counter()
        acc = (probe_accuracy(cm.model, ctx, fidelity.screen_examples) if fidelity.screen_score == "probe"
               else screen_accuracy(cm.model, ctx, fidelity.screen_examples))
        score_s = time.perf_counter() - scored
    if screen_latency is not None:
        lat, lat_source = screen_latency(cm), "predicted"
    else:
        lat, lat_source = measure_candidate(cm, target, runs=20).p50, "measured"
    row = {"screen_accuracy": round(acc, 4), "screen_latency_ms": round(lat, 3), "screen_latency_source": lat_source,
           "params": cm.params, **size_figures(cm), "kd_steps": plan.distill.steps,
           "screen_kd_steps": cm.info["recovery"]["steps"]}
    full_s = full_seconds(cm, plan, score_s, fidelity, ctx, lat, step_s)
    # the rounded figures, as the row keeps them: the promoter matches them with the measured latency later
    promote, why = decide(row["screen_accuracy"], row["screen_latency_ms"], force_full, full_s)
    row["full_seconds_expected"] = round(full_s, 1)
    row["promotion"] = why
    if not promote:
        stages.close()
        row.update(fidelity="screen", accuracy=row["screen_accuracy"], latency_ms=row["screen_latency_ms"],
                   seconds=round(time.perf_counter() - start, 2))
        return row
    if not cm.info["final"]:
        with compute_slot():
            cm = next(stages)  # the same recovery run, continued to plan.distill.steps
    if save_dir is not None:
        cm.save_pretrained(save_dir)
    with compute_slot():
        metrics = candidate_metrics(cm, ctx, target, folder=save_dir)  # on the runtime where it scores otherwise
    stats = measure_isolated(cm, target, folder=save_dir, reference=reference)  # as it will serve: a new process
    row.update(fidelity="full", accuracy=metrics["validation_accuracy"], test_accuracy=metrics["accuracy"],
               agreement=metrics["fidelity"], validation_agreement=metrics["validation_fidelity"],
               score_source=metrics["score_source"],
               latency_ms=round(stats.p50, 3), latency_p90_ms=round(stats.p90, 3),
               latency_spread=round(stats.spread, 4), latency_contended=bool(getattr(stats, "contended", False)),
               latency_raw_ms=round(stats.raw_p50 or stats.p50, 3), latency_drift=round(stats.drift, 4),
               **size_figures(cm, stats, target.runtime), params=cm.params,
               recovery_seconds=cm.info["recovery"]["seconds"], seconds=round(time.perf_counter() - start, 2))
    if save_dir is not None:
        write_metrics(save_dir, {k: v for k, v in row.items() if not isinstance(v, dict)})
        row["model_dir"] = str(save_dir)
    return row
