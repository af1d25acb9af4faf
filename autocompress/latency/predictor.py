"""Predict a plan's latency in milliseconds without building the model.

**The model.** A plan's latency on one target (runtime, threads, batch, sequence length), device and
architecture is a sum of physically meaningful cost terms, each a *feature* of the plan (computed
from its structure alone) times a fitted non-negative cost:

- ``fixed`` (1 per call): embeddings, classifier head, per-call overhead;
- ``layers``: kept layers (layer norms, residual adds, reshapes, the kernels of a layer);
- ``attention``: GMACs of the attention core (Q·Kᵀ and softmax·V: ``2·tokens·seq·head_dim`` per head);
- ``activation``: million FFN activations (tokens × FFN width);
- ``fp32_linear`` / ``int8_linear``: GMACs of the fp32 / int8 linears (a low-rank linear is two
  matmuls, ``in·r + r·out``);
- ``fp32_matmuls`` / ``int8_matmuls``: how many linear kernels run (per-kernel overhead, which
  dominates small low-rank factors);
- ``quantized_inputs`` / ``quantized_elements``: the inputs int8 linears quantize dynamically, and
  their size (ONNX Runtime quantizes the input q/k/v share once; torch quantizes per linear);
- ``dtype_switches``: changes between fp32 and int8 along the linears in execution order;
- ``int8_used`` (0/1) and ``int8_layers``: one-off and per-layer costs of running int8 kernels at all.

**The fit.** 59 plans for ONNX Runtime, 113 for torch (keep-all, all int8, half the heads, half the
FFN, half the layers; 36 / 72 random plans, some cut to 1–2 layers; 18 / 36 plans of identical
layers, down to tiny and fully factorised ones), in random order, are built structurally (random
low-rank factors, no training) and measured end to end on the target, each in two passes a few
seconds apart, the faster kept (slow phases of a shared machine only ever add time; see
:func:`measure_plans`). The costs are fitted by non-negative least squares on *relative* error.
Every feature is non-decreasing in the heads, the FFN width and the layers kept (dropping a layer
can only remove dtype switches), and the costs are non-negative, so predictions are monotone in
heads, FFN width and layers kept. Unstructured sparsity is ignored: dense kernels do not get
faster with zeros. The table records the fit's error and a 5-fold cross-validated error (what to
expect on new plans), and every calibration plan's features and measurements.

What it does not model: a plan whose layers differ from each other runs a few percent slower
than one of identical layers with the same totals (measured on both runtimes; the cause is not
pinned down), which no feature monotone in heads and FFN width can express; and a shared
machine's speed drifts by several percent over minutes, which moves every measurement alike:
:func:`anchor` measures the five reference plans (a few seconds) and scales the predictions by
their mean latency ratio now / at calibration; the search and ``check`` use anchored predictions.

The table is cached on disk as ``cache.home()/latency/<key>.json`` where the key hashes the device
fingerprint, the target, the architecture and the grid.

The features, the plans and the grid are in :mod:`~autocompress.latency.features`, the fit and
:class:`LatencyPredictor` in :mod:`~autocompress.latency.table`; this module re-exports them and
measures: it builds, anchors and checks tables.
"""

from __future__ import annotations

import copy
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .. import cache
from ..errors import UserError
from ..plan import ResolvedLayer
from .exclusive import measurement_slot
from .features import (FEATURE_NAMES, FEATURES, Grid, calibration_plans, for_runtime, linear_shape, max_rank,
                       model_dims, other_precisions, plan_features, random_plan, reference_plans, resolve_plan,
                       structured_plan)
from .measure import LatencyStats, pass_spread, random_inputs, torch_threads
from .table import LatencyPredictor, cache_key, cache_path, cross_validate, fit_costs, fit_table
from .target import Target

_resolve = resolve_plan  # the old private name, still imported by tests and benchmarks


