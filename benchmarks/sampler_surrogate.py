"""Samplers compared on a surrogate of the default task: many seeds in minutes, not hours.

A search of 25 minutes holds about 25 trials, so one pair of real runs says little about which
sampler is better: the front of either is mostly luck at that size. This benchmark replays the
search loop (the real space, warm starts, constraints and samplers) on a *surrogate*:

- accuracy: a gradient-boosted regression fitted on every plan that earlier searches evaluated
  in full (their ``study.db``), on plan features (layers kept, heads and FFN kept, share of int8,
  low-rank and sparse linears, KD kind); its 5-fold cross-validated error is printed, and each
  simulated evaluation adds noise of the size of a validation set's sampling error;
- latency: the calibrated latency predictor of the target (what screening uses);
- time: each plan costs what a full trial of its kind cost in those searches (a regression on the
  same features), so the runs can be cut at equal simulated wall time, like the real benchmark.

It prints, per sampler, the median and quartiles of the hypervolume over seeds and the median of
the per-seed ratio to random (same seed, same reference point).

    python benchmarks/sampler_surrogate.py runs/bench* [--seeds 24] [--minutes 25] [--samplers random,tpe]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import warnings
from pathlib import Path

import numpy as np

KD_KINDS = ("none", "logits", "logits+hidden", "logits+hidden+attention")


def features(plan, dims: dict) -> list[float]:
    """A plan as numbers: which layers are kept, how much of each is kept, int8 / low-rank / sparse
    shares, KD kind."""
    layers = plan.resolve(dims["num_layers"], dims["num_heads"], dims["intermediate_size"], dims["hidden_size"])
    kept = [r for r in layers if r.keep]
    out = [float(r.keep) for r in layers] + [len(kept) / len(layers)]
    for key, total in (("heads", dims["num_heads"]), ("ffn", dims["intermediate_size"])):
        fracs = [getattr(r, key) / total for r in kept]
        out += [statistics.fmean(fracs), min(fracs), sum(fracs) / len(layers)]
    for groups in (("q", "k", "v", "attn_out"), ("ffn_in", "ffn_out")):
        cells = [(r, g) for r in kept for g in groups]
        out += [statistics.fmean(r.dtype[g] == "int8" for r, g in cells),
                statistics.fmean(r.rank.get(g) is not None for r, g in cells),
                statistics.fmean(r.sparsity.get(g, 0.0) for r, g in cells)]
    weights = plan.distill.weights if plan.distill.steps else {}
    kind = "+".join(k for k in ("logits", "hidden", "attention") if weights.get(k)) or "none"
    out += [float(kind == k) for k in KD_KINDS]
    return out


def observed(runs: list[Path]) -> tuple[list[dict], list[float], list[float]]:
    """(plan dicts, validation accuracy, seconds) of every fully evaluated trial under ``runs``."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    plans, acc, secs = [], [], []
    for db in sorted(p for run in runs for p in run.rglob("study.db")):
        for summary in optuna.get_all_study_summaries(f"sqlite:///{db}"):
            study = optuna.load_study(study_name=summary.study_name, storage=f"sqlite:///{db}")
            for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
                u = t.user_attrs
                if u.get("fidelity") == "full" and "plan" in u:
                    plans.append(u["plan"])
                    acc.append(float(u["accuracy"]))
                    secs.append(float(u.get("seconds", 0.0)))
    return plans, acc, secs


class Surrogate:
    def __init__(self, X, y, cost, seed: int = 0):
        from sklearn.ensemble import GradientBoostingRegressor

        self.acc = GradientBoostingRegressor(n_estimators=300, max_depth=3, learning_rate=0.05, subsample=0.8,
                                             random_state=seed).fit(X, y)
        self.cost = GradientBoostingRegressor(n_estimators=200, max_depth=2, learning_rate=0.05,
                                              random_state=seed).fit(X, cost)

    @staticmethod
    def cross_validated(X, y, kept_column: int, seed: int = 0) -> dict:
        from scipy.stats import spearmanr
        from sklearn.ensemble import GradientBoostingRegressor
        from sklearn.model_selection import cross_val_predict

        pred = cross_val_predict(GradientBoostingRegressor(n_estimators=300, max_depth=3, learning_rate=0.05,
                                                           subsample=0.8, random_state=seed), X, y, cv=5)
        shrunk = X[:, kept_column] < 1.0 - 1e-9  # plans that drop a layer (the hard part of the surface)
        return {"mae": float(np.mean(np.abs(pred - y))), "spearman": float(spearmanr(pred, y).statistic),
                "shrunk": int(shrunk.sum()), "mae_shrunk": float(np.mean(np.abs(pred - y)[shrunk])),
                "spearman_shrunk": float(spearmanr(pred[shrunk], y[shrunk]).statistic)}


def make(name: str, seed: int):
    import optuna

    from autocompress.search.samplers import make_sampler

    if name in ("tpe", "random", "nsga2", "gp"):
        return make_sampler(name, seed=seed)
    if name == "tpe-independent":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=8, constant_liar=True)
    if name.startswith("tpe-gamma"):  # e.g. tpe-gamma0.25: that share of the trials is "good" (Optuna's
        # multi-objective default is a tenth; its ``gamma`` argument is deprecated since Optuna 4.9)
        share = float(name[len("tpe-gamma"):])
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True,
                                          n_startup_trials=8, gamma=lambda n: max(1, math.ceil(share * n)))
    if name.startswith("tpe-startup"):
        return make_sampler("tpe", seed=seed, startup_trials=int(name[len("tpe-startup"):]))
    raise SystemExit(f"unknown sampler variant {name}")


