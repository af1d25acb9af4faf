"""The latency predictor: features, the non-negative fit, monotonicity, caching by device fingerprint,
random/structured/calibration plans, the two-pass measurement protocol, the check's drift report,
and real (tiny, fast) builds. No test asserts a measured timing."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

import autocompress.latency.predictor as predictor_mod
import autocompress.latency.target as target_mod
from autocompress.errors import UserError
from autocompress.latency import LatencyStats, Target
from autocompress.latency.predictor import (
    FEATURE_NAMES,
    Grid,
    LatencyPredictor,
    cache_path,
    calibration_plans,
    check,
    cross_validate,
    fit_costs,
    fit_table,
    get_predictor,
    measure_plans,
    model_dims,
    plan_features,
    random_plan,
    structured_plan,
)
from autocompress.plan import LINEAR_GROUPS, CompressionPlan, LayerPlan, ResolvedLayer

MINILM = {"model_type": "bert", "num_layers": 6, "num_heads": 12, "intermediate_size": 1536, "hidden_size": 384,
          "vocab_size": 30522}
TARGET = Target(runtime="torch", threads=1, seq_len=16)
ORT = Target(runtime="onnxruntime", threads=1, seq_len=16)
ALL_INT8 = dict.fromkeys(LINEAR_GROUPS, "int8")


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOCOMPRESS_HOME", str(tmp_path / "home"))


def _resolve(plan, dims=MINILM):
    return predictor_mod._resolve(plan, dims)


def _cost(r: ResolvedLayer, dims) -> float:
    """A synthetic per-layer cost: linear costs ~ in*out, int8 cheaper plus a per-linear overhead,
    low-rank = two linears plus a kernel's overhead."""
    cost = 0.05 + 0.002 * r.heads + 0.0001 * r.ffn
    for g in LINEAR_GROUPS:
        n_in, n_out = predictor_mod.linear_shape(g, r.heads, r.ffn, dims)
        scale = 0.4 if r.dtype[g] == "int8" else 1.0
        extra = 0.01 if r.dtype[g] == "int8" else 0.0
        if r.rank[g] is None:
            cost += scale * n_in * n_out * 1e-6 + extra
        else:
            cost += scale * (n_in + n_out) * r.rank[g] * 1e-6 + 2 * extra + 0.005
    return cost


def _truth(resolved, dims=MINILM) -> float:
    return 0.3 + sum(_cost(r, dims) for r in resolved if r.keep)


def synthetic_predictor(dims=MINILM, grid=Grid(), noise_seed=None, target=TARGET, truth=_truth) -> LatencyPredictor:
    """A predictor fitted to synthetic measurements of the calibration plans (3% noise if seeded)."""
    rng = np.random.default_rng(noise_seed) if noise_seed is not None else None
    resolved = [_resolve(p, dims) for p in calibration_plans(dims, grid, target.runtime)]
    measured = [truth(r, dims) * (1 + rng.normal(0, 0.03) if rng is not None else 1) for r in resolved]
    return LatencyPredictor(fit_table(resolved, measured, dims, target, grid))


def _errors(pred, plans, truth=_truth):
    out = []
    for plan in plans:
        resolved = _resolve(plan)
        out.append(abs(pred.predict(resolved) - truth(resolved)) / truth(resolved))
    return np.array(out)


# ----------------------------------------------------------------------------- features and fit


