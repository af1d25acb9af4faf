"""The latency predictor: table assembly, monotonicity, caching by device fingerprint, random plans,
calibration, and a real (tiny, fast) build. No test asserts a measured timing."""

from __future__ import annotations

import math

import json

import numpy as np
import pytest

import autocompress.latency.predictor as predictor_mod
import autocompress.latency.target as target_mod
from autocompress.errors import UserError
from autocompress.latency import Target
from autocompress.latency.predictor import (
    Grid,
    LatencyPredictor,
    cache_path,
    fit_calibration,
    get_predictor,
    grid_layers,
    model_dims,
    random_plan,
    table_from_timings,
)
from autocompress.plan import LINEAR_GROUPS, CompressionPlan, LayerPlan, ResolvedLayer

MINILM = {"model_type": "bert", "num_layers": 6, "num_heads": 12, "intermediate_size": 1536, "hidden_size": 384,
          "vocab_size": 30522}
TARGET = Target(runtime="torch", threads=1, seq_len=16)


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOCOMPRESS_HOME", str(tmp_path / "home"))


def _cost(r: ResolvedLayer, dims, noise=None) -> float:
    """A synthetic per-layer cost: linear costs ~ in*out, int8 cheaper, low-rank = two linears."""
    cost = 0.05 + 0.002 * r.heads + 0.0001 * r.ffn
    for g in LINEAR_GROUPS:
        n_in, n_out = predictor_mod.linear_shape(g, r.heads, r.ffn, dims)
        scale = 0.4 if r.dtype[g] == "int8" else 1.0
        extra = 0.01 if r.dtype[g] == "int8" else 0.0
        if r.rank[g] is None:
            cost += scale * n_in * n_out * 1e-6 + extra
        else:
            cost += scale * (n_in + n_out) * r.rank[g] * 1e-6 + 2 * extra + 0.005
    if noise is not None:
        cost *= 1 + noise.normal(0, 0.03)
    return cost


def synthetic_predictor(dims=MINILM, grid=Grid(), noise_seed=None) -> LatencyPredictor:
    rng = np.random.default_rng(noise_seed) if noise_seed is not None else None
    values = {}
    for label, r in grid_layers(dims, grid):
        values.setdefault(label, []).append(_cost(r, dims, rng))
    return LatencyPredictor(table_from_timings(values, dims, grid, TARGET, fixed=0.3))


def _vary(plan_layers, dims, **changes):
    layers = dict(plan_layers)
    for i in layers:
        if layers[i].keep:
            layers[i] = LayerPlan(**{**layers[i].__dict__, **changes})
    return CompressionPlan(name="v", layers=layers)


# ----------------------------------------------------------------------------- predictions


def test_exactly_additive_costs_are_predicted_closely():
    pred = synthetic_predictor()
    rng = np.random.default_rng(0)
    errors = []
    for _ in range(40):
        plan = random_plan(MINILM, rng)
        resolved = predictor_mod._resolve(plan, MINILM)
        truth = 0.3 + sum(_cost(r, MINILM) for r in resolved if r.keep)
        errors.append(abs(pred.predict(resolved) - truth) / truth)
    assert np.mean(errors) < 0.03 and max(errors) < 0.10


@pytest.mark.parametrize("noise_seed", [None, 1, 2])
def test_predictions_are_monotone_in_heads_ffn_and_layers(noise_seed):
    pred = synthetic_predictor(noise_seed=noise_seed)  # noisy tables are not monotone by themselves
    rng = np.random.default_rng(3)
    for _ in range(15):
        plan = random_plan(MINILM, rng)
        resolved = predictor_mod._resolve(plan, MINILM)
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


def _fits(r, heads, ffn):
    """The layer's ranks are still valid with this many heads / this FFN width."""
    return all(k is None or k <= predictor_mod.max_rank(g, heads, ffn, MINILM) for g, k in r.rank.items())


def _replace(resolved, i, **changes):
    out = list(resolved)
    out[i] = ResolvedLayer(**{**out[i].__dict__, **changes})
    return out


def test_fewer_heads_ffn_layers_and_int8_predict_less_on_a_measured_like_table():
    pred = synthetic_predictor()
    full = pred.predict(CompressionPlan.keep_all())
    assert pred.predict(CompressionPlan(name="h", defaults=LayerPlan(heads=6))) < full
    assert pred.predict(CompressionPlan(name="f", defaults=LayerPlan(ffn=0.5))) < full
    assert pred.predict(CompressionPlan(name="l", layers={1: LayerPlan(keep=False)})) < full
    assert pred.predict(CompressionPlan(name="i", defaults=LayerPlan(dtype=dict.fromkeys(LINEAR_GROUPS, "int8")))) < full