def get_predictor(model, target: Target, *, grid: Grid | None = None, build: bool = True,
                  rebuild: bool = False, progress: bool = False) -> LatencyPredictor:
    """The cached predictor for this device/target/architecture/grid; built (and cached) if absent
    and ``build``, else :class:`UserError`."""
    grid = grid or Grid()
    dims = model_dims(model)
    path = cache_path(dims, target, grid)
    if path.is_file() and not rebuild:
        return LatencyPredictor(json.loads(path.read_text()), path=path, from_cache=True)
    if not build:
        raise UserError(f"no latency table for this device and target ({target.describe()}); "
                        "run 'autocompress latency calibrate' first")
    table = build_table(model, target, grid=grid, progress=progress)
    table["key"] = cache_key(dims, target, grid)
    cache.atomic_write_json(path, table)
    built = LatencyPredictor(table, path=path)
    for line in built.warnings() if progress else ():
        print(f"warning: latency table: {line}", file=sys.stderr)
    return built


def anchor(predictor: LatencyPredictor, model, target: Target | None = None, *, grid: Grid | None = None,
           passes: int = 2, runs: int = 30) -> LatencyPredictor:
    """``predictor`` anchored to the machine's speed now: the reference plans (keep-all, all int8,
    half the heads, half the FFN, half the layers) are measured again and every prediction is
    scaled by their mean latency ratio now / then. With ``grid`` (the grid the table was
    calibrated with), they are timed under its protocol, as at calibration: a coarse grid for a
    tiny or a slow model anchors as cheaply as it calibrated. A shared machine's speed drifts by
    several percent over minutes and moves every plan alike; a few seconds of measurement remove
    most of it (five plans, so one noisy one moves it little)."""
    target = target or predictor.target
    plans = reference_plans(predictor.dims, target.runtime)
    resolved = [resolve_plan(plan, predictor.dims) for plan in plans]
    protocol = ({} if grid is None else
                dict(passes=grid.passes, lag=grid.lag, runs=grid.runs, warmup=grid.warmup, retries=grid.retries,
                     min_seconds=grid.min_seconds, max_seconds=grid.max_seconds, max_spread=grid.max_spread,
                     remeasure=grid.remeasure))
    with tempfile.TemporaryDirectory(prefix="autocompress-anchor-") as tmp:
        stats = measure_plans(model, resolved, target, **{"passes": passes, "runs": runs, **protocol},
                              workdir=Path(tmp))
    return predictor.anchored({plan.name: best(s).p50 for plan, s in zip(plans, stats)})


def with_precisions(predictor: LatencyPredictor, model, precisions: Sequence[str], *, grid: Grid | None = None,
                    progress: bool = False) -> LatencyPredictor:
    """``predictor`` with an anchored table of its own for each of :func:`other_precisions`,
    calibrated like the first (cached) and anchored to the machine's speed now."""
    target = predictor.target
    for precision in other_precisions(target, precisions):
        other = target.with_precision(precision)
        table = get_predictor(model, other, grid=grid, progress=progress)
        predictor = predictor.with_sibling(anchor(table, model, other, grid=grid))
    return predictor


# ----------------------------------------------------------------------------------- measuring


def _steadiest(measure_once: Callable[[], LatencyStats], max_spread: float | None, remeasure: int) -> LatencyStats:
    """Measure; while the spread exceeds ``max_spread`` (at most ``remeasure`` more times), measure
    again and keep the steadiest measurement (smallest spread)."""
    best = measure_once()
    for _ in range(remeasure if max_spread is not None else 0):
        if best.spread <= max_spread:
            break
        again = measure_once()
        if again.spread < best.spread:
            best = again
    return best


def _build(model, resolved: Sequence[ResolvedLayer], target: Target, workdir: Path | None):
    """Build ``resolved`` structurally from ``model`` on the target's runtime; return
    ``(measure(**protocol) -> LatencyStats, close())``."""
    from ..transform import rebuild_structure_
    from .runtime import get_runtime

    m = copy.deepcopy(model)
    rebuild_structure_(m, list(resolved))
    m.eval()
    session = get_runtime(target.runtime).build(m, target, resolved=resolved, workdir=workdir)
    return session.time, session.close


