"""``autocompress latency calibrate|check``: build the latency table, and measure how good it is.

``calibrate`` measures calibration plans of the model end to end on the target, fits the latency
model's costs and caches the table (keyed by device, target, architecture and grid); ``check``
measures random plans (built structurally with random weights, no training; other plans than the
calibration's; each measured in two passes seconds apart, the faster kept, as in calibration) and
reports the predictor's error: MAPE, share within ±10%, worst case.
"""

from __future__ import annotations

import json
import sys

from ..errors import UserError

DEFAULT_MODEL = "minilm-l6"


def register(subparsers, parser_class) -> None:
    """Add the ``latency`` command group to the CLI's sub-parsers."""
    p = subparsers.add_parser("latency", help="calibrate and check the latency predictor")
    sub = p.add_subparsers(dest="latency_command", required=True, parser_class=parser_class)

    cal = sub.add_parser("calibrate", help="measure calibration plans on the target, fit the latency model, cache it")
    _options(cal)
    cal.add_argument("--force", action="store_true", help="re-measure even if a cached table exists")
    cal.set_defaults(func=_calibrate)

    chk = sub.add_parser("check", help="measure random plans and report the predictor's error")
    _options(chk)
    chk.add_argument("--plans", type=int, default=30, help="random plans to measure (default 30)")
    chk.add_argument("--seed", type=int, default=7, help="seed of the random plans (default 7)")
    chk.set_defaults(func=_check)


def _options(p) -> None:
    from .runtime import runtime_names

    p.add_argument("--model", default=DEFAULT_MODEL,
                   help=f"catalog name, local safetensors folder or hub id (default {DEFAULT_MODEL})")
    p.add_argument("--runtime", default="torch", help=f"{' or '.join(runtime_names())} (default torch)")
    p.add_argument("--threads", type=int, default=None, help="threads (default: all cores)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                   help="the arithmetic of the table: bf16 plans have a table of their own (default fp32)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _setup(args):
    from ..models import load_model, resolve_model
    from .runtime import get_runtime
    from .target import Target

    target = Target.from_args(args)
    get_runtime(target.runtime)  # UserError naming the package when the runtime is not installed
    source = resolve_model(args.model)
    model = load_model(source.path, num_labels=2)
    return target, model


def _calibrate(args) -> int:
    from .predictor import get_predictor

    target, model = _setup(args)
    predictor = get_predictor(model, target, rebuild=args.force, progress=not args.json)
    summary = {"model": args.model, "from_cache": predictor.from_cache, **predictor.summary()}
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    fit, cv, keep_all = summary["fit"], summary["cross_validation"], summary["keep_all_ms"]
    how = "from cache" if predictor.from_cache else f"built in {summary['build_seconds']:.0f} s"
    print(f"latency model for {args.model} on {target.describe()} ({how})")
    print(f"  fitted on {fit['plans']} plans measured end to end: MAPE {fit['mape']:.1%}, "
          f"worst {fit['worst']:+.1%}")
    if cv:
        print(f"  5-fold cross-validation (error on plans left out of the fit): MAPE {cv['mape']:.1%}, "
              f"within ±10% {cv['within_10pct']:.0%}, worst {cv['worst']:+.1%}")
    measured = f", measured {keep_all['measured']:.2f} ms" if keep_all["measured"] else ""
    print(f"  keep-all: predicted {keep_all['predicted']:.2f} ms{measured}")
    terms = [f"{name} {cost:.4g} {summary['units'][name]}" for name, cost in summary["costs"].items() if cost > 0]
    print("  costs: " + ", ".join(terms))
    for line in predictor.warnings() if predictor.from_cache else ():  # a table built now said it already
        print(f"  warning: {line}", file=sys.stderr)
    print(f"  saved at {summary['path']}")
    return 0


def _check(args) -> int:
    from .predictor import check, get_predictor

    if args.plans < 1:
        raise UserError(f"--plans must be >= 1, got {args.plans}")
    target, model = _setup(args)
    predictor = get_predictor(model, target, progress=not args.json)
    result = check(predictor, model, target, plans=args.plans, seed=args.seed, progress=not args.json)
    result = {"model": args.model, "target": target.to_dict(), "table": str(predictor.path), **result}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"latency check: {result['plans']} random plans of {args.model} on {target.describe()}")
    print(f"{'plan':>4} {'layers':>6} {'predicted':>10} {'measured':>10} {'error':>7}")
    for r in result["rows"]:
        flag = "  (contended)" if r["contended"] else ""
        print(f"{r['plan']:>4} {r['layers']:>6} {r['predicted_ms']:>8.2f}ms {r['measured_ms']:>8.2f}ms "
              f"{r['error']:>+7.1%}{flag}")
    print("\n".join(summary_lines(result)))
    if result["contended"]:
        print(f"warning: {result['contended']} measurements ran while other processes used these cores",
              file=sys.stderr)
    return 0


def summary_lines(result: dict) -> list[str]:
    """The error figures of a :func:`~autocompress.latency.predictor.check` result, as lines:
    anchored predictions (all passes, then the first pass alone), the anchor, the raw table, and the
    anchored predictions against drift-corrected measurements."""
    one = result["single_pass"]
    lines = [f"MAPE {result['mape']:.2%}, within ±10% {result['within_10pct']:.0%}, worst {result['worst']:+.1%} "
             f"(plan {result['worst_plan']})",
             f"  first pass alone: MAPE {one['mape']:.2%}, within ±10% {one['within_10pct']:.0%}, "
             f"worst {one['worst']:+.1%}"]
    a, raw = result["anchor"], result["unanchored"]
    then = a["at_calibration_ms"].get("keep-all")
    then = f" vs {then:.2f} ms at calibration" if then else ""
    lines.append(f"  anchored to the reference plans measured now (keep-all {a['reference_ms']['keep-all']:.2f} ms{then}; "
                 f"scale {a['scale']:.3f}; keep-all moved {a['moved_during_check']:+.1%} during the check)")
    lines.append(f"  unanchored table: MAPE {raw['mape']:.2%}, within ±10% {raw['within_10pct']:.0%}, "
                 f"worst {raw['worst']:+.1%}")
    d = result["drift_corrected"]
    lines.append(f"  drift-corrected (each pass against keep-all measured right after it): MAPE {d['mape']:.2%}, "
                 f"within ±10% {d['within_10pct']:.0%}, worst {d['worst']:+.1%}")
    return lines
