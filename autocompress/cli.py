"""The ``autocompress`` command line.

Every bad input ends in one line on stderr and exit code 2; Ctrl-C ends with exit code 130
after the command has cleaned up (nothing half-written).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from .errors import UserError

DEFAULT_MODEL = "minilm-l6"
DEFAULT_DATASET = "rotten-tomatoes"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse prints usage + message otherwise)
        raise UserError(f"{message} (see '{self.prog} --help')")


def _task_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"catalog name, local safetensors folder or hub id (default {DEFAULT_MODEL})")
    p.add_argument("--dataset", default=DEFAULT_DATASET,
                   help=f"catalog name, local CSV/TSV/JSONL/parquet file or hub id (default {DEFAULT_DATASET})")
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="label")
    p.add_argument("--seed", type=int, default=0, help="seed of the data split and training (default 0)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow model code from the hub to run (off by default)")
    p.add_argument("--no-finetune", action="store_true",
                   help="use the model as the teacher as it is (it must already classify this task)")
    p.add_argument("--teacher-epochs", type=float, default=2.0)
    p.add_argument("--teacher-lr", type=float, default=1e-4)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="autocompress", description=__doc__.splitlines()[1] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p_assets = sub.add_parser("assets", help="list or fetch catalog models and datasets")
    a_sub = p_assets.add_subparsers(dest="assets_command", required=True, parser_class=_Parser)
    a_list = a_sub.add_parser("list", help="catalog entries and whether they are cached")
    a_list.add_argument("--json", action="store_true")
    a_fetch = a_sub.add_parser("fetch", help="fetch a catalog entry into the cache (sha256-checked)")
    a_fetch.add_argument("name")
    a_fetch.add_argument("--verify", action="store_true", help="re-hash a cached copy")
    a_fetch.set_defaults(func=_assets_fetch)
    a_list.set_defaults(func=_assets_list)

    p_teacher = sub.add_parser("teacher", help="fine-tune (or reuse the cached) teacher for a task")
    _task_options(p_teacher)
    p_teacher.add_argument("--json", action="store_true", help="print the result as JSON")
    p_teacher.set_defaults(func=_teacher)

    p_plan = sub.add_parser("plan", help="inspect compression plans")
    pl_sub = p_plan.add_subparsers(dest="plan_command", required=True, parser_class=_Parser)
    pl_show = pl_sub.add_parser("show", help="validate a plan against a model and print it per layer")
    pl_show.add_argument("plan")
    pl_show.add_argument("--model", default=DEFAULT_MODEL)
    pl_show.add_argument("--json", action="store_true", help="print the resolved per-layer plan as JSON")
    pl_show.set_defaults(func=_plan_show)

    p_apply = sub.add_parser("apply", help="build a compressed model from a plan and evaluate it")
    p_apply.add_argument("--plan", required=True)
    p_apply.add_argument("--out", required=True, help="folder to write (replaced if it is a previous output)")
    _task_options(p_apply)
    _target_options(p_apply)
    p_apply.add_argument("--json", action="store_true")
    p_apply.set_defaults(func=_apply)

    p_eval = sub.add_parser("evaluate", help="accuracy, fidelity, size, FLOPs and latency of a compressed model")
    p_eval.add_argument("dir")
    _target_options(p_eval)
    p_eval.add_argument("--json", action="store_true")
    p_eval.set_defaults(func=_evaluate)

    from .latency import commands as latency_commands

    latency_commands.register(sub, _Parser)

    p_search = sub.add_parser("search", help="search compression plans: Pareto set and the best plan under budget")
    _task_options(p_search)
    _target_options(p_search)
    _search_options(p_search)
    p_search.add_argument("--json", action="store_true", help="print the recommendation as JSON")
    p_search.set_defaults(func=_search)

    p_base = sub.add_parser("baseline", help="the survey decision-tree plan, evaluated as a search trial")
    _task_options(p_base)
    _target_options(p_base)
    p_base.add_argument("--budget", help="latency budget p50 (e.g. 40ms)")
    p_base.add_argument("--size-budget", help="size budget (e.g. 30MB)")
    p_base.add_argument("--max-drop", type=float, help="accuracy points the plan may lose")
    p_base.add_argument("--kd-steps", type=int, default=300, help="KD recovery steps when structure changes")
    p_base.add_argument("--out", help="output folder (default runs/baseline-BUDGET)")
    p_base.add_argument("--explain", action="store_true", help="print the decision tree and exit")
    p_base.add_argument("--json", action="store_true")
    p_base.set_defaults(func=_baseline)

    p_cmp = sub.add_parser("compare", help="compare search runs and baselines on one plane")
    p_cmp.add_argument("runs", nargs="+", help="search output folders and baseline folders")
    p_cmp.add_argument("--budget", action="append", default=[], help="report the best accuracy under this latency (repeatable)")
    p_cmp.add_argument("--reference", help="hypervolume reference ACC,MS (default: teacher accuracy - 0.10, teacher latency)")
    p_cmp.add_argument("--out", help="write compare.md, compare.png, compare.json here")
    p_cmp.set_defaults(func=_compare)
    from . import export as export_commands
    from . import study as study_commands

    export_commands.register(sub, _Parser, _target_options)
    study_commands.register(sub, _Parser)
    return parser


def _search_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--budget", help="latency budget on the target, p50 (e.g. 40ms, 0.04s), or a speed-up over "
                                    "the teacher measured on the target in the same run (e.g. 3x)")
    p.add_argument("--size-budget", help="size budget (e.g. 30MB, 28MiB); also adds size as an objective")
    p.add_argument("--max-drop", type=float, help="largest accuracy drop below the teacher, in points (e.g. 1.0)")
    p.add_argument("--minimize-size", action="store_true", help="add size as a third objective")
    p.add_argument("--space", default="allocated",
                   help="built-in space (allocated: the default; joint, structured, quant_only, diagnostic) or a YAML file")
    p.add_argument("--sampler", default="tpe", help="tpe, nsga2, gp or random (default tpe)")
    p.add_argument("--sampler-seed", type=int, default=None,
                   help="seed of the sampler alone (default: --seed); vary it to repeat a search on the same teacher")
    p.add_argument("--trials", type=int, default=40, help="trials in this run (default 40)")
    p.add_argument("--time-limit", default="20m",
                   help="wall-time limit of the whole command: teacher, calibration, search and polishing "
                        "(default 20m; 'none' for none)")
    p.add_argument("--polish", type=float, default=4.0,
                   help="after the search, retrain the pick and the front members within budget with this many "
                        "times their KD steps, as the time limit allows (default 4; 0: off)")
    p.add_argument("--workers", type=int, default=1, help="trials at once (default 1)")
    p.add_argument("--out", help="output folder (default runs/STUDY_NAME)")
    p.add_argument("--study-name", help="study name (default MODEL-DATASET-SPACE-SAMPLER); same name continues it")
    p.add_argument("--storage", help="Optuna storage URL (default: SQLite in the out folder); journal:PATH for a journal file")
    p.add_argument("--ray-address", help="join an existing Ray cluster (default: start a local one)")
    p.add_argument("--no-baseline", action="store_true",
                   help="do not warm-start with the decision-tree baseline and the one-minute recipes")
    p.add_argument("--predictor-grid", choices=("default", "tiny"), default="default",
                   help="latency table resolution (tiny: fast and coarse, for small test models)")


def _target_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runtime", default="torch", help="torch or onnxruntime (default torch)")
    p.add_argument("--threads", type=int, default=None, help="threads (default: all cores)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--seq-len", type=int, default=128)


def main(argv: list[str] | None = None) -> int:
    started = time.time()
    try:
        args = build_parser().parse_args(argv)
        args.started_at = started  # time limits cover the whole command
        return args.func(args) or 0
    except UserError as exc:
        print(f"autocompress: error: {exc}", file=sys.stderr)
        return UserError.exit_code
    except KeyboardInterrupt:
        print("autocompress: interrupted", file=sys.stderr)
        return 130


# ---------------------------------------------------------------- commands


def _assets_list(args) -> int:
    from . import assets

    rows = assets.listing()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        state = f"cached at {row['cached']}" if row["cached"] else "not cached"
        print(f"{row['name']:<16} {row['kind']:<8} {row['license']:<11} {row['description']}")
        print(f"{'':<16} sources: {' → '.join(['cache'] + row['sources'])}; {state}")
    return 0


def _assets_fetch(args) -> int:
    from . import assets

    folder = assets.fetch(args.name, verify=args.verify)
    print(folder)
    return 0


def load_task_and_teacher(args, *, progress: bool = True):
    """Resolve ``--model``/``--dataset`` and return ``(source, task, teacher, from_cache)``."""
    from .data import load_task
    from .models import resolve_model
    from .teacher import TeacherConfig, get_teacher

    source = resolve_model(args.model)
    task = load_task(args.dataset, text_column=args.text_column, label_column=args.label_column, seed=args.seed)
    config = TeacherConfig(epochs=args.teacher_epochs, lr=args.teacher_lr, seed=args.seed,
                           finetune=not args.no_finetune)
    teacher, cached = get_teacher(source, task, config, progress=progress,
                                  trust_remote_code=args.trust_remote_code)
    return source, task, teacher, cached


def _teacher(args) -> int:
    start = time.perf_counter()
    _, task, teacher, cached = load_task_and_teacher(args, progress=True)
    result = {
        "teacher": str(teacher.path), "from_cache": cached,
        "validation_accuracy": teacher.metrics["validation_accuracy"],
        "test_accuracy": teacher.metrics["test_accuracy"],
        "train_seconds": teacher.info["seconds"], "wall_seconds": round(time.perf_counter() - start, 1),
        "dataset": {"name": task.name, "sizes": task.sizes(), "labels": list(task.label_names)},
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        how = "from cache" if cached else f"trained in {result['train_seconds']:.0f} s"
        print(f"teacher: validation accuracy {result['validation_accuracy']:.4f}, "
              f"test accuracy {result['test_accuracy']:.4f} ({how})")
        print(f"saved at {teacher.path}")
    return 0


def _load_plan_for(plan_path: str, model_spec: str):
    """Load a plan and resolve it against the model's shape (cheap: config only)."""
    from .models import model_dims, resolve_model
    from .plan import CompressionPlan

    plan = CompressionPlan.load(plan_path)
    dims = model_dims(resolve_model(model_spec).path)
    return plan, dims, plan.resolve(dims["num_layers"], dims["num_heads"], dims["intermediate_size"],
                                    dims["hidden_size"])