def simulate(sampler_name: str, space, dims, surrogate, predictor, seed: int, minutes: float, budget_ms: float,
             teacher_acc: float, warm: list[dict], noise: float, trials: int = 0) -> list[tuple[float, float]]:
    import optuna

    from autocompress.objectives import Budget, sampler_constraints
    from autocompress.search.searcher import CONSTRAINTS

    rng = np.random.default_rng(10_000 + seed)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=make(sampler_name, seed))
    for params in warm:
        study.enqueue_trial(params)
    clock, points, budget = 0.0, [], Budget(latency_ms=budget_ms)
    while (len(points) < trials) if trials else (clock < minutes * 60):
        trial = study.ask()
        plan = space.sample(trial, dims)
        x = np.asarray([features(plan, dims)])
        acc = float(surrogate.acc.predict(x)[0] + rng.normal(0.0, noise))
        lat = predictor.predict(plan.resolve(dims["num_layers"], dims["num_heads"], dims["intermediate_size"],
                                             dims["hidden_size"]))
        clock += max(5.0, float(surrogate.cost.predict(x)[0]))
        result = {"accuracy": acc, "latency_ms": lat, "size_mb": 0.0}
        for name, value in zip(CONSTRAINTS, sampler_constraints(result, budget, teacher_acc)):
            trial.set_constraint(name, value)
        study.tell(trial, [acc, lat])
        points.append((acc, lat))
    return points


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="search output folders whose full trials train the surrogate")
    parser.add_argument("--samplers", default="random,tpe,tpe-independent,nsga2,gp")
    parser.add_argument("--space", default="joint")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--minutes", type=float, default=25.0, help="simulated wall time per run")
    parser.add_argument("--budget", type=float, default=13.0, help="latency budget (ms), a constraint as in search")
    parser.add_argument("--ladder", default="", help="comma-separated extra latency budgets (ms): the baseline "
                        "plan at each is a warm start too")
    parser.add_argument("--trials", type=int, default=0, help="run this many trials instead of --minutes")
    parser.add_argument("--noise", type=float, default=1.0, help="evaluation noise, as a multiple of the sampling error")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    from autocompress.context import TaskContext
    from autocompress.latency import Target
    from autocompress.latency.predictor import get_predictor
    from autocompress.pareto import hypervolume
    from autocompress.plan import CompressionPlan
    from autocompress.search.space import SearchSpace

    ctx = TaskContext.default()
    dims = ctx.dims()
    predictor = get_predictor(ctx.teacher_model(), Target(), build=False)
    space = SearchSpace.load(args.space)
    plans, acc, secs = observed(args.runs)
    X = np.asarray([features(CompressionPlan.from_dict(p, source="trial"), dims) for p in plans])
    y, cost = np.asarray(acc), np.asarray(secs)
    cv = Surrogate.cross_validated(X, y, kept_column=dims["num_layers"])  # features(): keep flags, then share kept
    surrogate = Surrogate(X, y, cost)
    teacher_acc = ctx.teacher.metrics["validation_accuracy"]
    noise = args.noise * math.sqrt(teacher_acc * (1 - teacher_acc) / len(ctx.data["validation"]))
    keep_all = CompressionPlan.keep_all("teacher")
    ref = (teacher_acc - 0.10, predictor.predict(keep_all))
    from autocompress.baseline import baseline
    from autocompress.objectives import Budget

    warm = [space.keep_all_params(dims["num_layers"])]
    for ms in [args.budget] + [float(b) for b in args.ladder.split(",") if b]:
        base = baseline(ctx, Target(), Budget(latency_ms=ms), predictor=predictor, kd_steps=space.kd_steps).plan
        params = space.params_for(base, dims)
        if params is not None and params not in warm:
            warm.append(params)
    print(f"surrogate: {len(y)} fully evaluated plans; 5-fold CV MAE {cv['mae'] * 100:.2f} points, "
          f"Spearman {cv['spearman']:.2f} (the {cv['shrunk']} that drop layers: MAE {cv['mae_shrunk'] * 100:.2f}, "
          f"Spearman {cv['spearman_shrunk']:.2f}); evaluation noise {noise * 100:.2f} points; "
          f"reference {ref[0]:.4f} / {ref[1]:.2f} ms; {args.minutes:g} simulated minutes, {args.seeds} seeds",
          file=sys.stderr)
    names = args.samplers.split(",")
    hv: dict[str, list[float]] = {n: [] for n in names}
    trials: dict[str, list[int]] = {n: [] for n in names}
    for seed in range(args.seeds):
        for name in names:
            points = simulate(name, space, dims, surrogate, predictor, seed, args.minutes, args.budget, teacher_acc,
                              warm, noise, args.trials)
            hv[name].append(hypervolume(points, ref))
            trials[name].append(len(points))
        print(f"seed {seed} done", file=sys.stderr)
    print(f"\n{'sampler':<18} {'trials':>6} {'HV median':>10} {'HV q25':>8} {'HV q75':>8} {'÷ random (median)':>18} "
          f"{'seeds > 1.15x':>13}")
    for name in names:
        q25, q50, q75 = np.percentile(hv[name], [25, 50, 75])
        ratios = [a / b for a, b in zip(hv[name], hv.get("random", hv[name])) if b > 0]
        print(f"{name:<18} {statistics.median(trials[name]):>6.0f} {q50:>10.4f} {q25:>8.4f} {q75:>8.4f} "
              f"{statistics.median(ratios):>18.3f} {sum(r >= 1.15 for r in ratios):>6}/{len(ratios)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