def measure_plan(model, resolved: Sequence[ResolvedLayer], target: Target, *, runs: int = 30,
                 retries: int = 3, min_seconds: float = 0.3, max_seconds: float = 5.0,
                 workdir: Path | None = None, warmup: int = 5, max_spread: float | None = None,
                 remeasure: int = 2) -> LatencyStats:
    """Build ``resolved`` structurally from the uncompressed ``model`` (random low-rank factors, first
    heads/neurons kept; no training), then measure it on ``target``. With ``max_spread``, a
    measurement whose spread (IQR / median) exceeds it is repeated (at most ``remeasure`` times) on
    the same built model and the steadiest one is returned."""
    run, close = _build(model, resolved, target, workdir)
    try:
        return _steadiest(lambda: run(warmup=warmup, runs=runs, retries=retries, min_seconds=min_seconds,
                                      max_seconds=max_seconds), max_spread, remeasure)
    finally:
        close()


def measure_plans(model, resolved_plans: Sequence[Sequence[ResolvedLayer]], target: Target, *, passes: int = 2,
                  lag: int = 3, runs: int = 30, warmup: int = 5, retries: int = 3, min_seconds: float = 0.3,
                  max_seconds: float = 30.0, max_spread: float | None = 0.05, remeasure: int = 2,
                  workdir: Path | None = None,
                  on_plan: Callable[[int, list[LatencyStats]], None] | None = None,
                  after_pass: Callable[[int], None] | None = None) -> list[list[LatencyStats]]:
    """Measure every plan ``passes`` times (like :func:`measure_plan`): right after it is built, then
    again ``lag`` plans later, seconds apart, while at most ``lag + 1`` built plans are kept.
    Measuring twice at different moments guards against slow phases of a shared machine that the
    contention detector cannot see (other virtual machines on the host): a phase rarely lasts that
    long, and it only ever adds time, so the faster pass is the better estimate (:func:`best`).
    ``on_plan(i, stats)`` is called as each plan completes, in order; ``after_pass(i)`` right after
    each pass of plan ``i`` (e.g. to measure a reference beside it)."""
    from collections import deque

    kwargs = dict(warmup=warmup, runs=runs, retries=retries, min_seconds=min_seconds, max_seconds=max_seconds)
    results: list[list[LatencyStats]] = [[] for _ in resolved_plans]
    pending: deque = deque()

    def again(i, run):
        results[i].append(_steadiest(lambda: run(**kwargs), max_spread, remeasure))
        if after_pass:
            after_pass(i)

    def finish(i, run, close):
        try:
            while len(results[i]) < max(1, passes):
                again(i, run)
        finally:
            close()
        if on_plan:
            on_plan(i, results[i])

    try:
        for i, resolved in enumerate(resolved_plans):
            run, close = _build(model, resolved, target, workdir)
            pending.append((i, run, close))
            again(i, run)
            while len(pending) > max(0, lag):
                finish(*pending.popleft())
        while pending:
            finish(*pending.popleft())
    finally:
        for _, _, close in pending:
            close()
    return results


def best(stats: Sequence[LatencyStats]) -> LatencyStats:
    """The pass with the lowest median (see :func:`measure_plans`)."""
    return min(stats, key=lambda s: s.p50)


def warm_up(model, target: Target, seconds: float) -> None:
    """Run the uncompressed model (torch) for ``seconds`` in the measurement slot: the first
    measurements after a pause run measurably slower (CPU and allocator state)."""
    import torch

    if seconds <= 0:
        return
    inputs = random_inputs(target, getattr(model.config, "vocab_size", 1000))
    with measurement_slot(), torch_threads(target.threads), torch.inference_mode():
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            model(**inputs)