def test_features_count_what_each_runtime_runs():
    keep_all = plan_features(_resolve(CompressionPlan.keep_all()), MINILM, TARGET)
    f = dict(zip(FEATURE_NAMES, keep_all))
    assert f["fixed"] == 1 and f["layers"] == 6 and f["fp32_matmuls"] == 36 and f["int8_matmuls"] == 0
    macs = 16 * 6 * (4 * 384 * 384 + 2 * 384 * 1536) / 1e9  # tokens x layers x linear weights
    assert f["fp32_linear"] == pytest.approx(macs)
    assert f["attention"] == pytest.approx(6 * 12 * 2 * 16 * 16 * 32 / 1e9)
    assert f["quantized_inputs"] == f["dtype_switches"] == f["int8_used"] == 0

    int8 = CompressionPlan(name="i", defaults=LayerPlan(dtype=ALL_INT8))
    torch_f = dict(zip(FEATURE_NAMES, plan_features(_resolve(int8), MINILM, TARGET)))
    ort_f = dict(zip(FEATURE_NAMES, plan_features(_resolve(int8), MINILM, ORT)))
    assert torch_f["int8_linear"] == pytest.approx(macs) and torch_f["fp32_linear"] == 0
    assert torch_f["quantized_inputs"] == 36  # torch quantizes every linear's input
    assert ort_f["quantized_inputs"] == 24  # ONNX Runtime quantizes the input of q, k, v once
    assert torch_f["int8_used"] == 1 and torch_f["int8_layers"] == 6 and torch_f["dtype_switches"] == 0

    # a low-rank int8 linear is two int8 matmuls, each quantizing its own input
    lowrank = CompressionPlan(name="r", layers={0: LayerPlan(rank={"ffn_in": 8}, dtype={"ffn_in": "int8"})})
    f = dict(zip(FEATURE_NAMES, plan_features(_resolve(lowrank), MINILM, ORT)))
    assert f["int8_matmuls"] == 2 and f["fp32_matmuls"] == 35 and f["quantized_inputs"] == 2
    assert f["int8_linear"] == pytest.approx(16 * (384 * 8 + 8 * 1536) / 1e9)
    assert f["dtype_switches"] == 2


def test_costs_linear_in_the_features_are_recovered():
    rng = np.random.default_rng(0)
    plans = [_resolve(p) for p in calibration_plans(MINILM, Grid(), "onnxruntime")]
    X = np.array([plan_features(r, MINILM, ORT) for r in plans])
    costs = rng.uniform(0.0, 1.0, X.shape[1]) / np.maximum(X.max(axis=0), 1e-9)
    costs[[FEATURE_NAMES.index("dtype_switches"), FEATURE_NAMES.index("int8_layers")]] = 0.0
    fitted = fit_costs(X, X @ costs)
    new = np.array([plan_features(_resolve(random_plan(MINILM, rng)), MINILM, ORT) for _ in range(30)])
    assert np.all(fitted >= 0)
    np.testing.assert_allclose(new @ fitted, new @ costs, rtol=1e-6)


def test_physically_plausible_costs_are_predicted_closely():
    pred = synthetic_predictor()
    rng = np.random.default_rng(0)
    errors = _errors(pred, [random_plan(MINILM, rng) for _ in range(40)] +
                     [structured_plan(MINILM, rng) for _ in range(20)])
    assert errors.mean() < 0.03 and errors.max() < 0.10
    fit, cv = pred.table["fit"], pred.table["cross_validation"]
    assert fit["plans"] == len(pred.table["plans"]) and fit["mape"] < 0.03 and cv["mape"] < 0.05


def test_cross_validation_reports_held_out_error():
    rng = np.random.default_rng(1)
    X = rng.uniform(0.1, 1.0, (40, 3))
    y = X @ np.array([1.0, 2.0, 0.5])
    cv = cross_validate(X, y)
    assert cv["mape"] < 1e-6 and cv["within_10pct"] == 1.0
    assert cross_validate(X[:6], y[:6]) == {}  # too few plans for 5 folds


# ----------------------------------------------------------------------------- monotonicity


def _fits(r, heads, ffn):
    """The layer's ranks are still valid with this many heads / this FFN width."""
    return all(k is None or k <= predictor_mod.max_rank(g, heads, ffn, MINILM) for g, k in r.rank.items())


def _replace(resolved, i, **changes):
    out = list(resolved)
    out[i] = ResolvedLayer(**{**out[i].__dict__, **changes})
    return out


