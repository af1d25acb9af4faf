"""The search's parts on their own: spaces, budgets, samplers, promotion, Pareto and hypervolume."""

import sys
from pathlib import Path

import optuna
import pytest

from autocompress.errors import UserError
from autocompress.pareto import dominates, front, hypervolume, pick
from autocompress.search.fidelity import Promoter
from autocompress.objectives import Budget, constraint_values, parse_duration, parse_latency, parse_size
from autocompress.search.samplers import make_sampler
from autocompress.search.space import Fidelity, SearchSpace

DIMS = {"num_layers": 6, "num_heads": 12, "intermediate_size": 1536, "hidden_size": 384}


def _study(sampler="random", seed=0):
    return optuna.create_study(directions=["maximize", "minimize"], sampler=make_sampler(sampler, seed=seed))


@pytest.mark.parametrize("name", ["joint", "structured", "quant_only"])
def test_builtin_spaces_sample_valid_plans(name):
    space = SearchSpace.load(name)
    study = _study()
    for _ in range(25):
        trial = study.ask()
        plan = space.sample(trial, DIMS)
        resolved = plan.resolve(6, 12, 1536, 384)  # raises if the sampled plan is invalid
        assert resolved[0].keep  # always_keep: [0] in joint/structured; quant_only keeps all
        dropped = [r for r in resolved if not r.keep]
        for r in dropped:  # a dropped layer has no other knobs sampled
            assert not any(p.startswith(f"layer{r.index}.") and not p.endswith(".keep") for p in trial.params)
        study.tell(trial, [0.5, 1.0])
    if name == "quant_only":
        assert all(r.keep and r.heads == 12 and r.ffn == 1536 for r in resolved)


def test_keep_all_params_give_the_uncompressed_plan():
    space = SearchSpace.load("joint")
    study = _study()
    study.enqueue_trial(space.keep_all_params(6))
    plan = space.sample(study.ask(), DIMS)
    assert all(r.keep and r.heads == 12 and r.ffn == 1536 and set(r.dtype.values()) == {"fp32"}
               and set(r.rank.values()) == {None} for r in plan.resolve(6, 12, 1536, 384))
    assert plan.distill.steps == 0


def test_tied_layers_share_knobs():
    space = SearchSpace.from_dict({"schema": "autocompress.space/v1", "tie_layers": True,
                                   "layers": {"keep": [True], "heads": [1.0, 0.5], "ffn": [1.0, 0.5]}})
    trial = _study().ask()
    resolved = space.sample(trial, DIMS).resolve(6, 12, 1536, 384)
    assert len({(r.heads, r.ffn) for r in resolved}) == 1
    assert set(trial.params) == {"all.heads", "all.ffn"}
    assert space.size(6) == 2


def test_space_check_model():
    space = SearchSpace.from_dict({"schema": "autocompress.space/v1", "layers": {"always_keep": [9]}})
    with pytest.raises(UserError, match="always_keep"):
        space.check_model(6)
    space = SearchSpace.from_dict({"schema": "autocompress.space/v1", "layers": {"min_kept": 7}})
    with pytest.raises(UserError, match="min_kept = 7 but the model has 6 layers"):
        space.check_model(6)
    space.check_model(7)


@pytest.mark.parametrize("text,ms", [("40ms", 40.0), ("0.04s", 40.0), ("40 ms", 40.0), ("1.5e1ms", 15.0), ("800us", 0.8)])
def test_latency_budgets_parse(text, ms):
    assert parse_latency(text) == pytest.approx(ms)


@pytest.mark.parametrize("text,mb", [("30MB", 30.0), ("30mb", 30.0), ("512KB", 0.512), ("1GB", 1000.0),
                                     ("28MiB", 28 * 1.048576)])
def test_size_budgets_parse(text, mb):
    assert parse_size(text) == pytest.approx(mb)


@pytest.mark.parametrize("bad", ["40xs", "ms", "", "forty ms", "40 m s"])
def test_bad_budgets_are_clear_errors(bad):
    with pytest.raises(UserError):
        parse_latency(bad)


def test_durations():
    assert parse_duration("20m") == 1200 and parse_duration("6h") == 21600 and parse_duration("90s") == 90


