"""The decision-tree baseline and run comparison."""

import csv
import json

import pytest

from autocompress import baseline as tree
from autocompress.cli import main
from autocompress.compare import compare
from autocompress.plan import LINEAR_GROUPS
from autocompress.objectives import Budget

DIMS = {"num_layers": 6, "num_heads": 12, "intermediate_size": 1536, "hidden_size": 384}


def fake_predict(plan):
    """A stand-in predictor: 1 ms + per kept layer 1.5 ms of attention (× heads share) and 1.5 ms
    of FFN (× width share), int8 at 60% of fp32."""
    total = 1.0
    for r in plan.resolve(6, 12, 1536, 384):
        if r.keep:
            q = 0.6 if r.dtype["q"] == "int8" else 1.0
            total += q * (1.5 * r.heads / 12 + 1.5 * r.ffn / 1536)
    return total


def _rules(result):
    return [r.id for r in result.path]


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
@pytest.mark.parametrize("budget_ms", [None, 30.0, 8.0, 5.0, 3.0, 1.5, 0.5])
def test_int8_where_kernels_exist_and_never_sparsity(runtime, budget_ms):
    result = tree.walk(DIMS, Budget(latency_ms=budget_ms), runtime, fake_predict)
    resolved = result.plan.resolve(6, 12, 1536, 384)
    assert all(r.dtype[g] == "int8" for r in resolved if r.keep for g in LINEAR_GROUPS)
    assert all(r.sparsity[g] == 0 for r in resolved if r.keep for g in LINEAR_GROUPS)
    assert all(r.rank[g] is None for r in resolved if r.keep for g in LINEAR_GROUPS)  # no low-rank for latency
    assert _rules(result)[:2] == ["H1", "H2"]


def test_no_int8_kernels_means_fp32(monkeypatch):
    from autocompress.latency.runtime import runtime_class

    monkeypatch.setattr(runtime_class("openvino"), "int8", False)  # a runtime declaring no int8 kernels
    result = tree.walk(DIMS, Budget(), "openvino", None)
    assert all(r.dtype["q"] == "fp32" for r in result.plan.resolve(6, 12, 1536, 384))


@pytest.mark.parametrize("budget_ms", [8.0, 5.0, 3.0])
def test_the_plan_fits_the_budget_by_the_predictor(budget_ms):
    result = tree.walk(DIMS, Budget(latency_ms=budget_ms), "torch", fake_predict)
    assert result.meets_budget and result.predicted_ms <= budget_ms
    assert fake_predict(result.plan) == result.predicted_ms
    if budget_ms < 10.0:  # the int8 teacher (1 + 6·0.6·3 = 11.8 ms) does not fit: structure shrinks + KD
        assert "L1" in _rules(result) and result.plan.distill.steps > 0 and _rules(result)[-1] == "K"
        assert result.plan.resolve(6, 12, 1536, 384)[0].keep  # the bottom layer is kept


def test_the_largest_fitting_rung_is_chosen():
    loose = tree.walk(DIMS, Budget(latency_ms=9.0), "torch", fake_predict)
    tight = tree.walk(DIMS, Budget(latency_ms=3.0), "torch", fake_predict)
    assert fake_predict(loose.plan) > fake_predict(tight.plan)


def test_an_unreachable_budget_is_flagged():
    result = tree.walk(DIMS, Budget(latency_ms=0.5), "torch", fake_predict)
    assert result.meets_budget is False and "L3" in _rules(result)
    assert result.plan.resolve(6, 12, 1536, 384)[0].heads == round(0.6 * 12)  # at most 40% of heads pruned


def test_every_other_layer_keeps_the_bottom():
    assert tree.kept_layers(6, 0.5) == [0, 2, 4]
    assert tree.kept_layers(12, 0.5) == [0, 2, 4, 6, 8, 10]
    assert tree.kept_layers(6, 1.0) == list(range(6))
    assert tree.kept_layers(6, 0.17) == [0]


def test_explain_prints_the_tree_with_sources(capsys):
    assert main(["baseline", "--explain"]) == 0
    out = capsys.readouterr().out
    for needle in ("H1", "L1", "Ganesh", "Gupta & Agrawal", "Xu & McAuley"):
        assert needle in out


def _fake_run(folder, points, teacher=(0.84, 16.0), label=("joint", "tpe")):
    folder.mkdir()
    with open(folder / "trials.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["number", "state", "fidelity", "accuracy", "latency_ms", "warm_start"])
        w.writeheader()
        for i, (acc, lat) in enumerate(points):
            w.writerow({"number": i, "state": "COMPLETE", "fidelity": "full", "accuracy": acc, "latency_ms": lat})
    (folder / "pareto.json").write_text(json.dumps({
        "space": label[0], "sampler": label[1], "trials": len(points), "wall_seconds": 60.0, "members": [],
        "teacher": {"validation_accuracy": teacher[0], "latency_ms": teacher[1]}, "target": {"runtime": "torch"}}))
    return folder


def test_compare_hypervolume_equals_a_hand_computation(tmp_path):
    a = _fake_run(tmp_path / "a", [(0.84, 16.0), (0.82, 10.0), (0.78, 6.0), (0.70, 8.0)])
    b = _fake_run(tmp_path / "b", [(0.80, 12.0)], label=("quant_only", "random"))
    result = compare([a, b], budgets_ms=[11.0, 5.0])
    # reference (0.74, 16): a = 0.04·4 [6,10) + 0.08·6 [10,16) = 0.16 + 0.48 = 0.64; b = 0.06·4 = 0.24
    assert result["reference"] == pytest.approx((0.74, 16.0))
    hv = {r["label"]: r["hypervolume"] for r in result["rows"]}
    assert hv["joint/tpe"] == pytest.approx(0.64) and hv["quant_only/random"] == pytest.approx(0.24)
    best = {r["label"]: r["best_under"] for r in result["rows"]}
    assert best["joint/tpe"] == {"11ms": 0.82, "5ms": None}
    assert best["quant_only/random"]["11ms"] is None


def test_compare_cli_writes_outputs(tmp_path, capsys):
    a = _fake_run(tmp_path / "a", [(0.82, 10.0)])
    assert main(["compare", str(a), "--budget", "11ms", "--out", str(tmp_path / "cmp")]) == 0
    for name in ("compare.md", "compare.png", "compare.json"):
        assert (tmp_path / "cmp" / name).is_file()
    assert main(["compare", str(tmp_path)]) == 2
    assert "not a search run" in capsys.readouterr().err


def test_a_size_budget_stores_the_word_embeddings_int8():
    assert tree.walk(DIMS, Budget(), "torch", None).plan.technique("embeddings").dtype == "fp32"
    sized = tree.walk(DIMS, Budget(size_mb=30.0), "torch", None, size_of=lambda plan: 20.0)
    assert sized.plan.technique("embeddings").dtype == "int8" and "H3" in _rules(sized)