def _plan_show(args) -> int:
    plan, dims, resolved = _load_plan_for(args.plan, args.model)
    if args.json:
        from .compressed import _layer_to_dict

        print(json.dumps({"plan": plan.to_dict(), "resolved": [_layer_to_dict(r) for r in resolved]}, indent=2))
    else:
        print(plan.table(dims["num_layers"], dims["num_heads"], dims["intermediate_size"], dims["hidden_size"]))
    return 0


def _check_out_dir(out: str) -> None:
    from pathlib import Path

    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not (path / "autocompress.json").is_file():
        raise UserError(f"--out {out} is a non-empty folder that autocompress did not write; choose another")


def _print_metrics(metrics: dict) -> None:
    lat = metrics.get("latency")
    print(f"accuracy  {metrics['accuracy']:.4f}   (validation {metrics['validation_accuracy']:.4f})")
    print(f"fidelity  {metrics['fidelity']:.4f}   (agreement with the teacher's test predictions)")
    print(f"params    {metrics['params'] / 1e6:.2f} M")
    print(f"size      {metrics['size_mb']:.1f} MB  (weights as they run)")
    print(f"GFLOPs    {metrics['gflops']:.3f}  per example at seq {lat['target']['seq_len'] if lat else '?'}")
    if lat:
        t = lat["target"]
        print(f"latency   p50 {lat['p50']:.2f} ms, p90 {lat['p90']:.2f} ms, spread {lat['spread']:.1%} "
              f"({t['runtime']}, {t['threads']} threads, batch {t['batch_size']}, seq {t['seq_len']}, {lat['runs']} runs)")


