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
from .options import Parser, add_search_arguments, search_configs, target_options, task_options  # noqa: F401
from .spec import DEFAULT_TASK, TaskSpec

DEFAULT_MODEL = DEFAULT_TASK.model
DEFAULT_DATASET = DEFAULT_TASK.dataset


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="autocompress", description=__doc__.splitlines()[1] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p_assets = sub.add_parser("assets", help="list or fetch catalog models and datasets")
    a_sub = p_assets.add_subparsers(dest="assets_command", required=True, parser_class=Parser)
    a_list = a_sub.add_parser("list", help="catalog entries and whether they are cached")
    a_list.add_argument("--json", action="store_true")
    a_fetch = a_sub.add_parser("fetch", help="fetch a catalog entry into the cache (sha256-checked)")
    a_fetch.add_argument("name")
    a_fetch.add_argument("--verify", action="store_true", help="re-hash a cached copy")
    a_fetch.set_defaults(func=_assets_fetch)
    a_list.set_defaults(func=_assets_list)

    p_teacher = sub.add_parser("teacher", help="fine-tune (or reuse the cached) teacher for a task")
    task_options(p_teacher)
    p_teacher.add_argument("--json", action="store_true", help="print the result as JSON")
    p_teacher.set_defaults(func=_teacher)

    p_plan = sub.add_parser("plan", help="inspect compression plans")
    pl_sub = p_plan.add_subparsers(dest="plan_command", required=True, parser_class=Parser)
    pl_show = pl_sub.add_parser("show", help="validate a plan against a model and print it per layer")
    pl_show.add_argument("plan")
    pl_show.add_argument("--model", default=DEFAULT_MODEL)
    pl_show.add_argument("--json", action="store_true", help="print the resolved per-layer plan as JSON")
    pl_show.set_defaults(func=_plan_show)

    p_apply = sub.add_parser("apply", help="build a compressed model from a plan and evaluate it")
    p_apply.add_argument("--plan", required=True)
    p_apply.add_argument("--out", required=True, help="folder to write (replaced if it is a previous output)")
    task_options(p_apply)
    target_options(p_apply)
    p_apply.add_argument("--json", action="store_true")
    p_apply.set_defaults(func=_apply)

    p_eval = sub.add_parser("evaluate", help="accuracy, fidelity, size, FLOPs and latency of a compressed model")
    p_eval.add_argument("dir")
    target_options(p_eval)
    p_eval.add_argument("--json", action="store_true")
    p_eval.set_defaults(func=_evaluate)

    from .latency import commands as latency_commands

    latency_commands.register(sub, Parser)

    add_search_arguments(sub.add_parser("search", help="search compression plans: Pareto set and the best plan under budget"))

    p_base = sub.add_parser("baseline", help="the survey decision-tree plan, evaluated as a search trial")
    task_options(p_base)
    target_options(p_base)
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

    export_commands.register(sub, Parser, target_options)
    study_commands.register(sub, Parser)
    return parser


#: options whose value may start with '-' (argparse would read "--budget -5ms" as a missing value)
SIGNED_VALUES = ("--budget", "--size-budget", "--max-drop")


def _signed_values(argv: list[str]) -> list[str]:
    """``--budget -5ms`` as ``--budget=-5ms``, so that the value reaches its own check."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] in SIGNED_VALUES and i + 1 < len(argv) and argv[i + 1][:1] == "-" and argv[i + 1][:2] != "--":
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    started = time.time()
    try:
        args = build_parser().parse_args(_signed_values(list(sys.argv[1:] if argv is None else argv)))
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
    from .context import load_task_and_teacher as load

    return load(TaskSpec.from_args(args), progress=progress)


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
        from .compressed import layer_to_dict

        print(json.dumps({"plan": plan.to_dict(), "resolved": [layer_to_dict(r) for r in resolved]}, indent=2))
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
    ctx.check_target(target)
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
    ctx.check_target(target)
    metrics = evaluate(cm, ctx, target)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        print(f"{args.dir}: plan '{cm.plan.name}' on {spec['dataset']}")
        _print_metrics(metrics)
    return 0


def _baseline(args) -> int:
    from pathlib import Path

    from . import baseline as tree
    from . import cache
    from .context import TaskContext
    from .latency import Target
    from .objectives import Budget
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
    ctx.check_target(target)
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
        row = evaluate_candidate(result.plan, ctx, target, fidelity, decide=lambda *args: (True, "baseline"),
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
    from .objectives import parse_latency

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
