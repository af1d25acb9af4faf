"""How well does a seconds-long screen rank candidates, and does one-shot reconstruction help?

Takes every plan whose full result (KD recovery, full validation set) is on record — the
planner benchmark's references and the full trials of its searches — and screens it again
without any training: structure applied to the teacher (Taylor order), with and without the
least-squares reconstruction of the pruned projections (``plan.reconstruct``), scored on the
first ``--examples`` validation examples. Prints, per plan, the recorded full and 80-step-screen
figures beside the new screens and their seconds, then the Spearman rank correlation of each
screen with the full results.

``--recover N`` also rebuilds the first N structured plans (heads/FFN cut) with their recorded
KD recovery *and* reconstruction, full validation and test sets, to show whether reconstruction
changes the recovered accuracy (same teacher, split and recovery; only reconstruction differs).

    python benchmarks/reconstruction.py [--runs runs/planner] [--examples 400] [--recover 3]
"""

from __future__ import annotations

import argparse
import glob
import json
import time
from dataclasses import replace
from pathlib import Path


def recorded(runs: Path) -> list[dict]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rows = []
    refs = runs / "references.json"
    if refs.exists():
        for name, r in json.loads(refs.read_text()).items():
            if r.get("plan") and r.get("validation_accuracy") is not None and r.get("kd_steps"):
                rows.append({"name": name, "plan": r["plan"], "full": r["validation_accuracy"],
                             "test": r.get("accuracy")})
    for db in sorted(glob.glob(str(runs / "**" / "study.db"), recursive=True)):
        for summary in optuna.get_all_study_summaries(f"sqlite:///{db}"):
            study = optuna.load_study(study_name=summary.study_name, storage=f"sqlite:///{db}")
            for t in study.trials:
                a = t.user_attrs
                if a.get("fidelity") == "full" and a.get("plan") and a.get("kd_steps"):
                    rows.append({"name": f"{summary.study_name} #{t.number}", "plan": a["plan"],
                                 "full": a["accuracy"], "test": a.get("test_accuracy"),
                                 "screen80": a.get("screen_accuracy")})
    seen, unique = set(), []
    for r in rows:  # the same plan recorded twice (a warm start and its reference) counts once
        key = json.dumps({k: v for k, v in r["plan"].items() if k not in ("name", "description")}, sort_keys=True)
        if key not in seen:
            seen.add(key)
            unique.append(r)
    return unique