def test_plan_that_does_not_fit_the_table_is_a_user_error():
    pred = synthetic_predictor()
    with pytest.raises(UserError):
        pred.predict(CompressionPlan(name="x", defaults=LayerPlan(heads=13)))
    with pytest.raises(UserError, match="layers"):
        pred.predict(CompressionPlan.keep_all().resolve(4, 12, 1536, 384))


# ----------------------------------------------------------------------------- random plans, calibration


def test_random_plans_are_valid_varied_and_reproducible():
    plans = [random_plan(MINILM, np.random.default_rng(5)) for _ in range(2)]
    assert plans[0].to_dict() == plans[1].to_dict()
    rng = np.random.default_rng(6)
    seen = {"dropped": 0, "heads": 0, "ffn": 0, "rank": 0, "int8": 0}
    for _ in range(40):
        resolved = predictor_mod._resolve(random_plan(MINILM, rng), MINILM)  # validates ranks vs shapes
        assert any(r.keep for r in resolved)
        seen["dropped"] += any(not r.keep for r in resolved)
        seen["heads"] += any(r.keep and r.heads < 12 for r in resolved)
        seen["ffn"] += any(r.keep and r.ffn < 1536 for r in resolved)
        seen["rank"] += any(k is not None for r in resolved for k in r.rank.values())
        seen["int8"] += any(d == "int8" for r in resolved for d in r.dtype.values())
    assert all(v >= 5 for v in seen.values()), seen


def test_calibration_recovers_a_linear_map():
    raw = np.array([5.0, 8.0, 12.0, 20.0, 3.0])
    fit = fit_calibration(raw, 1.2 * raw + 0.5)
    assert fit["a"] == pytest.approx(1.2) and fit["b"] == pytest.approx(0.5)
    assert fit["fit_mape"] < 1e-9
    assert fit_calibration(raw, -raw + 40)["a"] == 1.0  # implausible slope: offset only


# ----------------------------------------------------------------------------- cache


def test_cache_is_keyed_by_device_fingerprint(tiny_model, monkeypatch):
    model = tiny_model("bert")
    builds = []

    def fake_build(model, target, *, grid=None, progress=False):
        builds.append(1)
        dims = model_dims(model)
        values = {label: [_cost(r, dims)] for label, r in grid_layers(dims, grid)}
        return table_from_timings(values, dims, grid, target, fixed=0.1)

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
    with pytest.raises(UserError, match="calibrate"):
        get_predictor(model, Target(threads=1, seq_len=32), grid=grid, build=False)


# ----------------------------------------------------------------------------- real builds (tiny)


def test_real_tiny_build_torch_is_monotone_and_positive(tiny_model):
    model = tiny_model("bert")
    pred = get_predictor(model, TARGET, grid=Grid.tiny())
    t = pred.table
    assert t["layers_timed"] == len(grid_layers(model_dims(model), Grid.tiny()))
    assert len(t["calibration"]["plans"]) == 5 + Grid.tiny().calibration_plans
    dims = model_dims(model)
    by_heads = [pred.predict(CompressionPlan(name="h", defaults=LayerPlan(heads=h))) for h in range(1, 5)]
    by_layers = [pred.predict(CompressionPlan(name="l", layers={i: LayerPlan(keep=False) for i in range(n, 4)}))
                 for n in range(1, 5)]
    assert all(x > 0 for x in by_heads + by_layers)
    assert by_heads == sorted(by_heads) and by_layers == sorted(by_layers)
    assert dims["num_heads"] == 4


def test_real_tiny_build_onnxruntime_attributes_every_layer(tiny_model):
    model = tiny_model("distilbert")
    grid = Grid(heads=16, ffn=(0.5, 1.0), delta_heads=(1.0,), delta_ffn=(1.0,), ranks=(0.5,), copies=1,
                runs=20, warmup=1, calibration_plans=0, calibration_runs=20, min_seconds=0.02, retries=0)
    pred = get_predictor(model, Target(runtime="onnxruntime", threads=1, seq_len=16), grid=grid)
    t = pred.table
    ys = t["attn"]["y"] + t["ffn"]["y"]
    # every timed layer got its nodes: durations are finite and mostly positive (a tiny layer may
    # round to 0 µs in ONNX Runtime's profile, so requiring every one to be > 0 is a timing assertion)
    assert all(math.isfinite(v) and v >= 0 for v in ys) and sum(v > 0 for v in ys) >= len(ys) / 2
    assert pred.predict(CompressionPlan.keep_all()) > 0