def _assert_monotone(pred, plans):
    for plan in plans:
        resolved = _resolve(plan)
        for i, r in enumerate(resolved):
            if not r.keep:
                continue
            by_heads = [pred.predict(_replace(resolved, i, heads=h)) for h in range(1, 13) if _fits(r, h, r.ffn)]
            assert all(b >= a - 1e-9 for a, b in zip(by_heads, by_heads[1:])), by_heads
            by_ffn = [pred.predict(_replace(resolved, i, ffn=w)) for w in range(8, 1537, 40) if _fits(r, r.heads, w)]
            assert all(b >= a - 1e-9 for a, b in zip(by_ffn, by_ffn[1:])), by_ffn
        kept = [i for i, r in enumerate(resolved) if r.keep]
        if len(kept) > 1:
            dropped = _replace(resolved, kept[0], keep=False, heads=0, ffn=0)
            assert pred.predict(dropped) < pred.predict(resolved)


@pytest.mark.parametrize("noise_seed", [None, 1, 2])
def test_predictions_are_monotone_in_heads_ffn_and_layers(noise_seed):
    pred = synthetic_predictor(noise_seed=noise_seed)  # noisy measurements are not monotone by themselves
    rng = np.random.default_rng(3)
    _assert_monotone(pred, [random_plan(MINILM, rng) for _ in range(12)] + [structured_plan(MINILM, rng)
                                                                           for _ in range(4)])


def test_predictions_stay_monotone_when_measurements_say_otherwise():
    """Measurements in which fewer heads and a narrower FFN are *slower* (a least-squares fit would
    learn negative costs): the fitted costs stay non-negative, so predictions stay monotone."""
    def perverse(resolved, dims):
        kept = [r for r in resolved if r.keep]
        return 1.0 + sum(1.0 + 0.05 * (12 - r.heads) + 0.0005 * (1536 - r.ffn) for r in kept)

    pred = synthetic_predictor(truth=perverse, target=ORT)
    X = np.array([r["features"] for r in pred.table["plans"]])
    y = np.array([r["measured"] for r in pred.table["plans"]])
    unconstrained, *_ = np.linalg.lstsq(X / y[:, None], np.ones(len(y)), rcond=None)
    assert unconstrained.min() < 0  # the data really asks for negative costs
    assert min(pred.table["costs"].values()) >= 0
    rng = np.random.default_rng(4)
    _assert_monotone(pred, [random_plan(MINILM, rng) for _ in range(6)])


def test_fewer_heads_ffn_layers_and_int8_predict_less():
    pred = synthetic_predictor()
    full = pred.predict(CompressionPlan.keep_all())
    assert pred.predict(CompressionPlan(name="h", defaults=LayerPlan(heads=6))) < full
    assert pred.predict(CompressionPlan(name="f", defaults=LayerPlan(ffn=0.5))) < full
    assert pred.predict(CompressionPlan(name="l", layers={1: LayerPlan(keep=False)})) < full
    assert pred.predict(CompressionPlan(name="i", defaults=LayerPlan(dtype=ALL_INT8))) < full
    parts = pred.breakdown(CompressionPlan.keep_all())
    assert set(parts) == set(FEATURE_NAMES) and sum(parts.values()) == pytest.approx(full)


def test_plan_that_does_not_fit_the_table_is_a_user_error():
    pred = synthetic_predictor()
    with pytest.raises(UserError):
        pred.predict(CompressionPlan(name="x", defaults=LayerPlan(heads=13)))
    with pytest.raises(UserError, match="layers"):
        pred.predict(CompressionPlan.keep_all().resolve(4, 12, 1536, 384))


# ----------------------------------------------------------------------------- plans