def _progress(total: int, desc: str, enabled: bool):
    from ..progress import progress_bar

    return progress_bar(total=total, desc=desc, unit="plan", enabled=enabled)


def build_table(model, target: Target, *, grid: Grid | None = None, progress: bool = False) -> dict:
    """Measure the calibration plans end to end and fit the costs; return the table (plain data)."""
    grid = grid or Grid()
    start = time.perf_counter()
    model = model.eval()
    dims = model_dims(model)
    plans = calibration_plans(dims, grid, target.runtime)
    resolved_plans = [resolve_plan(p, dims) for p in plans]
    bar = _progress(len(plans), f"calibrate {target.runtime}", progress)
    warm_up(model, target, grid.warm_up)
    with tempfile.TemporaryDirectory(prefix="autocompress-latency-") as tmp:
        stats = measure_plans(model, resolved_plans, target, passes=grid.passes, lag=grid.lag, runs=grid.runs,
                              warmup=grid.warmup, retries=grid.retries, min_seconds=grid.min_seconds,
                              max_seconds=grid.max_seconds, max_spread=grid.max_spread, remeasure=grid.remeasure,
                              workdir=Path(tmp), on_plan=lambda i, s: bar.update())
    bar.close()
    contended = [any(s.contended for s in got) for got in stats]
    table = fit_table(resolved_plans, [best(got).p50 for got in stats], dims, target, grid,
                      names=[p.name for p in plans], exclude=contended)
    for row, got in zip(table["plans"], stats):
        row["passes_ms"] = [round(s.p50, 4) for s in got]
    table["contended_passes"] = int(sum(contended))
    table["pass_spread"] = pass_spread(stats)
    table["build_seconds"] = round(time.perf_counter() - start, 1)
    return table


# ----------------------------------------------------------------------------------- check