def test_constraints_follow_optuna_convention():
    budget = Budget(latency_ms=10, size_mb=30, max_drop=1.0)
    ok = {"accuracy": 0.835, "latency_ms": 9.0, "size_mb": 20}
    assert all(c <= 0 for c in constraint_values(ok, budget, teacher_accuracy=0.84))
    slow = {**ok, "latency_ms": 12.0}
    assert constraint_values(slow, budget, 0.84)[0] == pytest.approx(2.0)
    worse = {**ok, "accuracy": 0.82}
    assert constraint_values(worse, budget, 0.84)[2] == pytest.approx(1.0)  # 2 points dropped, 1 allowed
    assert constraint_values(slow, Budget(), 0.84) == [-1.0, -1.0, -1.0]


def test_the_sampler_is_kept_inside_the_region_of_interest_unless_a_max_drop_is_given():
    from autocompress.objectives import REGION_DROP_POINTS, sampler_constraints

    collapsed = {"accuracy": 0.70, "latency_ms": 2.0, "size_mb": 20}  # 14 points below the teacher
    fine = {**collapsed, "accuracy": 0.80}  # 4 points below
    assert constraint_values(collapsed, Budget(), 0.84)[2] == -1.0  # not a budget: reports ignore it
    assert sampler_constraints(collapsed, Budget(), 0.84)[2] == pytest.approx(14.0 - REGION_DROP_POINTS)
    assert sampler_constraints(fine, Budget(), 0.84)[2] == pytest.approx(4.0 - REGION_DROP_POINTS)
    assert sampler_constraints(collapsed, Budget(max_drop=20.0), 0.84) == \
        constraint_values(collapsed, Budget(max_drop=20.0), 0.84)  # the user's limit wins


def test_constraints_steer_tpe_but_not_random():
    def share(name):
        study = _study(name, seed=1)
        for _ in range(30):
            t = study.ask()
            x = t.suggest_float("x", 0, 1)
            t.set_constraint("latency_ms", x - 0.3)
            study.tell(t, [x, x])
        return sum(t.params["x"] <= 0.3 for t in study.trials[8:]) / 22

    assert share("tpe") > share("random") + 0.3


def test_seed_makes_sampling_repeatable():
    space = SearchSpace.load("joint")
    plans = []
    for _ in range(2):
        study = _study("tpe", seed=7)
        plans.append([space.sample(study.ask(), DIMS).fingerprint() for _ in range(5)])
    assert plans[0] == plans[1]


def test_promoter_rules():
    p = Promoter(Fidelity(min_promote=2, promote_slack=0.01, promote="front"), Budget(latency_ms=10))
    assert p.decide(0.80, 8.0)[0] and p.decide(0.70, 5.0)[0]  # the first two always
    assert not p.decide(0.75, 9.0)[0]  # dominated by (0.80, 8.0)
    assert p.decide(0.795, 8.5)[0]  # within the 1-point slack of the front
    assert p.decide(0.60, 3.0)[0]  # new trade-off: faster
    assert not p.decide(0.99, 20.0)[0]  # far over the latency budget
    assert p.decide(0.50, 50.0, True) == (True, "warm start")


def test_front_and_hypervolume_by_hand():
    rows = [{"accuracy": a, "latency_ms": l} for a, l in [(0.9, 10), (0.8, 5), (0.85, 12), (0.7, 5), (0.6, 2)]]
    assert [(r["accuracy"], r["latency_ms"]) for r in front(rows)] == [(0.6, 2), (0.8, 5), (0.9, 10)]
    assert dominates((0.9, 10), (0.85, 12), ("maximize", "minimize"))
    # reference (0.5, 20): strips [2,5)×0.1 + [5,10)×0.3 + [10,20)×0.4 = 0.3 + 1.5 + 4.0
    assert hypervolume([(0.9, 10), (0.8, 5), (0.6, 2), (0.85, 12)], (0.5, 20)) == pytest.approx(5.8)
    assert hypervolume([(0.4, 1)], (0.5, 20)) == 0.0


def test_pick_best_under_budget_or_closest():
    rows = [{"accuracy": 0.9, "latency_ms": 10, "size_mb": 90}, {"accuracy": 0.8, "latency_ms": 5, "size_mb": 20}]
    best, meets, _ = pick(rows, Budget(latency_ms=6), 0.9)
    assert meets and best["accuracy"] == 0.8
    best, meets, why = pick(rows, Budget(latency_ms=1), 0.9)
    assert not meets and best["latency_ms"] == 5 and "NO candidate" in why