def test_random_plans_are_valid_varied_and_reproducible():
    plans = [random_plan(MINILM, np.random.default_rng(5)) for _ in range(2)]
    assert plans[0].to_dict() == plans[1].to_dict()
    rng = np.random.default_rng(6)
    seen = {"dropped": 0, "heads": 0, "ffn": 0, "rank": 0, "int8": 0}
    for _ in range(40):
        resolved = _resolve(random_plan(MINILM, rng))  # validates ranks vs shapes
        assert any(r.keep for r in resolved)
        seen["dropped"] += any(not r.keep for r in resolved)
        seen["heads"] += any(r.keep and r.heads < 12 for r in resolved)
        seen["ffn"] += any(r.keep and r.ffn < 1536 for r in resolved)
        seen["rank"] += any(k is not None for r in resolved for k in r.rank.values())
        seen["int8"] += any(d == "int8" for r in resolved for d in r.dtype.values())
    assert all(v >= 5 for v in seen.values()), seen


def test_structured_plans_have_identical_layers_and_reach_the_corners():
    rng = np.random.default_rng(7)
    layer_counts, tiny, factorised = set(), 0, 0
    for _ in range(60):
        kept = [r for r in _resolve(structured_plan(MINILM, rng)) if r.keep]
        assert all((r.heads, r.ffn, r.rank, r.dtype) == (kept[0].heads, kept[0].ffn, kept[0].rank, kept[0].dtype)
                   for r in kept)
        layer_counts.add(len(kept))
        tiny += kept[0].heads == 1 and kept[0].ffn <= 1536 // 8
        factorised += all(k is not None for k in kept[0].rank.values())
    assert layer_counts == set(range(1, 7)) and tiny >= 1 and factorised >= 10


def test_calibration_plans_include_the_references_small_and_structured_plans():
    grid = Grid()
    onnx = calibration_plans(MINILM, grid, "onnxruntime")
    torch = calibration_plans(MINILM, grid, "torch")
    assert len(onnx) == 5 + grid.plans + grid.structured
    assert len(torch) == 5 + grid.torch_scale * (grid.plans + grid.structured)
    names = [p.name for p in onnx]
    assert {"keep-all", "int8", "half-heads", "half-ffn", "half-layers"} <= set(names)
    assert names[:5] != ["keep-all", "int8", "half-heads", "half-ffn", "half-layers"]  # shuffled
    assert sum(n.endswith("-small") for n in names) >= 2 and sum(n.startswith("structured") for n in names) == 18
    assert [p.to_dict() for p in onnx] == [p.to_dict() for p in calibration_plans(MINILM, grid, "onnxruntime")]
    assert any(sum(r.keep for r in _resolve(p)) == 1 for p in onnx)


# ----------------------------------------------------------------------------- measuring


def _stats(p50, spread=0.01):
    return replace(LatencyStats.from_samples([p50]), iqr=spread * p50)


def test_measure_plans_measures_each_plan_twice_lag_plans_apart(monkeypatch):
    events, alive = [], set()
    p50s = {0: [5.0, 4.0], 1: [3.0, 3.5], 2: [7.0, 6.0], 3: [2.0, 2.0], 4: [9.0, 9.5]}

    def fake_build(model, resolved, target, workdir):
        i = resolved
        alive.add(i)
        assert len(alive) <= 3  # lag 2: at most 3 built plans at once
        taken = iter(p50s[i])

        def run(**kw):
            events.append(i)
            return _stats(next(taken))

        return run, lambda: alive.discard(i)

    monkeypatch.setattr(predictor_mod, "_build", fake_build)
    done = []
    got = measure_plans(None, list(range(5)), TARGET, passes=2, lag=2, on_plan=lambda i, s: done.append(i))
    assert events == [0, 1, 2, 0, 3, 1, 4, 2, 3, 4]  # second passes come two plans later
    assert done == [0, 1, 2, 3, 4] and not alive
    assert [predictor_mod.best(s).p50 for s in got] == [4.0, 3.0, 6.0, 2.0, 9.0]


