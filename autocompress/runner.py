"""Run a search: Optuna samples plans, Ray Tune workers evaluate them, outputs come from the study.

Split as Ray Tune does it: *what runs* is a :class:`~autocompress.context.TaskContext` on a
:class:`~autocompress.latency.Target`; *how to search* is a :class:`SearchConfig`; *where results
go* is a :class:`RunConfig`. The study lives in Optuna storage (SQLite in the out dir by default),
so running the same command again continues the same study.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import UserError
from .objectives import Budget
from .plan import CompressionPlan
from .search.searcher import forced_full
from .search.storage import STALE, open_storage, open_study, owner_alive  # noqa: F401 (the runner's API)
from .search.workers import (end_stopper, fit_tuner, make_trainable, progress_callback, run_local, run_trial,
                             trials_end)

# Ray Tune's per-trial overhead is mostly its default loggers and new actors per trial.
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("TUNE_RESULT_BUFFER_LENGTH", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "0")


@dataclass(frozen=True)
class SearchConfig:
    """How to search."""

    space: str = "joint"
    sampler: str = "tpe"
    seed: int = 0
    trials: int | None = 40
    time_limit_s: float | None = None
    workers: int = 1
    budget: Budget = Budget()
    with_size: bool = False
    warm_start: tuple[str, ...] = ("teacher", "baseline", "recipes")
    predictor_grid: str = "default"  # "tiny": a fast, coarse latency table (small test models)
    polish: float = 4.0              # retrain the pick with this many times its KD steps (0: off)
    started_at: float | None = None  # time.time() when the command began: the time limit covers set-up too

    def deadline(self) -> float | None:
        """When the whole command must be done (None: no time limit)."""
        if self.time_limit_s is None:
            return None
        return (self.started_at or time.time()) + self.time_limit_s


@dataclass(frozen=True)
class RunConfig:
    """Where results go."""

    out: Path
    study_name: str = "autocompress"
    storage: str | None = None  # default: sqlite:///OUT/study.db
    ray_address: str | None = None
    keep_models: str = "front"  # "front" (front + recommended) or "all"
    executor: str = "ray"  # "ray": Ray Tune workers; "local": one trial at a time in this process, no Ray

    def __post_init__(self) -> None:
        # absolute: Ray Tune runs each trial in a working directory of its own, so a relative
        # folder would put the trials' saved models there instead of under ``out``
        object.__setattr__(self, "out", Path(self.out).absolute())

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{(self.out / 'study.db').resolve()}"


@dataclass
class SearchResult:
    out: Path
    summary: dict = field(repr=False)
    interrupted: bool = False


def prepare_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)


def _reference(ctx, target, out: Path):
    """The run's reference: the teacher, saved once in ``out/reference`` and timed beside every
    candidate, and its p50 when first measured there (the run's frame, kept when the run is
    continued). Returns ``(Reference, the teacher's p50 measured now, seconds that measurement took)``."""
    from . import cache
    from .apply import compress
    from .latency.isolated import Reference, measure_saved

    folder = out / "reference"
    key = {"teacher": ctx.fingerprint, "target": target.to_dict()}
    frame = folder / "frame.json"
    known = json.loads(frame.read_text()) if frame.is_file() else {}
    if known.get("key") != key or not (folder / "model").is_dir():
        with cache.atomic_dir(folder / "model", replace=True) as tmp:
            compress(CompressionPlan.keep_all("teacher"), ctx, progress=False).save_pretrained(tmp)
        known = {}
    start = time.perf_counter()
    now = measure_saved(folder / "model", target).p50
    seconds = time.perf_counter() - start
    if not known:
        known = {"key": key, "p50": round(now, 4), "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        cache.atomic_write_json(frame, known)
    return Reference(folder / "model", float(known["p50"])), now, seconds


def run_search(ctx, target, search: SearchConfig, run: RunConfig, *, progress: bool = True) -> SearchResult:
    import optuna

    from .compressed import count_params
    from .latency.features import Grid, calibration_grid
    from .latency.predictor import anchor, get_predictor, with_precisions
    from .report import summarise, write_outputs
    from .search.fidelity import Promoter, result_hook, study_points
    from .search.fit import estimate
    from .search.polish import polish
    from .search.searcher import StudySearcher
    from .search.spaces import load_space

    prepare_out(run.out)
    deadline = search.deadline()
    space, dims = load_space(search.space), ctx.dims()
    space.check_model(dims["num_layers"])
    reference, teacher_now, measure_s = _reference(ctx, target, run.out)
    teacher_latency = reference.p50  # the frame every figure of this run is put in (see latency.isolated)
    search = replace(search, budget=search.budget.resolve(teacher_latency))  # '3x' becomes ms
    precisions = getattr(space, "offered_precisions", tuple)()  # bf16 plans: a latency table of their own
    grid = Grid.tiny() if search.predictor_grid == "tiny" else calibration_grid(
        target, teacher_latency, count_params(ctx.teacher_model()), precisions)  # sized to the model: minutes
    predictor = get_predictor(ctx.teacher_model(), target, progress=progress, grid=grid)
    predictor = with_precisions(anchor(predictor, ctx.teacher_model(), target, grid=grid), ctx.teacher_model(),
                                precisions, grid=grid, progress=progress)  # each table anchored to the speed now
    predictor = predictor.rescaled(teacher_latency / teacher_now)  # in the run's frame (they differ when continued)
    space = space.prepare(ctx=ctx, predictor=predictor, budget_ms=search.budget.latency_ms,
                          size_mb=search.budget.size_mb, progress=progress)
    study, objectives = open_study(ctx, target, search, run, dims, teacher_latency)
    study.set_user_attr("latency_predictor", {"table": str(predictor.path), "scale": round(predictor.scale, 4)})
    study.set_user_attr("reference", {**reference.to_dict(), "now_ms": round(teacher_now, 4)})
    study.set_user_attr("space_dropped", list(getattr(space, "dropped", ())))
    baseline_plan = None
    if "baseline" in search.warm_start:
        from .baseline import baseline

        baseline_plan = baseline(ctx, target, search.budget, predictor=predictor, kd_steps=space.kd_steps).plan
    enqueued = _warm_start(study, space, dims, search, baseline_plan)
    stop_at = _search_stop(deadline, study, search, space, ctx, measure_s)
    space, fit = estimate(ctx, space, teacher_latency, None if stop_at is None else stop_at() - time.time(),
                          recorded=study.user_attrs.get("screening"))  # screening sized to the model (search.fit)
    study.set_user_attr("screening", {"screen_steps": space.fidelity.screen_steps, "screen_score":
                                      space.fidelity.screen_score, "kd_scale": getattr(space, "kd_scale", None)})
    forced = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)) if forced_full(t)]
    steps = {"teacher": 0, "baseline": baseline_plan.distill.steps if baseline_plan is not None else 0}
    fit = replace(fit, queued_s=sum(fit.full_run_s(steps.get(t.user_attrs["warm_start"], space.kd_steps))
                                    for t in forced), queued=len(forced))
    study.set_user_attr("fit", {"screen_s": round(fit.screen_s, 1), "full_s": round(fit.full_s, 1),
                                "step_s": round(fit.step_s, 3), "fits": fit.fits(), "line": fit.line()})
    if progress:
        for line in filter(None, (fit.screening, fit.line())):
            print(f"autocompress: {line}", file=sys.stderr)
    if fit.warning():
        print(f"autocompress: warning: {fit.warning()}", file=sys.stderr)

    teacher_acc = ctx.teacher.metrics["validation_accuracy"]
    searcher = StudySearcher(study, space, dims, objectives, search.budget, teacher_acc, max_trials=search.trials,
                             stop_at=stop_at, min_trials=enqueued)
    searcher.step_s = fit.step_s  # a screen without KD steps: its full run at the measured step speed
    callback = progress_callback(search, progress, teacher_acc, search.budget, fit, stop_at)
    start = time.time()
    interrupted = False
    previous_handler = signal.getsignal(signal.SIGINT)
    try:
        if run.executor == "local":
            promoter = Promoter(space.fidelity, search.budget, deadline=stop_at and stop_at.end())
            screened, measured = study_points(study)  # a continued study: the rule knows its points
            for accuracy, latency_ms in screened:
                promoter.decide(accuracy, latency_ms, True)
            for point in measured:
                promoter.measure(*point)
            searcher.on_result = result_hook(lambda name, *args: getattr(promoter, name)(*args), stop_at)
            run_local(searcher, lambda config: run_trial(
                config, ctx, target, space.fidelity, promoter.decide, run.out / "models", os.cpu_count() or 1,
                predictor, reference), callback, trials_end(deadline, stop_at))
        else:
            interrupted = _run_ray(ctx, target, search, run, space, study, searcher, callback, deadline,
                                   predictor, reference)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        signal.signal(signal.SIGINT, previous_handler)
        callback.close()
        searcher.stop_live("interrupted: the search was stopped")
        study.set_user_attr("wall_seconds", study.user_attrs.get("wall_seconds", 0.0) + time.time() - start)
        interrupted = interrupted or callback.interrupted
    _final_remeasure(study, target, reference, progress=progress)
    if not interrupted and search.polish > 0:
        try:
            # a polished plan is timed again and may then miss the budget, which moves the pick to
            # another trial: polish the new pick too (a few rounds at most; each skips what is done)
            for _ in range(3):
                if not polish(study, summarise(study), ctx, target, factor=search.polish, deadline=deadline,
                              models_dir=run.out / "models", reference=reference, progress=progress):
                    break
        except KeyboardInterrupt:
            interrupted = True
    summary = write_outputs(study, run.out)
    _prune_models(summary, run)
    return SearchResult(out=run.out, summary=summary, interrupted=interrupted)