def _same(space, plan, params, dims=DIMS):
    back = space.sample(optuna.trial.FixedTrial(params), dims)
    sizes = (dims["num_layers"], dims["num_heads"], dims["intermediate_size"], dims["hidden_size"])
    return back.resolve(*sizes) == plan.resolve(*sizes) and back.distill.weights == plan.distill.weights \
        and back.distill.steps == plan.distill.steps


@pytest.mark.parametrize("budget_ms", [4.0, 8.0, 13.0, 20.0, 40.0])
def test_decision_tree_plans_are_points_of_the_joint_space(budget_ms):
    """Enqueued by parameters, the baseline informs the sampler; the parameters must give it back."""
    from autocompress.baseline import walk

    def predict(plan):  # a stand-in latency model: proportional to kept layers and FFN width
        r = plan.resolve(6, 12, 1536, 384)
        return sum(1.0 + 2.0 * x.ffn / 1536 for x in r if x.keep) * (0.6 if r[0].dtype["q"] == "int8" else 1.0)

    plan = walk(DIMS, Budget(latency_ms=budget_ms), "torch", predict).plan
    space = SearchSpace.load("joint")
    params = space.params_for(plan, DIMS)
    assert params is not None, plan.to_dict()
    assert _same(space, plan, params)


def test_plans_outside_a_space_have_no_parameters():
    from autocompress.plan import CompressionPlan, DistillConfig, LayerPlan

    joint = SearchSpace.load("joint")
    kd = DistillConfig(steps=joint.kd_steps, lr=joint.kd_lr, weights={"logits": 1.0})
    inside = CompressionPlan(name="in", defaults=LayerPlan(ffn=0.5, dtype={"ffn_in": "int8", "ffn_out": "int8"}),
                             layers={3: LayerPlan(keep=False), 1: LayerPlan(heads=6)}, distill=kd)
    params = joint.params_for(inside, DIMS)
    assert params is not None and params["layer3.keep"] is False and params["layer1.heads"] == 0.5
    assert _same(joint, inside, params)
    outside = [
        CompressionPlan(name="ffn-0.6", defaults=LayerPlan(ffn=0.6), distill=kd),  # width not a choice
        CompressionPlan(name="mixed-group", defaults=LayerPlan(dtype={"q": "int8"}), distill=kd),  # q alone
        CompressionPlan(name="drop-bottom", layers={0: LayerPlan(keep=False)}, distill=kd),  # always_keep [0]
        CompressionPlan(name="lr", layers={2: LayerPlan(keep=False)},
                        distill=DistillConfig(steps=joint.kd_steps, lr=3e-3)),  # recovery not the space's
        CompressionPlan(name="steps", distill=DistillConfig(steps=17, lr=joint.kd_lr)),
        CompressionPlan(name="map", layers={2: LayerPlan(keep=False)},  # a layer map the space never samples
                        distill=DistillConfig(steps=joint.kd_steps, lr=joint.kd_lr, weights={"hidden": 1.0},
                                              layer_map=(0, 1, 2, 3, 5))),
    ]
    for plan in outside:
        assert joint.params_for(plan, DIMS) is None, plan.name
    quant = SearchSpace.load("quant_only")
    assert quant.params_for(inside, DIMS) is None  # structure is not in the int8-only space
    int8 = CompressionPlan(name="int8", defaults=LayerPlan(dtype="int8"))
    assert _same(quant, int8, quant.params_for(int8, DIMS))


def test_tied_space_takes_only_uniform_plans():
    from autocompress.plan import CompressionPlan, LayerPlan

    tied = SearchSpace.from_dict({"schema": "autocompress.space/v1", "tie_layers": True,
                                  "layers": {"keep": [True, False], "ffn": [1.0, 0.5]}})
    uniform = CompressionPlan(name="u", defaults=LayerPlan(ffn=0.5), layers={4: LayerPlan(keep=False)})
    assert _same(tied, uniform, tied.params_for(uniform, DIMS))
    ragged = CompressionPlan(name="r", layers={2: LayerPlan(ffn=0.5)})
    assert tied.params_for(ragged, DIMS) is None