def test_a_noisy_pass_is_measured_again_and_the_steadiest_kept(monkeypatch):
    spreads = iter([0.2, 0.08, 0.01])
    calls = []

    def fake_build(model, resolved, target, workdir):
        def run(**kw):
            calls.append(1)
            return _stats(10.0 + len(calls), next(spreads))
        return run, lambda: None

    monkeypatch.setattr(predictor_mod, "_build", fake_build)
    [[stats]] = measure_plans(None, [0], TARGET, passes=1, max_spread=0.05, remeasure=2)
    assert len(calls) == 3 and stats.spread == pytest.approx(0.01)


def test_check_anchors_predictions_to_the_machines_speed_now(monkeypatch):
    pred = synthetic_predictor()
    keep_all_then = _truth(_resolve(CompressionPlan.keep_all()))
    pred.table["plans"] = [{"plan": "keep-all", "measured": keep_all_then}]

    def fake_measure_plans(model, resolved_plans, target, *, on_plan, passes, after_pass, **kw):
        for i, resolved in enumerate(resolved_plans):  # the machine runs 10% slower than at calibration
            for _ in range(passes):
                after_pass(i)
            on_plan(i, [_stats(1.1 * _truth(resolved) + 0.5), _stats(1.1 * _truth(resolved))][:passes])

    monkeypatch.setattr(predictor_mod, "measure_plans", fake_measure_plans)
    monkeypatch.setattr(predictor_mod, "_build", lambda model, resolved, target, workdir:
                        (lambda **kw: _stats(1.1 * keep_all_then), lambda: None))
    monkeypatch.setattr(predictor_mod, "warm_up", lambda *a, **k: None)
    result = check(pred, None, TARGET, plans=8, seed=3)
    assert result["plans"] == len(result["rows"]) == 8 and [r["plan"] for r in result["rows"]] == list(range(8))
    assert result["anchor"]["scale"] == pytest.approx(1.10, abs=1e-3)
    assert result["anchor"]["moved_during_check"] == pytest.approx(0.0)
    from autocompress.latency.commands import summary_lines

    printed = "\n".join(summary_lines(result))
    assert f"keep-all {1.1 * keep_all_then:.2f} ms vs {keep_all_then:.2f} ms at calibration" in printed
    assert "scale 1.100" in printed and f"unanchored table: MAPE {result['unanchored']['mape']:.2%}" in printed
    # the raw table is 10% fast everywhere; anchored to keep-all now it is not
    assert result["unanchored"]["mape"] == pytest.approx(0.10 / 1.10, abs=0.02)
    assert result["mape"] < 0.25 * result["unanchored"]["mape"]
    assert all(r["unanchored_error"] == pytest.approx(-0.1 / 1.1, abs=0.02) for r in result["rows"])
    assert result["single_pass"]["mape"] > result["mape"]  # the first pass was the slower one
    row = result["rows"][0]
    assert row["measured_ms"] == min(row["passes_ms"])
    # the machine did not move during the check: correcting for drift changes nothing
    assert row["drift_corrected_ms"] == pytest.approx(row["measured_ms"], abs=1e-3)
    assert result["drift_corrected"]["mape"] == pytest.approx(result["mape"], abs=1e-4)
    assert f"drift-corrected (each pass against keep-all measured right after it): MAPE {result['mape']:.2%}" in printed