def _run_ray(ctx, target, search: SearchConfig, run: RunConfig, space, study, searcher, callback,
             deadline: float | None, predictor, reference) -> bool:
    """The trials on Ray Tune (a local Ray instance, or the cluster at ``run.ray_address``), as many
    at once as ``search.workers``. Returns whether the run was interrupted."""
    import ray
    from ray import tune

    from .search.fidelity import Promoter, result_hook, study_points

    started_here = False
    if not ray.is_initialized():
        kwargs = dict(include_dashboard=False, logging_level="ERROR", log_to_driver=False, configure_logging=True)
        if run.ray_address:
            ray.init(address=run.ray_address, **kwargs)
        else:
            # "local": our own instance (address=None would attach to any running one, then refuse num_cpus)
            ray.init(address="local", num_cpus=os.cpu_count() or 1, **kwargs)
        started_here = True
    try:
        total_cpus = int(ray.cluster_resources().get("CPU", 1))
        cpus_per_trial = (max(1, total_cpus // max(1, search.workers)) if not run.ray_address
                          else max(1, (os.cpu_count() or 1) // max(1, search.workers)))
        stop_at = searcher.stop_at
        promoter = ray.remote(num_cpus=0)(Promoter).remote(space.fidelity, search.budget,
                                                           deadline=stop_at and stop_at.end())
        screened, measured = study_points(study)
        ray.get([promoter.decide.remote(accuracy, latency_ms, True) for accuracy, latency_ms in screened])
        ray.get([promoter.measure.remote(*point) for point in measured])
        searcher.on_result = result_hook(lambda name, *args: getattr(promoter, name).remote(*args), stop_at)
        payload = ray.put(ctx)
        trainable = make_trainable([payload], ctx.fingerprint, target, space.fidelity, promoter, run.out / "models",
                                   cpus_per_trial, predictor, reference)
        end = trials_end(deadline, stop_at)  # the re-measurement of the front comes before the deadline
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": cpus_per_trial}),
            tune_config=tune.TuneConfig(search_alg=searcher, num_samples=search.trials or -1,
                                        max_concurrent_trials=search.workers, reuse_actors=True,
                                        time_budget_s=None if deadline is None else max(30.0, deadline - time.time())),
            run_config=tune.RunConfig(name=f"{run.study_name}-{int(time.time())}",
                                      storage_path=str((run.out / "ray").resolve()),
                                      verbose=0, callbacks=[callback], log_to_file=False, stop=end and end_stopper(end),
                                      checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False)))
        return fit_tuner(tuner)
    finally:
        if started_here:
            ray.shutdown()


#: The final re-measurement of a front member times it and the reference beside it: about this
#: many times one timing of the teacher (measured when the run starts).
REMEASURE_TIMINGS = 2.0


def _search_stop(deadline: float | None, study, search: SearchConfig, space, ctx, measure_s: float = 0.0):
    """When to stop sampling: the deadline less the final re-measurement of the front (``measure_s``
    per timing, :data:`REMEASURE_TIMINGS` per member; ``stop_at.end()``, also the deadline for full
    runs) and less polishing the pick (:func:`.search.polish.reserve_seconds`; before any recovery
    was timed, at the teacher's fine-tuning speed), at most a third of the search's time. Before the
    first was kept back, a 15-minute OpenVINO search ended 49 s late. When the third, or the time
    left, cannot hold the shortest polish worth doing (:data:`.search.polish.MIN_FACTOR` × the
    pick's recovery), nothing is kept back and the search samples on: in runs/planner18-19 the
    warm starts or the trial in flight ran past the stop, the polish no longer fitted, and
    commands left 2-6 of their 20 minutes unused."""
    if deadline is None:
        return None
    from .report import summarise
    from .search.polish import MIN_FACTOR, reserve_seconds

    start = time.time()
    train = ctx.teacher.info.get("train") or {}
    teacher_step_s = train["seconds"] / train["steps"] if train.get("steps") else 0.5

    def ends(summary: dict) -> float:  # the deadline less the final re-measurement
        return deadline - REMEASURE_TIMINGS * measure_s * sum(1 for r in summary["front"] if r.get("model_dir"))

    def stop_at() -> float:
        summary = summarise(study) if study.trials else {"front": []}
        end = ends(summary)
        if search.polish <= 0:
            return end
        done = [t.user_attrs for t in study.get_trials(deepcopy=False)
                if t.user_attrs.get("fidelity") == "full" and t.user_attrs.get("kd_steps")
                and t.user_attrs.get("recovery_seconds")]
        pick = summary.get("recommended")
        reserve = min(reserve_seconds(pick, done, search.polish, space.kd_steps, teacher_step_s), (end - start) / 3)
        least = reserve_seconds(pick, done, min(MIN_FACTOR, search.polish), space.kd_steps, teacher_step_s)
        if least > reserve or least > end - time.time():
            return end  # no polish worth doing fits (any more): the time is the search's
        return end - reserve

    stop_at.end = lambda: ends(summarise(study) if study.trials else {"front": []})  # full runs end by it
    return stop_at


def _warm_start(study, space, dims, search: SearchConfig, baseline_plan) -> int:
    """First trials, once per study: the uncompressed teacher, the decision-tree baseline, and the
    recipes a user writes in a minute as points of the space (:meth:`AllocatedSpace.recipes`), so
    the front starts at least as good as those and the sampler learns from them. Returns how
    many were enqueued now."""
    import optuna

    waiting = (optuna.trial.TrialState.WAITING,)
    done = {t.user_attrs.get("warm_start") for t in study.get_trials(deepcopy=False)}
    before = len(study.get_trials(deepcopy=False, states=waiting))
    if "teacher" in search.warm_start and "teacher" not in done:
        params = space.keep_all_params(dims["num_layers"])
        if params is not None:
            study.enqueue_trial(params, user_attrs={"warm_start": "teacher", "plan_name": "teacher"})
        else:  # a space that cannot express the teacher by parameters
            study.enqueue_trial({}, user_attrs={"warm_start": "teacher", "plan_name": "teacher",
                                                "fixed_plan": CompressionPlan.keep_all("teacher").to_dict()})
    if "baseline" in search.warm_start and "baseline" not in done and baseline_plan is not None:
        params = space.params_for(baseline_plan, dims)
        if params is not None:  # inside the space: the sampler learns from it like from any trial
            study.enqueue_trial(params, user_attrs={"warm_start": "baseline", "plan_name": baseline_plan.name})
        else:
            study.enqueue_trial({}, user_attrs={"warm_start": "baseline", "fixed_plan": baseline_plan.to_dict()})
    if "recipes" in search.warm_start and hasattr(space, "recipes"):
        # without a latency budget each recipe is the front's one-minute point at its speed-up, and
        # no other trial is aimed there: all run in full (a screen had dropped one that was a front
        # member on another seed, runs/planner17). Under a budget they compete at it and are screened.
        force = {} if getattr(space, "budgeted", True) else {"force_full": True}
        for name, params in space.recipes():
            if name not in done:
                study.enqueue_trial(params, user_attrs={"warm_start": name, **force})
    return len(study.get_trials(deepcopy=False, states=waiting)) - before


def _final_remeasure(study, target, reference=None, *, progress: bool) -> None:
    """Measure every fully evaluated front member again, alone on the machine (Ray stopped), from its
    saved folder in a fresh process beside the reference, as during the search. A re-measured
    member can leave the front and let another in: that one is measured too (a few rounds at
    most). A member whose folder cannot be measured keeps its in-search figure, with a warning:
    the run's results are not lost at the last step."""
    from .compressed import MANIFEST
    from .latency.isolated import measure_saved
    from .progress import progress_bar
    from .report import summarise
    remeasured = dict(study.user_attrs.get("remeasured", {}))
    failed: set[str] = set()
    for _ in range(4):
        members = [r for r in summarise(study)["front"] if r.get("model_dir") and Path(r["model_dir"]).is_dir()
                   and str(r["number"]) not in remeasured and str(r["number"]) not in failed]
        if not members:
            return
        for row in progress_bar(members, desc="re-measure front", enabled=progress):
            if not (Path(row["model_dir"]) / MANIFEST).is_file():
                failed.add(str(row["number"]))
                print(f"autocompress: warning: trial {row['number']}: {row['model_dir']} is not a saved model; "
                      "its in-search latency stands", file=sys.stderr)
                continue
            try:
                stats = measure_saved(row["model_dir"], target, runs=50, reference=reference)
            except RuntimeError as exc:
                failed.add(str(row["number"]))
                print(f"autocompress: warning: trial {row['number']}: {exc}; its in-search latency stands",
                      file=sys.stderr)
                continue
            remeasured[str(row["number"])] = {"p50": round(stats.p50, 3), "p90": round(stats.p90, 3),
                                              "raw_p50": round(stats.raw_p50 or stats.p50, 3),
                                              "during_search_p50": row["latency_ms"]}
            study.set_user_attr("remeasured", remeasured)  # finished trials cannot be updated in Optuna


def _prune_models(summary: dict, run: RunConfig) -> None:
    """Keep the saved models of the front and the recommendation (unless keep_models == 'all')."""
    import shutil

    if run.keep_models == "all":
        return
    keep = {r.get("model_dir") for r in summary["front"]}
    keep |= {(r.get("search") or {}).get("model_dir") for r in summary["front"]}  # a polished member's search model
    if summary["recommended"]:
        keep.add(summary["recommended"].get("model_dir"))
    folder = run.out / "models"
    if folder.is_dir():
        for child in folder.iterdir():
            if str(child) not in keep:
                shutil.rmtree(child, ignore_errors=True)