def test_the_default_study_name_tells_runtimes_apart():
    from autocompress.options import SearchOptions, search_configs

    torch_run = search_configs(SearchOptions())[1]
    assert torch_run.study_name == "minilm-l6-rotten-tomatoes-allocated-tpe"  # as the README says
    assert torch_run.out.parts[-2:] == ("runs", "minilm-l6-rotten-tomatoes-allocated-tpe")
    assert search_configs(SearchOptions(runtime="onnxruntime"))[1].study_name.endswith("-tpe-onnxruntime")
    assert search_configs(SearchOptions(runtime="auto"))[1].study_name.endswith("-tpe-auto")


def test_sampler_seed_defaults_to_the_seed_and_can_be_set_alone(tmp_path):
    """--sampler-seed varies the search alone; the task seed (data split, teacher, KD) stays."""
    from autocompress.cli import build_parser
    from autocompress.options import SearchOptions, search_configs

    base = ["search", "--budget", "13ms", "--out", str(tmp_path / "run"), "--seed", "3"]
    args = SearchOptions.from_args(build_parser().parse_args(base))
    assert search_configs(args)[0].seed == 3
    args = SearchOptions.from_args(build_parser().parse_args(base + ["--sampler-seed", "11"]))
    search, _ = search_configs(args)
    assert search.seed == 11 and args.seed == 3


def test_under_a_latency_budget_only_candidates_that_could_be_the_pick_are_promoted():
    p = Promoter(Fidelity(min_promote=1, promote_slack=0.01), Budget(latency_ms=10))
    assert p.rule() == "pick" and Promoter(Fidelity(), Budget()).rule() == "front"
    assert p.decide(0.80, 8.0)[0]                  # the first one
    assert not p.decide(0.99, 12.0)[0]             # over the budget, however accurate
    assert not p.decide(0.60, 3.0)[0]              # faster, but it cannot be the most accurate under 10 ms
    assert p.decide(0.795, 9.5)[0]                 # within the slack of the best under the budget
    assert p.decide(0.85, 9.9)[0]                  # the new best
    assert not p.decide(0.80, 5.0)[0]              # now below the best
    assert p.decide(0.90, 10.5)[0]                 # predicted within 10% of the budget: may meet it measured
    assert p.decide(0.10, 50.0, True) == (True, "warm start")


def test_a_screen_measured_over_the_budget_no_longer_holds_the_others_back():
    p = Promoter(Fidelity(min_promote=1, promote_slack=0.01), Budget(latency_ms=10))
    assert p.decide(0.85, 9.5)[0]            # predicted under the budget: the best so far
    assert not p.decide(0.80, 8.0)[0]        # held below it
    p.measure(0.85, 9.5, 10.6)               # measured: over the budget, it cannot be the pick
    assert p.under_budget(0.80, 8.0) and not p.under_budget(0.85, 9.5)
    assert p.decide(0.80, 8.0)[0]            # so the best screen that may meet it is the bar
    p.measure(0.80, 8.0, 9.9)
    assert not p.decide(0.77, 7.0)[0]        # measured under the budget: it holds the others back
    assert p.under_budget(0.70, 10.9) and not p.under_budget(0.70, 11.1)  # predicted: within 10%


def test_the_promoter_refuses_a_full_run_that_would_end_after_the_deadline():
    import time

    p = Promoter(Fidelity(min_promote=5), Budget(), deadline=time.time() + 100)
    assert p.decide(0.8, 5.0, False, 60.0)[0]
    promote, why = p.decide(0.8, 5.0, False, 160.0)
    assert not promote and "after the time limit" in why
    assert p.decide(0.8, 5.0, True, 160.0) == (True, "warm start")  # warm starts run whatever
    assert Promoter(Fidelity(min_promote=5), Budget()).decide(0.8, 5.0, False, 1e9)[0]  # no deadline