def check(predictor: LatencyPredictor, model, target: Target | None = None, *, plans: int = 30, seed: int = 7,
          runs: int = 30, max_seconds: float = 30.0, progress: bool = False,
          on_row: Callable[[dict], None] | None = None, passes: int = 2, max_spread: float | None = 0.05,
          warm_up_seconds: float = 2.0) -> dict:
    """Measure ``plans`` random plans and compare with the predictions: MAPE, share within ±10%,
    worst error. Plans are measured as in calibration (:func:`measure_plans`: ``passes`` passes
    seconds apart, the faster kept; a pass whose spread exceeds ``max_spread`` is repeated).

    The predictor is used as the search uses it: anchored (:func:`anchor`) to the reference plans
    measured just before the random plans. ``unanchored`` gives the figures of the raw table,
    ``single_pass`` those against the first pass alone, and ``anchor`` the machine's speed now
    against calibration (``scale``) and how much it moved during the check (the keep-all plan is
    measured again after the random plans).

    ``drift_corrected`` separates the predictor's error from the machine's drift during the check:
    right after each pass of a random plan the keep-all model is measured again, and the kept pass
    is brought back to the anchor's moment by the keep-all ratio (at the anchor / beside the pass)
    before it is compared with the anchored prediction. Slow phases of a shared machine move a
    plan and the keep-all model measured a second apart alike; what remains is the table's own
    error."""
    target = target or predictor.target
    dims = predictor.dims
    rng = np.random.default_rng(seed)
    resolved_plans = [resolve_plan(for_runtime(random_plan(dims, rng, name=f"check-{i}"), target.runtime), dims)
                      for i in range(plans)]
    raw = [predictor.predict(r) for r in resolved_plans]
    refs = reference_plans(dims, target.runtime)
    anchors = [resolve_plan(plan, dims) for plan in refs]
    rows, now, after, anchored = [], {}, [], []
    beside: dict[int, list[float]] = {}  # keep-all p50 measured right after each pass of plan j
    bar = _progress(plans, f"check {target.runtime}", progress)

    def done(j, stats):
        if j < len(refs):  # the reference plans, measured first: the anchor
            now[refs[j].name] = best(stats).p50
            if len(now) == len(refs):
                anchored.append(predictor.anchored(now))
            return
        if j == len(refs) + plans:  # keep-all again, after the random plans
            after.append(best(stats).p50)
            return
        i = j - len(refs)
        predicted = anchored[0].predict(resolved_plans[i])
        measured, first = best(stats), stats[0]
        corrected = measured.p50 * now["keep-all"] / beside[j][stats.index(measured)]
        row = {"plan": i, "layers": sum(r.keep for r in resolved_plans[i]), "predicted_ms": round(predicted, 3),
               "measured_ms": round(measured.p50, 3), "error": round((predicted - measured.p50) / measured.p50, 4),
               "unanchored_error": round((raw[i] - measured.p50) / measured.p50, 4),
               "spread": round(measured.spread, 4), "contended": any(s.contended for s in stats),
               "passes_ms": [round(s.p50, 3) for s in stats], "other_cpu": round(max(s.other_cpu for s in stats), 3),
               "first_pass_error": round((predicted - first.p50) / first.p50, 4),
               "keep_all_beside_ms": [round(v, 3) for v in beside[j]], "drift_corrected_ms": round(corrected, 3),
               "drift_corrected_error": round((predicted - corrected) / corrected, 4)}
        rows.append(row)
        if on_row:
            on_row(row)
        bar.update()

    warm_up(model, target, warm_up_seconds)
    with tempfile.TemporaryDirectory(prefix="autocompress-check-") as tmp:
        keep_all, close = _build(model, anchors[0], target, Path(tmp))

        def measure_beside(j):
            if len(refs) <= j < len(refs) + plans:
                beside.setdefault(j, []).append(keep_all(warmup=2, runs=20, min_seconds=0.2, max_seconds=max_seconds).p50)

        try:
            measure_plans(model, [*anchors, *resolved_plans, anchors[0]], target, passes=passes, runs=runs,
                          max_seconds=max_seconds, max_spread=max_spread, workdir=Path(tmp), on_plan=done,
                          after_pass=measure_beside)
        finally:
            close()
    bar.close()
    worst = max(rows, key=lambda r: abs(r["error"]))
    then = predictor.measured_at_calibration()
    result = {"plans": len(rows), **_summary([r["error"] for r in rows]), "worst_plan": worst["plan"],
              "contended": sum(r["contended"] for r in rows),
              "single_pass": _summary([r["first_pass_error"] for r in rows]),
              "unanchored": _summary([r["unanchored_error"] for r in rows]),
              "drift_corrected": _summary([r["drift_corrected_error"] for r in rows]),
              "anchor": {"reference_ms": {k: round(v, 3) for k, v in now.items()},
                         "at_calibration_ms": {k: then.get(k) for k in now},
                         "scale": round(anchored[0].scale, 4),
                         "moved_during_check": round(after[0] / now["keep-all"] - 1, 4)}}
    result["rows"] = rows
    return result


def _summary(errors) -> dict:
    e = np.asarray(errors, float)
    return {"mape": float(np.abs(e).mean()), "within_10pct": float((np.abs(e) <= 0.10).mean()),
            "worst": float(e[np.argmax(np.abs(e))])}


__all__ = [
    "FEATURES",
    "FEATURE_NAMES",
    "Grid",
    "anchor",
    "LatencyPredictor",
    "best",
    "build_table",
    "cache_key",
    "cache_path",
    "calibration_plans",
    "check",
    "cross_validate",
    "fit_costs",
    "fit_table",
    "get_predictor",
    "measure_plan",
    "measure_plans",
    "linear_shape",
    "max_rank",
    "model_dims",
    "plan_features",
    "random_plan",
    "structured_plan",
    "reference_plans",
    "warm_up",
    "with_precisions",
]
