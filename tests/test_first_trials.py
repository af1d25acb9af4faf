"""Refactoring must not change what the search tries: the first plans the default spaces give
(sampler seed 0, the warm-start recipes first) on fixed synthetic importance and latency, as plan
fingerprints. A change to the planner that moves them updates this list on purpose."""

from __future__ import annotations

import optuna
import pytest

from autocompress.search.samplers import make_sampler
from autocompress.search.spaces import load_space
from test_allocate import DIMS, importance, synthetic_predictor

FIRST = {  # (space, latency budget as a fraction of the teacher, size budget MB): 12 plans
    # the recipes spread (SPREAD_TARGETS: int8 with FFNs halved, 3x, 4x), no longer all at the middle
    ("allocated", None, None): ["1a8fbdf944316959", "2fee6af8fb8aab24", "c5cba73ffdbe49a0", "2cf3e066129c5ab2",
                                "b5b2510b77954755", "a3432daf83ed6ec5", "2d08f65ec0a7559a", "f9ddede81b8bbae2",
                                "6d59d429fb7e02e6", "1eabcd5dbcfd0041", "0d02be61e6316700", "25afd03c601e5121"],
    ("allocated", 0.4, None): ["73c758250ab8db57", "458938ed24da6ba7", "ab4aecb3e3be5042", "0dc4d667a14e1ad2",
                               "564e7d55daf45d4c", "914a54bce636d2fd", "80cef9cf4a0824ab", "86af8736271458ee",
                               "dc7956f8edf06cc0", "1880944b57f803b1", "fe0f43ead86848d2", "b7d71800d5ef03e4"],
    ("allocated", 0.4, 30.0): ["9c4c9d13f5c5a911", "c490cd4908303ab7", "ab4aecb3e3be5042", "0dc4d667a14e1ad2",
                               "564e7d55daf45d4c", "914a54bce636d2fd", "80cef9cf4a0824ab", "86af8736271458ee",
                               "dc7956f8edf06cc0", "1880944b57f803b1", "fe0f43ead86848d2", "b7d71800d5ef03e4"],
    ("joint", None, None): ["b9628b37208c4148", "f09161cdd1ce3801", "ec644b0c39bc4383", "dadad8b729d25062",
                            "2f12846c98013252", "0595002ada0942d8", "cee7a0123066eda2", "77b7bbd1bc6797ce",
                            "8285a61583df9b02", "60a7b1c8a6ea9ce8", "3b4b4943a300cb5a", "31127bf9501b70b5"],
}


@pytest.mark.parametrize("name, budget, size", list(FIRST))
def test_the_first_plans_of_a_seeded_search_stay_the_same(name, budget, size):
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space = load_space(name)
    if name == "allocated":
        space = space.prepare(predictor=synthetic_predictor(), importance=importance(seed=4), size_mb=size)
        space = space.with_budget(budget) if budget else space
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=make_sampler("tpe", seed=0))
    for _, params in getattr(space, "recipes", list)():
        study.enqueue_trial(params)
    got = []
    for _ in range(12):
        trial = study.ask()
        got.append(space.sample(trial, DIMS).fingerprint()[:16])
        study.tell(trial, [0.5 + 0.01 * trial.number, 10.0 - 0.1 * trial.number])  # a fixed, made-up front
    assert got == FIRST[(name, budget, size)]