def test_under_a_budget_a_screen_within_its_standard_error_of_the_best_is_promoted():
    p = Promoter(Fidelity(min_promote=1, promote_slack=0.0, screen_examples=400), Budget(latency_ms=10))
    assert p.decide(0.7925, 5.0)[0]
    assert p.screen_error(0.7925) == pytest.approx(0.0203, abs=1e-4)  # 400 examples: ~2 points
    assert p.decide(0.7825, 5.0)[0] and p.decide(0.775, 5.0)[0]  # could still be the pick
    assert not p.decide(0.76, 5.0)[0]
    exact = Promoter(Fidelity(min_promote=1, promote_slack=0.0, screen_examples=40000), Budget(latency_ms=10))
    assert exact.decide(0.7925, 5.0)[0] and not exact.decide(0.775, 5.0)[0]  # a screen on many examples: tight
    wide = Promoter(Fidelity(min_promote=1, promote_slack=0.05, screen_examples=400), Budget(latency_ms=10))
    assert wide.decide(0.7925, 5.0)[0] and wide.decide(0.75, 5.0)[0]  # a larger slack still counts


def test_the_result_hook_feeds_measured_latency_and_moves_the_deadline():
    from types import SimpleNamespace

    from autocompress.search.fidelity import result_hook

    p = Promoter(Fidelity(min_promote=1, promote_slack=0.01), Budget(latency_ms=10), deadline=100.0)
    stop_at = SimpleNamespace(end=lambda: 50.0)
    hook = result_hook(lambda name, *args: getattr(p, name)(*args), stop_at)
    assert p.decide(0.85, 9.5)[0]
    hook({"fidelity": "full", "screen_accuracy": 0.85, "screen_latency_ms": 9.5, "latency_ms": 10.6})
    assert p.measured == [(0.85, 9.5, 10.6)] and p.deadline == 50.0  # the front's re-measurement counted
    hook({"fidelity": "screen", "screen_accuracy": 0.7, "screen_latency_ms": 5.0, "latency_ms": 5.0})
    assert len(p.measured) == 1  # a screen has no measurement
    assert Promoter(Fidelity(promote="pick"), Budget()).under_budget(0.5, 1e9)  # no latency budget: any


def test_sampling_waits_for_running_trials_instead_of_finishing_for_good():
    """Ray Tune's search ends for good at FINISHED: with trials still running, the searcher waits
    (None), so the stop may move when they end (nothing kept back for a polish that no longer fits)."""
    from types import SimpleNamespace

    from ray.tune.search import Searcher

    from autocompress.objectives import Objectives
    from autocompress.plan import CompressionPlan
    from autocompress.search.searcher import StudySearcher

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(directions=["maximize", "minimize"])
    space = SimpleNamespace(sample=lambda trial, dims: CompressionPlan(name="p"))
    stop = [float("inf")]
    searcher = StudySearcher(study, space, {}, Objectives(), Budget(), 0.8, stop_at=lambda: stop[0])
    searcher.step_s = 0.4
    config = searcher.suggest("a")
    assert config["step_s"] == 0.4  # for a candidate screened without KD steps
    stop[0] = 0.0  # the stop has passed
    assert searcher.suggest("b") is None  # "a" still runs
    searcher.on_trial_complete("a", {"error": "stopped"})
    assert searcher.suggest("c") == Searcher.FINISHED  # none running: the search is over


