"""Polish the pick: once the search has chosen, the recommended plan and the front members that meet
the budget are rebuilt with a longer recovery (``factor`` × their KD steps, or the largest factor
of at least 1.5 that the time left allows), evaluated and timed again the same way (full
validation and test sets; latency in a fresh process loading the saved model), while the
command's time limit allows.

The search trains each candidate briefly so that many fit in the time; a candidate it keeps
deserves the recovery a user would give it by hand. The polished model replaces the search's
in every output when it validates at least as well, and the search figures stay beside it
(``search``); when it validates lower (seen on ONNX Runtime, seed 1: .8494 polished against
.8518 searched), the search's model stays the answer and the polished figures are kept under
``polish_rejected``: the pick is chosen on validation, and polishing never makes it worse there.
A plan without recovery (int8 only) has nothing to polish and keeps its figures.
Optuna's finished trials cannot change, so the polished figures live in the study's user
attribute ``polished`` (like the final re-measurement in ``remeasured``).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from ..compressed import write_metrics
from ..plan import CompressionPlan

#: Seconds a polished candidate needs besides its recovery: building, evaluation, saving, timing.
#: Measured on the default model over eleven polishes (runs/planner15-17, ov-int8-budget,
#: runs/shared): 39-58 s, median 46 (30 s were assumed before; torch under the shared budget then
#: ended its 15-minute command 35 s late).
OVERHEAD_S = 50.0
#: A polish's recovery runs up to ~12% slower than factor x the search's recovery of the same plan
#: (measured 0.87-1.12x over the same polishes; the process has trained before): the estimate
#: counts that much more.
RECOVERY_MARGIN = 1.1


def candidates(summary: dict) -> list[dict]:
    """Trials worth polishing, most important first: the recommendation, then the other front
    members that meet the budget, most accurate first. Only plans with a recovery, not polished yet."""
    rows = []
    rec = summary.get("recommended")
    if rec is not None and summary.get("meets_budget"):
        rows.append(rec)
    elif rec is not None and not any(r.get("feasible") for r in summary["front"]):
        rows.append(rec)  # nothing meets the budget: the closest still deserves it
    rows += sorted((r for r in summary["front"] if r.get("feasible") and r is not rec),
                   key=lambda r: -r["accuracy"])
    seen, out = set(), []
    for r in rows:
        plan = r.get("plan") or {}
        if r["number"] in seen or r.get("search") or r.get("polish_rejected") or \
                not (plan.get("distill") or {}).get("steps"):
            continue
        seen.add(r["number"])
        out.append(r)
    return out


def estimate_seconds(row: dict, factor: float) -> float:
    """Time to polish ``row``: its recovery took ``recovery_seconds`` for ``kd_steps`` steps."""
    return RECOVERY_MARGIN * factor * float(row.get("recovery_seconds") or 0.0) + OVERHEAD_S


def reserve_seconds(pick: dict | None, done: list[dict], factor: float, kd_steps: int, step_s: float) -> float:
    """Time to keep back for polishing the pick: its own :func:`estimate_seconds` when it has a
    recovery (the pick is often the largest model on the front: with the median candidate's speed
    instead, runs/planner15's torch pick, every layer kept at 168 s per recovery, went unpolished);
    else ``kd_steps`` × ``factor`` at the median speed of the recoveries in ``done`` (rows with
    ``recovery_seconds`` and ``kd_steps``), or at ``step_s`` seconds per step before any."""
    import statistics

    if pick and pick.get("recovery_seconds") and ((pick.get("plan") or {}).get("distill") or {}).get("steps"):
        return estimate_seconds(pick, factor)
    if done:
        step_s = statistics.median(r["recovery_seconds"] / r["kd_steps"] for r in done)
    return RECOVERY_MARGIN * factor * kd_steps * step_s + OVERHEAD_S


#: A polish shorter than this many times the search's recovery is not worth its time.
MIN_FACTOR = 1.5


def fitting_factor(row: dict, factor: float, seconds_left: float) -> float | None:
    """``factor``, or the largest factor whose polish still fits in ``seconds_left`` (rounded down
    to a quarter), or None when not even :data:`MIN_FACTOR` fits."""
    if estimate_seconds(row, factor) <= seconds_left:
        return factor
    recovery = RECOVERY_MARGIN * float(row.get("recovery_seconds") or 0.0)
    if recovery <= 0:
        return None
    fits = int((seconds_left - OVERHEAD_S) / recovery * 4) / 4
    return fits if fits >= MIN_FACTOR else None


def polished_plan(plan: CompressionPlan, factor: float) -> CompressionPlan:
    return replace(plan, name=f"{plan.name}-polished",
                   distill=replace(plan.distill, steps=max(1, round(plan.distill.steps * factor))))


def polish(study, summary: dict, ctx, target, *, factor: float, deadline: float | None, models_dir: Path,
           reference=None, progress: bool = True) -> list[dict]:
    """Polish :func:`candidates` of ``summary`` (the study's, :func:`autocompress.report.summarise`)
    in order while each is expected to finish before ``deadline`` (a ``time.time()`` value; None:
    no limit), recording each in ``study``. Returns the polished records."""
    from ..apply import compress
    from ..evaluate import candidate_metrics, size_figures
    from ..latency.isolated import measure_saved
    from ..progress import progress_bar

    if factor <= 0:
        return []
    done = dict(study.user_attrs.get("polished", {}))
    todo = candidates(summary)
    records = []
    bar = progress_bar(total=len(todo), desc="polish", unit="plan", enabled=progress)
    try:
        for row in todo:
            fits = factor if deadline is None else fitting_factor(row, factor, deadline - time.time())
            if fits is None:
                study.set_user_attr("polish_skipped", sorted({*study.user_attrs.get("polish_skipped", []),
                                                              row["number"]}))
                bar.update(1)
                continue
            start = time.time()
            plan = polished_plan(CompressionPlan.from_dict(row["plan"], source=f"trial {row['number']}"), fits)
            cm = compress(plan, ctx, progress=False)
            folder = models_dir / f"trial-{row['number']:04d}-polished"
            cm.save_pretrained(folder)
            metrics = candidate_metrics(cm, ctx, target, folder=folder)
            stats = measure_saved(folder, target, runs=50, reference=reference)
            record = {"accuracy": metrics["validation_accuracy"], "test_accuracy": metrics["accuracy"],
                      "agreement": metrics["fidelity"], "validation_agreement": metrics["validation_fidelity"],
                      "score_source": metrics["score_source"],
                      "latency_ms": round(stats.p50, 3), "latency_p90_ms": round(stats.p90, 3),
                      **size_figures(cm, stats, target.runtime), "params": cm.params,
                      "kd_steps": plan.distill.steps, "recovery_seconds": cm.info["recovery"]["seconds"],
                      "seconds": round(time.time() - start, 1), "model_dir": str(folder), "plan": plan.to_dict(),
                      "factor": fits}
            write_metrics(folder, {k: v for k, v in record.items() if not isinstance(v, dict)})
            done[str(row["number"])] = record
            study.set_user_attr("polished", done)
            records.append({"number": row["number"], **record})
            bar.update(1)
    finally:
        bar.close()
    return records


#: The figures a polished record replaces in a trial's row (the rest of the row is the search's).
REPLACED = ("accuracy", "test_accuracy", "agreement", "validation_agreement", "latency_ms", "latency_p90_ms",
            "size_mb", "weights_mb", "size_source", "params", "kd_steps", "model_dir", "plan")


def apply_polished(row: dict, record: dict) -> dict:
    """``row`` with the polished figures in place and the search's figures under ``search``; or,
    when the polished model validates lower than the search's, ``row`` as it was, the polished
    figures under ``polish_rejected``."""
    if record["accuracy"] < row.get("accuracy", 0.0):
        return {**row, "polish_rejected": {k: record.get(k) for k in REPLACED if k != "plan"},
                "polish_seconds": record.get("seconds")}
    search = {k: row.get(k) for k in REPLACED if k != "plan"}
    return {**row, **{k: record[k] for k in REPLACED if k in record}, "search": search, "polished": True,
            "polish_seconds": record.get("seconds")}