def test_check_separates_the_predictors_error_from_drift_during_the_check(monkeypatch):
    """The machine slows down steadily during the check (0% → +30%): the anchored figures take the
    drift as error; measured against keep-all beside each pass, the error is the table's own."""
    pred = synthetic_predictor()
    keep_all = _truth(_resolve(CompressionPlan.keep_all()))
    pred.table["plans"] = [{"plan": "keep-all", "measured": keep_all}]
    clock = {"slow": 1.0}

    def fake_measure_plans(model, resolved_plans, target, *, on_plan, passes, after_pass, **kw):
        for i, resolved in enumerate(resolved_plans):
            got = []
            for _ in range(passes):
                got.append(_stats(clock["slow"] * _truth(resolved)))
                after_pass(i)  # keep-all, measured at the same speed right after the pass
                if 5 <= i < len(resolved_plans) - 1:
                    clock["slow"] += 0.3 / (2 * (len(resolved_plans) - 6))
            on_plan(i, got)

    monkeypatch.setattr(predictor_mod, "measure_plans", fake_measure_plans)
    monkeypatch.setattr(predictor_mod, "_build", lambda model, resolved, target, workdir:
                        (lambda **kw: _stats(clock["slow"] * keep_all), lambda: None))
    monkeypatch.setattr(predictor_mod, "warm_up", lambda *a, **k: None)
    result = check(pred, None, TARGET, plans=20, seed=5)
    assert result["anchor"]["moved_during_check"] == pytest.approx(0.3, abs=0.02)
    assert result["mape"] > 0.08  # the drift, read as prediction error
    assert result["drift_corrected"]["mape"] < 0.02 and result["drift_corrected"]["within_10pct"] == 1.0
    last = result["rows"][-1]
    assert last["drift_corrected_ms"] == pytest.approx(min(last["passes_ms"]) / (1 + 0.3), rel=0.03)


def test_anchor_scales_every_prediction_by_the_keep_all_plan_now(monkeypatch):
    pred = synthetic_predictor()
    int8 = next(p for p in predictor_mod.reference_plans(pred.dims) if p.name == "int8")
    int8_then = pred.predict(int8)
    pred.table["plans"] = [{"plan": "keep-all", "measured": 20.0}, {"plan": "int8", "measured": int8_then}]
    plan = CompressionPlan(name="half", defaults=LayerPlan(ffn=0.5))
    measured = []

    def fake_measure_plans(model, resolved_plans, target, *, passes, **kw):
        measured.append(len(resolved_plans))  # the five reference plans; the faster pass counts
        return [[_stats(23.0), _stats(22.0)], [_stats(1.25 * int8_then), _stats(1.3 * int8_then)]] + [[_stats(9.0)]] * 3

    monkeypatch.setattr(predictor_mod, "measure_plans", fake_measure_plans)
    anchored = predictor_mod.anchor(pred, None)
    assert measured == [5] and anchored.scale == pytest.approx(22.0 / 20.0)  # the fp32 reference measured
    assert anchored.predict(plan) == pytest.approx(1.1 * pred.predict(plan))  # an fp32 plan: scale alone
    # int8 kernels are scaled on their own, so the all-int8 reference predicts what it measures now
    assert 0.5 < anchored.int8_scale < 2.0 and anchored.int8_scale != pytest.approx(1.0)
    assert anchored.predict(int8) == pytest.approx(1.25 * int8_then)
    assert sum(anchored.breakdown(plan).values()) == pytest.approx(anchored.predict(plan))
    assert pred.scale == 1.0  # the original is unchanged
    pred.table["plans"] = []  # no measurements at calibration: nothing to anchor to
    assert pred.anchored({"keep-all": 30.0}).scale == 1.0


# ----------------------------------------------------------------------------- cache