def _apply(args) -> int:
    from .apply import compress
    from .context import TaskContext
    from .evaluate import evaluate
    from .latency import Target

    target = Target.from_args(args)
    plan, _, _ = _load_plan_for(args.plan, args.model)  # fail fast, before any training
    _check_out_dir(args.out)
    ctx = TaskContext.from_args(args, progress=True)
    cm = compress(plan, ctx, progress=True)
    metrics = evaluate(cm, ctx, target)
    out = cm.save_pretrained(args.out, metrics=metrics)
    if args.json:
        print(json.dumps({"out": str(out), "plan": plan.name, "metrics": metrics, "build": cm.info}, indent=2))
    else:
        print(f"plan '{plan.name}' applied in {cm.info['build_seconds']:.1f} s; saved to {out}")
        _print_metrics(metrics)
    return 0


def _evaluate(args) -> int:
    from .compressed import load
    from .context import TaskContext
    from .evaluate import evaluate
    from .latency import Target

    target = Target.from_args(args)
    cm = load(args.dir)
    spec = cm.info.get("task")
    if not spec:
        raise UserError(f"{args.dir}: no task recorded; cannot rebuild its test data")
    ctx = TaskContext.from_args(argparse.Namespace(**spec), progress=True)
    metrics = evaluate(cm, ctx, target)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        print(f"{args.dir}: plan '{cm.plan.name}' on {spec['dataset']}")
        _print_metrics(metrics)
    return 0


