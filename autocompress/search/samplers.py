"""Optuna's own multi-objective samplers, made by name. Budgets reach them as trial constraints
(``Trial.set_constraint`` before ``tell``), so they steer the sampler directly."""

from __future__ import annotations

import warnings

import optuna

from ..errors import UserError

SAMPLERS = ("tpe", "nsga2", "gp", "random")
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning, module="optuna")


def make_sampler(name: str, *, seed: int | None = 0, startup_trials: int = 8) -> optuna.samplers.BaseSampler:
    """``tpe``: multivariate TPE with constant liar (for parallel trials) and constraints;
    ``nsga2``: NSGA-II with constraints; ``gp``: Optuna's constrained Gaussian-process sampler;
    ``random``: uniform, budget-blind (the reference)."""
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True,
                                          n_startup_trials=startup_trials)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(8, startup_trials))
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup_trials)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise UserError(f"unknown sampler '{name}'; choose one of {', '.join(SAMPLERS)}")