def test_sampling_stops_once_the_shortest_full_run_seen_no_longer_fits(capsys):
    """A candidate sampled when no full run can end by the time limit is screened and left there:
    once the time left is under the shortest full run expected after a screen in this run (the
    teacher's and the baseline's excluded: no KD), the searcher finishes, says so once, and records
    it in the study."""
    import time
    from types import SimpleNamespace

    from ray.tune.search import Searcher

    from autocompress.objectives import Objectives
    from autocompress.plan import CompressionPlan, LayerPlan
    from autocompress.search.searcher import StudySearcher

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(directions=["maximize", "minimize"])
    heads = iter(range(1, 100))
    space = SimpleNamespace(sample=lambda trial, dims: CompressionPlan(name="p", layers={0: LayerPlan(heads=next(heads))}))
    end = [time.time() + 150.0]
    stop_at = lambda: float("inf")  # noqa: E731 (nothing kept back for polishing)
    stop_at.end = lambda: end[0]
    searcher = StudySearcher(study, space, {}, Objectives(), Budget(), 0.8, stop_at=stop_at)
    study.enqueue_trial({}, user_attrs={"warm_start": "teacher"})
    searcher.suggest("t")
    searcher.on_trial_complete("t", {"accuracy": 0.8, "latency_ms": 9.0, "fidelity": "full", "seconds": 1.0,
                                     "full_seconds_expected": 2.0})
    assert searcher.cheapest_full is None  # the teacher's full run (no KD) says nothing of a candidate's
    searcher.suggest("a")
    searcher.on_trial_complete("a", {"accuracy": 0.7, "latency_ms": 4.0, "fidelity": "screen", "seconds": 1.0,
                                     "full_seconds_expected": 120.0})
    assert searcher.suggest("b") is not None  # 150 s left hold a 120 s full run
    searcher.on_trial_complete("b", {"accuracy": 0.7, "latency_ms": 5.0, "fidelity": "screen", "seconds": 1.0,
                                     "full_seconds_expected": 300.0})
    assert searcher.cheapest_full == 120.0 and searcher.shortest_screen == 1.0
    assert searcher.suggest("c") is not None  # still 150 s left: "c" runs
    end[0] = time.time() + 120.5  # holds the full run, not a screen before it
    assert searcher.suggest("d") is None  # the stop, with "c" still running: the searcher waits...
    searcher.on_trial_complete("c", {"accuracy": 0.7, "latency_ms": 5.0, "fidelity": "screen", "seconds": 1.0,
                                     "full_seconds_expected": 30.0})  # ... and a shorter one, once stopped,
    end[0] = time.time() + 3600.0  # or more time, does not restart a search said to be over
    assert searcher.suggest("e") == Searcher.FINISHED
    assert study.user_attrs["sampling_ended"]["shortest_full_s"] == 120.0
    assert 110 < study.user_attrs["sampling_ended"]["seconds_left"] <= 120.5
    assert capsys.readouterr().err.count("sampling stopped") == 1
    # without a time limit, before any candidate's full run was estimated, or with warm starts
    # still to run, sampling goes on
    free = StudySearcher(optuna.create_study(directions=["maximize", "minimize"]), space, {}, Objectives(),
                         Budget(), 0.8)
    free.cheapest_full = 1e9
    assert free.suggest("e") is not None
    fresh = StudySearcher(optuna.create_study(directions=["maximize", "minimize"]), space, {}, Objectives(),
                          Budget(), 0.8, stop_at=stop_at)
    assert fresh.suggest("f") is not None and fresh.cheapest_full is None
    warm = StudySearcher(optuna.create_study(directions=["maximize", "minimize"]), space, {}, Objectives(),
                         Budget(), 0.8, stop_at=stop_at, min_trials=2)
    warm.cheapest_full = 1e9
    assert warm.suggest("g") is not None and warm.suggest("h") is not None  # the two warm starts
    assert warm.suggest("i") is None  # then the stop (both still running)


def test_a_sample_that_repeats_an_evaluated_or_running_plan_is_not_run_again():
    """Two samples often allocate to one plan (runs/check19: trials 12 and 13, both run in full):
    the repeat is recorded as pruned with ``duplicate_of`` and the next sample runs instead; names
    and descriptions do not make plans different; a warm start in the repeat's place no longer
    holds the stop back; the report counts the repeats."""
    from types import SimpleNamespace

    from autocompress.objectives import Objectives
    from autocompress.plan import CompressionPlan, LayerPlan
    from autocompress.report import fidelity_stats, study_rows
    from autocompress.search.searcher import StudySearcher

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(directions=["maximize", "minimize"])
    drawn = iter([0, 0, 1, 1, 0, 2])  # which plan each sample allocates to

    def sample(trial, dims):
        k = next(drawn)
        return CompressionPlan(name=f"trial-{trial.number}", description=f"sample {trial.number}",
                               layers={0: LayerPlan(heads=2 + k)})

    searcher = StudySearcher(study, SimpleNamespace(sample=sample), {}, Objectives(), Budget(), 0.8)
    first = searcher.suggest("a")
    second = searcher.suggest("b")  # plan 0 is running: its repeat is skipped, plan 1 runs
    assert (first["number"], second["number"]) == (0, 2)
    assert second["plan"]["layers"] != first["plan"]["layers"]
    searcher.on_trial_complete("a", {"accuracy": 0.8, "latency_ms": 5.0, "fidelity": "full", "seconds": 1.0})
    searcher.on_trial_complete("b", {"accuracy": 0.7, "latency_ms": 4.0, "fidelity": "screen", "seconds": 1.0})
    third = searcher.suggest("c")  # plans 1 and 0 again (finished), then plan 2
    assert third["number"] == 5 and list(third["plan"]["layers"].values())[0]["heads"] == 4
    pruned = study.get_trials(states=(optuna.trial.TrialState.PRUNED,))
    assert [(t.number, t.user_attrs["duplicate_of"]) for t in pruned] == [(1, 0), (3, 2), (4, 0)]
    assert searcher.asked == 3
    assert fidelity_stats(study_rows(study))["duplicates"] == 3
    # a warm start that repeats a plan: the search no longer waits for it before it may stop
    study.enqueue_trial({}, user_attrs={"warm_start": "recipe: x"})
    again = StudySearcher(study, SimpleNamespace(sample=lambda trial, dims: CompressionPlan(
        name="r", layers={0: LayerPlan(heads=2)})), {}, Objectives(), Budget(), 0.8, stop_at=lambda: 0.0, min_trials=1)
    assert again.suggest("d") is not None and again.min_trials == 0


