"""How well does screening predict a candidate's full result? (default task, minilm-l6, rotten-tomatoes)

Takes the fully evaluated trials of finished search runs (their plans and full validation
accuracy), rebuilds each plan, pauses its recovery run after each of ``--steps`` KD steps and
scores the snapshot on the screening subset with several proxies: accuracy, agreement with the
teacher, the (negated) KL divergence from the teacher's predictive distribution and the (negated)
cross-entropy on the labels. Prints, per pause and proxy, the Spearman rank correlation with the
full validation accuracy and the number of distinct proxy values (ties hide differences from the
promoter), plus the seconds the pause costs.

    python benchmarks/screening.py runs/bench-s4/joint-tpe runs/bench-s4/joint-random --steps 40,80
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch


def full_trials(run_dirs: list[Path]) -> list[tuple[dict, float]]:
    """(plan dict, full validation accuracy) of every fully evaluated, sampled trial; plans deduplicated."""
    import optuna

    seen, rows = set(), []
    for d in run_dirs:
        storage = f"sqlite:///{(d / 'study.db').resolve()}"
        for summary in optuna.get_all_study_summaries(storage):
            study = optuna.load_study(study_name=summary.study_name, storage=storage)
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
                a = t.user_attrs
                if a.get("fidelity") != "full" or a.get("warm_start") or not a.get("kd_steps"):
                    continue
                key = json.dumps(a["plan"], sort_keys=True)
                if key not in seen:
                    seen.add(key)
                    rows.append((a["plan"], float(a["accuracy"])))
    return rows


def proxies(model, ctx, examples: int) -> dict[str, float]:
    from autocompress import training

    data = ctx.data["validation"].select(range(min(examples, len(ctx.data["validation"]))))
    logits, labels = training.predict(model, training.iterate(data, 64, pad_id=ctx.pad_id, with_index=True))
    teacher = ctx.teacher_logits()["validation"][: len(labels)]
    logp = torch.log_softmax(logits.float(), -1)
    t_logp = torch.log_softmax(teacher.float(), -1)
    return {"accuracy": ctx.task_type.score(logits, labels),
            "agreement": ctx.task_type.agreement(logits, teacher),
            "neg_kl": -float((t_logp.exp() * (t_logp - logp)).sum(-1).mean()),
            "neg_ce": -float(torch.nn.functional.nll_loss(logp, labels))}


def main() -> int:
    from scipy.stats import spearmanr

    from autocompress.apply import compress_stages
    from autocompress.context import TaskContext
    from autocompress.plan import CompressionPlan

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="search output folders (with study.db)")
    parser.add_argument("--steps", default="40,80", help="comma-separated KD steps to pause at")
    parser.add_argument("--examples", type=int, default=400, help="validation examples at screening")
    parser.add_argument("--limit", type=int, default=0, help="use at most this many plans (0: all)")
    parser.add_argument("--json", type=Path, default=None, help="also write every plan's proxies to this file")
    args = parser.parse_args()
    pauses = tuple(sorted(int(s) for s in args.steps.split(",")))
    ctx = TaskContext.default()
    rows = full_trials(args.runs)[: args.limit or None]
    print(f"{len(rows)} fully evaluated plans", file=sys.stderr)
    scores: dict[int, dict[str, list[float]]] = {p: {} for p in pauses}
    seconds: dict[int, list[float]] = {p: [] for p in pauses}
    for i, (plan_dict, _) in enumerate(rows):
        plan = CompressionPlan.from_dict(plan_dict, source="trial")
        begin = time.perf_counter()
        stages = compress_stages(plan, ctx, pause_at=pauses, progress=False)
        for pause in pauses:
            cm = next(stages)
            for name, value in proxies(cm.model, ctx, args.examples).items():
                scores[pause].setdefault(name, []).append(value)
            seconds[pause].append(time.perf_counter() - begin)
        stages.close()
        print(f"plan {i + 1}/{len(rows)} done", file=sys.stderr)
    full = [acc for _, acc in rows]
    if args.json:
        args.json.write_text(json.dumps({"full_accuracy": full, "proxies": scores, "seconds": seconds}, indent=1))
    print(f"\n{len(rows)} plans; full validation accuracy {min(full):.4f}..{max(full):.4f}")
    print(f"{'KD steps':>8} {'s/plan':>7} " + " ".join(f"{name:>18}" for name in scores[pauses[0]]))
    for pause in pauses:
        cells = []
        for values in scores[pause].values():
            rho = spearmanr(values, full).statistic
            cells.append(f"{rho:>7.3f} ({len(set(round(v, 6) for v in values)):>2} vals)")
        print(f"{pause:>8} {sum(seconds[pause]) / len(rows):>7.1f} " + " ".join(f"{c:>18}" for c in cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
