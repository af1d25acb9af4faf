"""The options of ``autocompress search`` and what they build: :class:`SearchOptions` (every
option as plain data with its default; the CLI builds it from its flags, a study file from its
YAML), the config dataclasses it makes (:func:`search_configs`: every option checked before
anything is written), and the command itself (:func:`search_command`)."""

from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import dataclass, fields, replace

from .errors import UserError
from .spec import DEFAULT_TASK


@dataclass(frozen=True)
class SearchOptions:
    """Every option of ``autocompress search``, named as its flag (``--size-budget`` is
    ``size_budget``), with the flag's default. ``trials=None``: no trial limit (study files only:
    the time limit ends the run). ``started_at``: ``time.time()`` when the command began (the time
    limit covers set-up too)."""

    # the task (:class:`autocompress.spec.TaskSpec`)
    model: str = DEFAULT_TASK.model
    dataset: str = DEFAULT_TASK.dataset
    text_column: str = DEFAULT_TASK.text_column
    label_column: str = DEFAULT_TASK.label_column
    seed: int = DEFAULT_TASK.seed
    trust_remote_code: bool = False
    no_finetune: bool = False
    teacher_epochs: float = DEFAULT_TASK.teacher_epochs
    teacher_lr: float = DEFAULT_TASK.teacher_lr
    # the target (:class:`autocompress.latency.Target`; runtime "auto": the fastest here)
    runtime: str = "torch"
    threads: int | None = None
    batch_size: int = 1
    seq_len: int = 128
    # the budget and the search
    budget: str | None = None
    size_budget: str | None = None
    max_drop: float | None = None
    minimize_size: bool = False
    space: str = "allocated"
    sampler: str = "tpe"
    sampler_seed: int | None = None
    trials: int | None = 40
    time_limit: str = "20m"
    polish: float = 4.0
    workers: int = 1
    out: str | None = None
    study_name: str | None = None
    storage: str | None = None
    ray_address: str | None = None
    executor: str = "ray"
    no_baseline: bool = False
    predictor_grid: str = "default"
    json: bool = False
    started_at: float | None = None

    @classmethod
    def from_args(cls, args) -> "SearchOptions":
        """From parsed flags (an ``argparse.Namespace``; attributes that are not options are ignored)."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})

    def to_argv(self) -> list[str]:
        """The ``autocompress search`` arguments that give these options (those that differ from the
        defaults), e.g. to show the command a study file stands for."""
        argv = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "started_at" or value is None or value == f.default:
                continue
            flag = "--" + f.name.replace("_", "-")
            argv.append(flag if value is True else f"{flag}={value}")
        return argv


DEFAULTS = SearchOptions()


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse prints usage + message otherwise)
        raise UserError(f"{message} (see '{self.prog} --help')")


def task_options(p: argparse.ArgumentParser) -> None:
    """The options of :class:`autocompress.spec.TaskSpec`, with its defaults."""
    d = DEFAULT_TASK
    p.add_argument("--model", default=d.model,
                   help=f"catalog name, local safetensors folder or hub id (default {d.model})")
    p.add_argument("--dataset", default=d.dataset,
                   help=f"catalog name, local CSV/TSV/JSONL/parquet file or hub id (default {d.dataset})")
    p.add_argument("--text-column", default=d.text_column)
    p.add_argument("--label-column", default=d.label_column)
    p.add_argument("--seed", type=int, default=d.seed, help=f"seed of the data split and training (default {d.seed})")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow model code from the hub to run (off by default)")
    p.add_argument("--no-finetune", action="store_true",
                   help="use the model as the teacher as it is (it must already classify this task)")
    p.add_argument("--teacher-epochs", type=float, default=d.teacher_epochs)
    p.add_argument("--teacher-lr", type=float, default=d.teacher_lr)


def target_options(p: argparse.ArgumentParser) -> None:
    from .latency.runtime import runtime_names

    p.add_argument("--runtime", default=DEFAULTS.runtime,
                   help=f"{', '.join(runtime_names())}; for search also auto: the runtime on which the teacher runs "
                        "fastest here, measured first (default torch)")
    p.add_argument("--threads", type=int, default=None, help="threads (default: all cores)")
    p.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size)
    p.add_argument("--seq-len", type=int, default=DEFAULTS.seq_len)


def search_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--budget", help="latency budget on the target, p50 (e.g. 40ms, 0.04s), or a speed-up over "
                                    "the teacher measured on the target in the same run (e.g. 3x)")
    p.add_argument("--size-budget", help="size budget (e.g. 30MB, 28MiB); also adds size as an objective")
    p.add_argument("--max-drop", type=float, help="largest accuracy drop below the teacher, in points (e.g. 1.0)")
    p.add_argument("--minimize-size", action="store_true", help="add size as a third objective")
    p.add_argument("--space", default=DEFAULTS.space,
                   help="built-in space (allocated: the default; joint, structured, quant_only, diagnostic) or a YAML file")
    p.add_argument("--sampler", default=DEFAULTS.sampler, help="tpe, nsga2, gp or random (default tpe)")
    p.add_argument("--sampler-seed", type=int, default=None,
                   help="seed of the sampler alone (default: --seed); vary it to repeat a search on the same teacher")
    p.add_argument("--trials", type=int, default=DEFAULTS.trials, help=f"trials in this run (default {DEFAULTS.trials})")
    p.add_argument("--time-limit", default=DEFAULTS.time_limit,
                   help="wall-time limit of the whole command: teacher, calibration, search and polishing "
                        "(default 20m; 'none' for none)")
    p.add_argument("--polish", type=float, default=DEFAULTS.polish,
                   help="after the search, retrain the pick and the front members within budget with this many "
                        "times their KD steps, as the time limit allows (default 4; 0: off)")
    p.add_argument("--workers", type=int, default=DEFAULTS.workers, help="trials at once (default 1)")
    p.add_argument("--out", help="output folder (default runs/STUDY_NAME)")
    p.add_argument("--study-name", help="study name (default MODEL-DATASET-SPACE-SAMPLER, then the runtime unless torch); "
                                        "same name continues it")
    p.add_argument("--storage", help="Optuna storage URL (default: SQLite in the out folder); journal:PATH for a journal file")
    p.add_argument("--ray-address", help="join an existing Ray cluster (default: start a local one)")
    p.add_argument("--executor", choices=("ray", "local"), default=DEFAULTS.executor,
                   help="ray: trials on Ray Tune workers (default); local: one at a time in this process, "
                        "without Ray (debugging, machines without Ray)")
    p.add_argument("--no-baseline", action="store_true",
                   help="do not warm-start with the decision-tree baseline and the one-minute recipes")
    p.add_argument("--predictor-grid", choices=("default", "tiny"), default=DEFAULTS.predictor_grid,
                   help="latency table resolution (tiny: fast and coarse, for small test models)")


def study_name(args) -> str:
    """MODEL-DATASET-SPACE-SAMPLER, plus the runtime when it is not torch (a study keeps its target:
    the same search on another runtime is another study)."""
    from pathlib import Path

    parts = [Path(str(args.model)).name, Path(str(args.dataset)).name.split(".")[0], Path(str(args.space)).stem, args.sampler]
    if args.runtime != "torch":
        parts.append(args.runtime)
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", "-".join(parts))


def search_configs(args: SearchOptions):
    """(SearchConfig, RunConfig) from the options; every option is checked here."""
    from pathlib import Path

    from .objectives import Budget, parse_duration
    from .runner import RunConfig, SearchConfig
    from .search.samplers import SAMPLERS
    from .search.spaces import load_space

    if args.sampler not in SAMPLERS:
        raise UserError(f"unknown sampler '{args.sampler}'; choose one of {', '.join(SAMPLERS)}")
    if args.trials is not None and args.trials < 1:
        raise UserError(f"--trials must be >= 1, got {args.trials}")
    if args.workers < 1:
        raise UserError(f"--workers must be >= 1, got {args.workers}")
    if args.executor not in ("ray", "local"):
        raise UserError(f"unknown executor '{args.executor}'; choose ray or local")
    if args.executor == "local" and (args.workers > 1 or args.ray_address):
        raise UserError("--executor local runs one trial at a time in this process: "
                        "drop --workers/--ray-address or use --executor ray")
    if not args.polish >= 0:
        raise UserError(f"--polish must be >= 0 (a factor of the KD steps; 0 turns polishing off), got {args.polish}")
    load_space(args.space)  # validate now, before any training
    budget = Budget.from_args(args)
    limit = None if str(args.time_limit).lower() in ("none", "0") else parse_duration(args.time_limit)
    name = args.study_name or study_name(args)
    seed = args.seed if args.sampler_seed is None else args.sampler_seed
    search = SearchConfig(space=args.space, sampler=args.sampler, seed=seed, trials=args.trials,
                          time_limit_s=limit, workers=args.workers, budget=budget,
                          with_size=bool(args.minimize_size or args.size_budget),
                          warm_start=("teacher",) if args.no_baseline else ("teacher", "baseline", "recipes"),
                          predictor_grid=args.predictor_grid, polish=args.polish,
                          started_at=args.started_at or time.time())
    run = RunConfig(out=Path(args.out or Path("runs") / name), study_name=name, storage=args.storage,
                    ray_address=args.ray_address, executor=args.executor)
    return search, run


def search_command(args: SearchOptions) -> int:
    """``autocompress search``: run the search the options describe and print its answer."""
    from .context import TaskContext
    from .latency import Target
    from .report import front_table
    from .runner import open_storage, prepare_out, run_search

    auto = args.runtime == "auto"  # the fastest runtime here, measured once the teacher is known
    target = Target.from_args(replace(args, runtime="torch") if auto else args)
    search, run = search_configs(args)
    if run.out.exists() and not run.out.is_dir():
        raise UserError(f"--out {run.out} exists and is not a folder")
    if run.storage:
        open_storage(run.storage)  # fail fast on a storage that cannot be opened
    ctx = TaskContext.from_args(args, progress=True)  # model, data and columns are checked here
    ctx.check_target(target)
    figures = None
    if auto:
        from .latency.auto import fastest_runtime

        target, figures = fastest_runtime(ctx, target)
    prepare_out(run.out)  # only now: bad input leaves no output folder behind
    if figures is not None:
        from . import cache

        cache.atomic_write_json(run.out / "runtime_auto.json", {"chosen": target.runtime, "teacher": figures})
    result = run_search(ctx, target, search, run, progress=True)
    summary = result.summary
    if args.json:
        print(json.dumps(summary["recommended_json"], indent=2))
        return 0
    print(f"\nPareto front of study '{run.study_name}' ({len(summary['rows'])} trials, "
          f"{len(summary['full'])} fully evaluated) — {target.describe()}")
    print(front_table(summary["front"]))
    rec = summary["recommended"]
    if rec is None:
        print("no candidate completed")
    elif summary["meets_budget"]:
        print(f"recommended: trial {rec['number']} — {summary['why']}: validation accuracy {rec['accuracy']:.4f}, "
              f"p50 {rec['latency_ms']:.2f} ms, {rec['size_mb']:.1f} MB")
    else:
        print(f"!!! {summary['why']}: trial {rec['number']} (accuracy {rec['accuracy']:.4f}, "
              f"p50 {rec['latency_ms']:.2f} ms, {rec['size_mb']:.1f} MB)")
    if result.interrupted:
        print("(stopped early; run the same command again to continue the study)")
    print(f"outputs: {run.out}/ (pareto.json, recommended.json, trials.csv, pareto.png, report.md)")
    return 0


def add_search_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Every option of ``autocompress search`` on ``p``, which then runs :func:`search_command`."""
    task_options(p)
    target_options(p)
    search_options(p)
    p.add_argument("--json", action="store_true", help="print the recommendation as JSON")
    p.set_defaults(func=lambda args: search_command(SearchOptions.from_args(args)))
    return p