def test_a_candidate_measured_over_the_budget_is_refitted_once_with_its_target_scaled():
    from types import SimpleNamespace

    from autocompress.objectives import Objectives
    from autocompress.search.searcher import REFIT_MARGIN, StudySearcher

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(directions=["maximize", "minimize"])
    space = SimpleNamespace(target=(0.2, 1.0))
    searcher = StudySearcher(study, space, {}, Objectives(), Budget(latency_ms=10.0), 0.8)

    def asked(params, **attrs):
        study.enqueue_trial(params, user_attrs=attrs)
        trial = study.ask()
        trial.suggest_float("target", 0.2, 1.0, log=True)
        trial.suggest_categorical("width", ["ffn", "measured"])
        return trial

    recipe = asked({"target": 0.5, "width": "ffn"}, warm_start="recipe: every other layer")
    assert searcher.refit(recipe, {"fidelity": "full", "latency_ms": 12.5})
    [queued] = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    fixed = queued.system_attrs["fixed_params"]  # what the queued trial will be asked with
    assert fixed["target"] == pytest.approx(0.5 * 10.0 / 12.5 * (1 - REFIT_MARGIN))
    assert fixed["width"] == "ffn"  # only the target changes
    assert queued.user_attrs == {"refit_of": recipe.number, "warm_start": "recipe: every other layer (refit)"}
    refitted = study.ask()
    refitted.suggest_float("target", 0.2, 1.0, log=True)
    assert not searcher.refit(refitted, {"fidelity": "full", "latency_ms": 11.0})  # not a refit of a refit
    for result in ({"fidelity": "full", "latency_ms": 9.9}, {"fidelity": "screen", "latency_ms": 12.5}):
        assert not searcher.refit(asked({"target": 0.5, "width": "ffn"}), result)
    floor = asked({"target": 0.21, "width": "ffn"})
    assert searcher.refit(floor, {"fidelity": "full", "latency_ms": 20.0})
    assert study.get_trials(states=(optuna.trial.TrialState.WAITING,))[-1].system_attrs["fixed_params"]["target"] == 0.2
    unbudgeted = StudySearcher(study, space, {}, Objectives(), Budget(), 0.8)
    assert not unbudgeted.refit(asked({"target": 0.5, "width": "ffn"}), {"fidelity": "full", "latency_ms": 12.5})


class _Searcher:
    """Suggests ``n`` trials and records what the executor tells it, as StudySearcher does."""

    def __init__(self, n):
        self.n, self.done = n, []

    def suggest(self, trial_id):
        from ray.tune.search import Searcher

        number = len(self.done)
        return Searcher.FINISHED if number >= self.n else {"number": number}

    def on_trial_complete(self, trial_id, result=None, error=False):
        self.done.append((trial_id, result))


class _Bar:
    def __init__(self):
        self.rows = []

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.rows.append(trial.last_result)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.rows.append(None)


def test_the_local_executor_runs_every_suggestion_in_turn_and_reports_each():
    from autocompress.search.workers import run_local

    searcher, bar = _Searcher(3), _Bar()
    run_local(searcher, lambda config: {"accuracy": config["number"] / 10}, bar, deadline=None)
    assert [r["accuracy"] for _, r in searcher.done] == [0.0, 0.1, 0.2]
    assert len({t for t, _ in searcher.done}) == 3 and bar.rows == [r for _, r in searcher.done]