def spearman(xs, ys) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(xs, ys).statistic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("runs/planner"))
    parser.add_argument("--examples", type=int, default=400)
    parser.add_argument("--recover", type=int, default=0)
    args = parser.parse_args()

    from autocompress.apply import compress
    from autocompress.context import TaskContext
    from autocompress.evaluate import probe_accuracy, task_metrics
    from autocompress.plan import CompressionPlan
    from autocompress.search.trial import screen_accuracy

    rows = recorded(args.runs)
    if len(rows) < 3:
        raise SystemExit(f"fewer than 3 plans with full results under {args.runs}: run benchmarks/planner.py first")
    ctx = TaskContext.default()
    from autocompress.techniques.reconstruct import refit_classifier_

    probe, targets = ctx.probe_set()  # the linear probe's fit set, also used for the head refit
    start = time.perf_counter()
    ctx.importance(), ctx.input_grams()
    print(f"teacher statistics (Taylor scores + calibration Gram matrices), once: {time.perf_counter() - start:.1f} s")
    print(f"{'plan':44s} {'full':>6s} {'scr80':>6s} {'plain0':>6s} {'recon0':>6s} {'+head':>6s} {'rec+head':>8s} "
          f"{'s/plain':>7s} {'s/recon':>7s}")
    for r in rows:
        plan = CompressionPlan.from_dict(r["plan"], source=r["name"])
        plan = replace(plan, distill=replace(plan.distill, steps=0))
        for mode, rec in (("plain0", False), ("recon0", True)):
            t = time.perf_counter()
            cm = compress(replace(plan, reconstruct=rec), ctx, progress=False)
            r[mode] = screen_accuracy(cm.model, ctx, args.examples)
            r[f"s/{mode}"] = time.perf_counter() - t
            for pool in ("first", "mean"):
                r[f"{mode}:{pool}"] = probe_accuracy(cm.model, ctx, args.examples, pool=pool)
            t = time.perf_counter()
            refit_classifier_(cm.model, probe, targets)
            r[mode.replace("0", "+head")] = screen_accuracy(cm.model, ctx, args.examples)
            r[f"s/{mode}"] += time.perf_counter() - t
        s80 = f"{r['screen80']:.4f}" if r.get("screen80") is not None else "     -"
        print(f"{r['name'][:44]:44s} {r['full']:.4f} {s80:>6s} {r['plain0']:.4f} {r['recon0']:.4f} "
              f"{r['plain+head']:.4f} {r['recon+head']:8.4f} "
              f"{r['s/plain0']:7.1f} {r['s/recon0']:7.1f}", flush=True)
    full = [r["full"] for r in rows]
    print(f"\nSpearman with full validation accuracy over {len(rows)} plans: "
          f"no training, plain {spearman([r['plain0'] for r in rows], full):.3f}; "
          f"no training, reconstructed {spearman([r['recon0'] for r in rows], full):.3f}; "
          f"head refitted: plain {spearman([r['plain+head'] for r in rows], full):.3f}, "
          f"reconstructed {spearman([r['recon+head'] for r in rows], full):.3f}; linear probe (plain/recon): "
          + ", ".join(f"{pool} {spearman([r[f'plain0:{pool}'] for r in rows], full):.3f}/"
                      f"{spearman([r[f'recon0:{pool}'] for r in rows], full):.3f}" for pool in ("first", "mean")))
    with80 = [r for r in rows if r.get("screen80") is not None]
    if len(with80) >= 3:
        f80 = [r["full"] for r in with80]
        print(f"  on the {len(with80)} search trials: 80-step screen {spearman([r['screen80'] for r in with80], f80):.3f}, "
              f"plain {spearman([r['plain0'] for r in with80], f80):.3f}, "
              f"reconstructed {spearman([r['recon0'] for r in with80], f80):.3f}, "
              f"head refitted {spearman([r['plain+head'] for r in with80], f80):.3f} / "
              f"{spearman([r['recon+head'] for r in with80], f80):.3f}; probe "
              + ", ".join(f"{pool} {spearman([r[f'plain0:{pool}'] for r in with80], f80):.3f}/"
                          f"{spearman([r[f'recon0:{pool}'] for r in with80], f80):.3f}" for pool in ("first", "mean")))
    if args.recover:
        structured = [r for r in rows if _cuts_width(r["plan"])][: args.recover]
        print(f"\nrecovered with reconstruction ({len(structured)} width-cut plans, their recorded KD):")
        print(f"{'plan':44s} {'val':>6s} {'test':>6s} {'val+rec':>7s} {'test+rec':>8s} {'seconds':>7s}")
        for r in structured:
            plan = replace(CompressionPlan.from_dict(r["plan"], source=r["name"]), reconstruct=True)
            t = time.perf_counter()
            cm = compress(plan, ctx, progress=False)
            m = task_metrics(cm.model, ctx)
            test = f"{r['test']:.4f}" if r.get("test") is not None else "     -"
            print(f"{r['name'][:44]:44s} {r['full']:.4f} {test:>6s} {m['validation_accuracy']:7.4f} "
                  f"{m['accuracy']:8.4f} {time.perf_counter() - t:7.1f}", flush=True)


def _cuts_width(plan: dict) -> bool:
    layers = [plan.get("defaults") or {}, *(plan.get("layers") or {}).values()]
    return any(lp.get("keep", True) and (lp.get("heads") is not None or lp.get("ffn") is not None) for lp in layers)


if __name__ == "__main__":
    main()