def _study_name(args) -> str:
    import re
    from pathlib import Path

    parts = [Path(str(args.model)).name, Path(str(args.dataset)).name.split(".")[0], Path(str(args.space)).stem, args.sampler]
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", "-".join(parts))


def search_configs(args):
    """(SearchConfig, RunConfig) from command-line options; every option is checked here."""
    from pathlib import Path

    from .search.objectives import Budget, parse_duration
    from .search.runner import RunConfig, SearchConfig
    from .search.samplers import SAMPLERS
    from .search.spaces import load_space

    if args.sampler not in SAMPLERS:
        raise UserError(f"unknown sampler '{args.sampler}'; choose one of {', '.join(SAMPLERS)}")
    if args.trials is not None and args.trials < 1:
        raise UserError(f"--trials must be >= 1, got {args.trials}")
    if args.workers < 1:
        raise UserError(f"--workers must be >= 1, got {args.workers}")
    if not args.polish >= 0:
        raise UserError(f"--polish must be >= 0 (a factor of the KD steps; 0 turns polishing off), got {args.polish}")
    load_space(args.space)  # validate now, before any training
    budget = Budget.from_args(args)
    limit = None if str(args.time_limit).lower() in ("none", "0") else parse_duration(args.time_limit)
    name = args.study_name or _study_name(args)
    seed = args.seed if args.sampler_seed is None else args.sampler_seed
    search = SearchConfig(space=args.space, sampler=args.sampler, seed=seed, trials=args.trials,
                          time_limit_s=limit, workers=args.workers, budget=budget,
                          with_size=bool(args.minimize_size or args.size_budget),
                          warm_start=("teacher",) if args.no_baseline else ("teacher", "baseline", "recipes"),
                          predictor_grid=args.predictor_grid, polish=args.polish,
                          started_at=getattr(args, "started_at", None) or time.time())
    run = RunConfig(out=Path(args.out or Path("runs") / name), study_name=name, storage=args.storage,
                    ray_address=args.ray_address)
    return search, run