def test_the_local_executor_stops_a_running_trial_at_the_deadline_and_records_it_unfinished():
    import time

    import ray.tune.search  # noqa: F401  imported before the clock starts: cold, it took over the 1 s

    from autocompress.search.workers import run_local

    searcher, bar = _Searcher(5), _Bar()

    def run_one(config):
        if config["number"] == 1:
            time.sleep(30)  # interrupted by the deadline
        return {"accuracy": 0.5}

    start = time.time()
    run_local(searcher, run_one, bar, deadline=start + 1.0)
    assert time.time() - start < 10
    assert [r for _, r in searcher.done] == [{"accuracy": 0.5}, None]  # None: stopped before it finished
    assert bar.rows == [{"accuracy": 0.5}, None]


def test_trials_end_before_the_deadline_by_the_fronts_re_measurement_and_not_within_30_seconds():
    import time

    from autocompress.search.workers import end_stopper, trials_end

    class StopAt:
        ends = 0

        def end(self):
            self.ends += 1
            return self.value

    now = time.time()
    assert trials_end(None) is None
    stop_at = StopAt()
    stop_at.value = now + 500
    end = trials_end(now + 600, stop_at, every=3600)
    assert end() == now + 500 and stop_at.ends == 1
    stop_at.value = now + 400  # the front grew: read again only after `every` seconds
    assert end() == now + 500 and stop_at.ends == 1
    assert trials_end(now + 600, stop_at, every=0)() == now + 400
    stop_at.value = now + 900  # never after the deadline
    assert trials_end(now + 600, stop_at, every=0)() == now + 600
    assert trials_end(now + 600)() == now + 600  # no stop_at: the deadline
    assert trials_end(now - 10)() >= now + 29  # past already: as Ray Tune's time budget, 30 s at least
    assert not end_stopper(lambda: time.time() + 60).stop_all()
    assert end_stopper(lambda: time.time() - 1).stop_all()
    assert end_stopper(lambda: 0.0)("trial", {}) is False  # no single trial is stopped on its results


def test_the_local_executor_reads_a_moving_deadline_as_each_trial_starts():
    import time

    from autocompress.search.workers import run_local

    searcher, bar = _Searcher(5), _Bar()
    limits = iter([time.time() + 60, time.time() + 60, time.time() - 1])
    run_local(searcher, lambda config: {"accuracy": 0.5}, bar, lambda: next(limits))
    assert [r for _, r in searcher.done] == [{"accuracy": 0.5}] * 2  # the third read said: stop


_DANGLING_ALTSTACK = """
import ctypes, mmap, sys, time
import ray.tune.search  # before the 1-second clock starts
sys.path[:0] = [{tests!r}]
from test_search_units import _Bar, _Searcher
from autocompress.search.workers import run_local

class Stack(ctypes.Structure):
    _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]

# what OpenVINO's CPU plugin leaves behind: an alternate signal stack whose memory is gone
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
size = 1 << 16
sp = libc.mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
assert libc.sigaltstack(ctypes.byref(Stack(sp, 0, size)), None) == 0
libc.munmap(sp, size)

def run_one(config):
    if config["number"] == 1:
        time.sleep(30)
    return {{"accuracy": 0.5}}

searcher, bar = _Searcher(3), _Bar()
run_local(searcher, run_one, bar, deadline=time.time() + 1.0)
print([r for _, r in searcher.done])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sigaltstack through libc")
def test_the_local_executors_deadline_survives_an_alternate_signal_stack_left_dangling(tmp_path):
    import subprocess

    script = tmp_path / "dangling.py"
    script.write_text(_DANGLING_ALTSTACK.format(tests=str(Path(__file__).parent)))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])  # -11 (SIGSEGV) before the fix
    assert done.stdout.strip().splitlines()[-1] == "[{'accuracy': 0.5}, None]"


@pytest.mark.parametrize("extra", [["--workers", "2"], ["--ray-address", "127.0.0.1:6379"]])
def test_the_local_executor_refuses_what_needs_ray_with_one_line(tmp_path, capsys, extra):
    from autocompress.cli import main

    assert main(["search", "--executor", "local", *extra, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--executor local runs one trial at a time" in err[0], err
    assert not (tmp_path / "run").exists()