def test_cache_is_keyed_by_device_fingerprint(tiny_model, monkeypatch):
    model = tiny_model("bert")
    builds = []

    def fake_build(model, target, *, grid=None, progress=False):
        builds.append(1)
        dims = model_dims(model)
        resolved = [_resolve(p, dims) for p in calibration_plans(dims, grid, target.runtime)]
        return fit_table(resolved, [_truth(r, dims) for r in resolved], dims, target, grid)

    monkeypatch.setattr(predictor_mod, "build_table", fake_build)
    monkeypatch.setattr(target_mod, "device_fingerprint", lambda: {"cpu": "A", "isa": ["avx2"]})
    grid = Grid.tiny()
    first = get_predictor(model, TARGET, grid=grid)
    assert builds == [1] and not first.from_cache and first.path.is_file()
    assert first.path.parent == predictor_mod.cache.home() / "latency"
    again = get_predictor(model, TARGET, grid=grid)
    assert builds == [1] and again.from_cache and again.path == first.path
    assert again.predict(CompressionPlan.keep_all()) == pytest.approx(first.predict(CompressionPlan.keep_all()))
    assert json.loads(first.path.read_text())["key"]["device"] == {"cpu": "A", "isa": ["avx2"]}

    monkeypatch.setattr(target_mod, "device_fingerprint", lambda: {"cpu": "A", "isa": ["avx2", "avx512_vnni"]})
    other = get_predictor(model, TARGET, grid=grid)
    assert builds == [1, 1] and other.path != first.path and not other.from_cache
    assert cache_path(model_dims(model), Target(runtime="onnxruntime", threads=1, seq_len=16), grid) != other.path
    assert cache_path(model_dims(model), TARGET, Grid()) != other.path
    with pytest.raises(UserError, match="calibrate"):
        get_predictor(model, Target(threads=1, seq_len=32), grid=grid, build=False)


def test_a_calibration_whose_passes_disagree_says_so(tiny_model, monkeypatch, capsys):
    """The median disagreement of a plan's two passes is kept in the table; whatever builds a table
    (``search`` too) warns when it is over NOISY_PASSES (the fit cannot be better than the machine
    was steady), and ``latency calibrate`` says it again from the cache."""
    from autocompress.cli import main
    from autocompress.latency import commands

    model = tiny_model("bert")
    dims = model_dims(model)

    def fake_measure(model, resolved_plans, target, *, passes=2, on_plan=None, **kw):
        out = []
        for i, r in enumerate(resolved_plans):
            ms = _truth(r, dims)
            got = [LatencyStats(p50=ms * k, p90=ms * k, mean=ms * k, std=0.0, min=ms * k, max=ms * k, iqr=0.0, runs=20)
                   for k in (1.0, 1.0 + slow)]
            out.append(got)
            if on_plan:
                on_plan(i, got)
        return out

    monkeypatch.setattr(predictor_mod, "measure_plans", fake_measure)
    tables = {}
    for slow in (0.02, 0.2):
        tables[slow] = predictor_mod.build_table(model, TARGET, grid=Grid.tiny())
    assert tables[0.02]["pass_spread"] == pytest.approx(0.02) and tables[0.2]["pass_spread"] == pytest.approx(0.2)
    assert predictor_mod.pass_spread([[s] for s in (LatencyStats(1, 1, 1, 0, 1, 1, 0, 1),)]) is None  # one pass

    monkeypatch.setattr(commands, "_setup", lambda args: (TARGET, model))
    for slow, warned in ((0.02, False), (0.2, True)):
        monkeypatch.setattr(predictor_mod, "build_table", lambda *a, _t=tables[slow], **k: _t)
        assert main(["latency", "calibrate", "--force"]) == 0
        err = capsys.readouterr().err
        assert ("disagreed by a median 20.0%" in err) is warned  # said where the table is built
        assert main(["latency", "calibrate"]) == 0  # from the cache: said again
        assert ("disagreed by a median 20.0%" in capsys.readouterr().err) is warned
    built = predictor_mod.get_predictor(model, TARGET, rebuild=True, progress=True)  # as `search` builds it
    assert built.warnings() and "warning: latency table: the two passes" in capsys.readouterr().err


# ----------------------------------------------------------------------------- real builds (tiny)


def _real_checks(pred, dims):
    t = pred.table
    assert len(t["plans"]) == t["fit"]["plans"] + sum(not r["used"] for r in t["plans"])
    assert all(math.isfinite(r["measured"]) and r["measured"] > 0 for r in t["plans"])
    assert all(len(r["passes_ms"]) >= 1 for r in t["plans"])
    by_heads = [pred.predict(CompressionPlan(name="h", defaults=LayerPlan(heads=h)))
                for h in range(1, dims["num_heads"] + 1)]
    L = dims["num_layers"]
    by_layers = [pred.predict(CompressionPlan(name="l", layers={i: LayerPlan(keep=False) for i in range(n, L)}))
                 for n in range(1, L + 1)]
    assert all(x > 0 for x in by_heads + by_layers)
    assert by_heads == sorted(by_heads) and by_layers == sorted(by_layers)