def _search(args) -> int:
    from .context import TaskContext
    from .latency import Target
    from .report import front_table
    from .search.runner import open_storage, prepare_out, run_search

    target = Target.from_args(args)
    search, run = search_configs(args)
    if run.out.exists() and not run.out.is_dir():
        raise UserError(f"--out {run.out} exists and is not a folder")
    if run.storage:
        open_storage(run.storage)  # fail fast on a storage that cannot be opened
    ctx = TaskContext.from_args(args, progress=True)  # model, data and columns are checked here
    prepare_out(run.out)  # only now: bad input leaves no output folder behind
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


def _baseline(args) -> int:
    from pathlib import Path

    from . import baseline as tree
    from . import cache
    from .context import TaskContext
    from .latency import Target
    from .search.objectives import Budget
    from .search.spaces import load_space
    from .search.trial import evaluate_candidate

    if args.explain:
        print(tree.explain())
        return 0
    target = Target.from_args(args)
    budget = Budget.from_args(args)
    out = Path(args.out or Path("runs") / f"baseline-{(args.budget or 'none').replace(' ', '')}")
    if not (out / "baseline.json").is_file():
        _check_out_dir(str(out))
    ctx = TaskContext.from_args(args, progress=True)
    from .apply import compress
    from .latency.isolated import measure_isolated
    from .plan import CompressionPlan

    teacher = {"validation_accuracy": ctx.teacher.metrics["validation_accuracy"],
               "test_accuracy": ctx.teacher.metrics["test_accuracy"],
               "latency_ms": round(measure_isolated(compress(CompressionPlan.keep_all(), ctx, progress=False),
                                                    target).p50, 3)}
    budget = budget.resolve(teacher["latency_ms"])  # a speed-up budget ('3x') becomes ms, measured now
    result = tree.baseline(ctx, target, budget, kd_steps=args.kd_steps)
    fidelity = load_space("joint").fidelity
    with cache.atomic_dir(out, replace=True) as tmp:
        row = evaluate_candidate(result.plan, ctx, target, fidelity, decide=lambda a, l, f: (True, "baseline"),
                                 force_full=True, save_dir=tmp / "model")
        row["model_dir"] = str(out / "model")
        result.plan.save(tmp / "plan.yaml")
        cache.atomic_write_json(tmp / "baseline.json", {**result.to_dict(), "metrics": row, "budget": budget.to_dict(),
                                                        "target": target.to_dict(), "teacher": teacher,
                                                        "task": ctx.spec})
    if args.json:
        print(json.dumps({**result.to_dict(), "metrics": row, "out": str(out)}, indent=2))
        return 0
    print("rule path:")
    for rule in result.path:
        print(f"  {rule.id:<7} {rule.decision}\n          [{rule.source}]")
    print(f"baseline: validation accuracy {row['accuracy']:.4f} (teacher {teacher['validation_accuracy']:.4f}), "
          f"p50 {row['latency_ms']:.2f} ms (predicted {result.predicted_ms or float('nan'):.2f}; teacher "
          f"{teacher['latency_ms']:.2f}), {row['size_mb']:.1f} MB — saved to {out}")
    return 0


def _compare(args) -> int:
    from pathlib import Path

    from . import compare
    from .search.objectives import parse_latency

    budgets = [parse_latency(b) for b in args.budget]
    reference = None
    if args.reference:
        try:
            acc, ms = (float(x) for x in args.reference.split(","))
        except ValueError:
            raise UserError(f"--reference {args.reference!r}: expected ACC,MS such as 0.74,16.5") from None
        reference = (acc, ms)
    result = compare.compare([Path(p) for p in args.runs], budgets_ms=budgets, reference=reference)
    print(compare.table(result))
    if args.out:
        compare.write(result, Path(args.out))
        print(f"wrote {args.out}/compare.md, compare.png, compare.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
