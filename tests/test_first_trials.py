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
    # the recipes spread (RECIPES: int8 with FFNs halved, 2.25x, 3x, 4x), each layer recipe a little under;
    # KD at KD_LR
    ("allocated", None, None): ["0ff45a4ba7908fbf", "4f4ad9d32c126556", "bdcb8a5aec16f674", "33d9b88dc5ce3d6f",
                                "9279bd67f77e3787", "b414aa7a743b393d", "5c794eaef1888239", "e495ce7739d698ad",
                                "548862395f266d66", "2e0593c920b69684", "46c5417d09de60b0", "2076a2985b325b6c"],
    ("allocated", 0.4, None): ["dffab250a0aee856", "5e75fc377dff87e3", "6798b907aab4d82f", "8b39a8c33650dfd7",
                               "8c1e471492f477ee", "37dccf549e41333f", "49d440416b2aa07c", "e3887102c46c5564",
                               "b60d12a404b1ac35", "04c9be5fc38b7094", "642e0919f0df8fad", "7b08c9f97e3bec16"],
    ("allocated", 0.4, 30.0): ["8f2f32f2cd7a0e44", "5ff67aef0a7f74f9", "6798b907aab4d82f", "8b39a8c33650dfd7",
                               "8c1e471492f477ee", "37dccf549e41333f", "49d440416b2aa07c", "e3887102c46c5564",
                               "b60d12a404b1ac35", "04c9be5fc38b7094", "642e0919f0df8fad", "7b08c9f97e3bec16"],
    ("joint", None, None): ["beab5fc51a8b06be", "4ac1b4221b07920e", "78e83bbd0a72db74", "5807110b2843f910",
                            "f84aca407a036c79", "52e38dd681a80667", "547e12ad672545f7", "cc6a8aed6cf3f06d",
                            "7114e7842653fcf5", "03121eb32bd24a4e", "a43905c69998a60f", "e7d2b673f51e2158"],
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