def test_real_tiny_build_torch(tiny_model):
    model = tiny_model("bert")
    grid = Grid.tiny()
    pred = get_predictor(model, TARGET, grid=grid)
    assert len(pred.table["plans"]) == 5 + grid.plans + grid.structured
    _real_checks(pred, model_dims(model))


def test_real_tiny_build_onnxruntime(tiny_model):
    model = tiny_model("distilbert")
    grid = replace(Grid.tiny(), plans=6, structured=3)
    pred = get_predictor(model, ORT, grid=grid)
    assert len(pred.table["plans"]) == 5 + 6 + 3
    _real_checks(pred, model_dims(model))


def test_the_calibration_grid_is_sized_to_the_model():
    from autocompress.latency.predictor import Grid

    grid = Grid()
    for runtime in ("torch", "onnxruntime"):  # the default model keeps the default table (and its cache) ...
        for teacher_ms in (16.5, 22.0, 30.0):  # ... at any speed this machine drifts to
            assert grid.sized(teacher_ms, runtime) == grid
    slow = grid.sized(164.0, "torch")  # a BERT-base teacher here: ~14 min with the default grid
    assert grid.estimated_seconds(164.0, "torch") > 600 and slow.estimated_seconds(164.0, "torch") <= 150
    assert slow.passes == 1 and slow.runs < grid.runs and slow.plans >= 12
    assert grid.sized(164.0, "torch", seconds=1e9) == grid
    # saving and loading a plan grows with its parameters: the default model (22.7M) keeps its table ...
    assert all(grid.sized(ms, rt, params=22_700_000) == grid for rt in ("torch", "onnxruntime") for ms in (16.5, 30.0))
    # ... a BERT-base-sized one (110M; 114 ms here) is estimated higher than without them and sized to fit
    base = grid.sized(114.0, "torch", params=110_000_000)
    assert grid.estimated_seconds(114.0, "torch", 110_000_000) > grid.estimated_seconds(114.0, "torch") + 60
    assert base.estimated_seconds(114.0, "torch", 110_000_000) <= 150 and base.plans < grid.sized(114.0, "torch").plans


def test_the_calibration_time_goal_is_shared_by_every_table_a_search_calibrates(monkeypatch):
    """A search offering bf16 on a CPU with bf16 kernels calibrates two tables with one grid: a slow
    model's grid is sized so both fit the goal (one table's grid took 260 s for the two on a
    BERT-base-sized model), the default model's is the default either way."""
    from autocompress.latency import Target
    from autocompress.latency.features import Grid, calibration_grid, other_precisions
    from autocompress.latency.runtime_torch import TorchRuntime

    grid = Grid()
    one, two = grid.sized(164.0, "torch"), grid.sized(164.0, "torch", tables=2)
    assert 2 * two.estimated_seconds(164.0, "torch") <= 150 < 2 * one.estimated_seconds(164.0, "torch")
    assert two.plans < one.plans and two.plans >= 6 and two.structured >= 3
    assert all(grid.sized(ms, "torch", tables=2) == grid for ms in (16.5, 22.0, 30.0))  # the default model's table
    assert grid.sized(164.0, "torch", tables=2, seconds=1e9) == grid
    for has_bf16, expected in ((True, two), (False, one)):
        monkeypatch.setattr(TorchRuntime, "bf16", has_bf16)
        assert other_precisions(Target(), ("fp32", "bf16")) == (["bf16"] if has_bf16 else [])
        assert calibration_grid(Target(), 164.0, 0, ("fp32", "bf16")) == expected
        assert calibration_grid(Target(), 164.0, 0, ("fp32",)) == one
