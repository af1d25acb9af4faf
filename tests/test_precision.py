"""bf16 arithmetic (plan key ``precision: {dtype: bf16}``): every architecture runs it and returns
fp32 logits near the fp32 model's, int8 linears inside it, save/load, the plan key, the size, and
ONNX export refusing it."""

import copy
import importlib.util

import pytest
import torch

from autocompress.compressed import CompressedModel, load
from autocompress.errors import UserError
from autocompress.plan import CompressionPlan, LayerPlan
from autocompress.techniques import Precision
from autocompress.techniques.precision import is_bf16
from autocompress.transform import apply_structure_, finalize_
from conftest import ARCHS, build_batch, build_tiny_model
from tiny_assets import make_tokenizer


def _logits(model, batch):
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


@pytest.mark.parametrize("arch", ARCHS)
def test_bf16_on_every_architecture_round_trips_with_fp32_logits_and_half_the_size(arch, tmp_path):
    model = build_tiny_model(arch, vocab_size=2000)
    batch = build_batch(model)
    plan = CompressionPlan(name="b", defaults=LayerPlan(ffn=32, dtype={"ffn_in": "int8"}),
                           techniques={"precision": Precision("bf16")})
    resolved = plan.resolve(4, 4, 64, 32)
    apply_structure_(model, resolved)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    base = build_tiny_model(arch, vocab_size=2000).config.to_dict()
    fp32_model = build_tiny_model(arch, vocab_size=2000)
    apply_structure_(fp32_model, resolved)
    fp32_model.load_state_dict(state)
    finalize_(fp32_model, CompressionPlan(name="f", defaults=plan.defaults), resolved)  # int8, no bf16
    finalize_(model, plan, resolved)
    assert is_bf16(model) and all(p.dtype == torch.bfloat16 for p in model.parameters())
    out, ref = _logits(model, batch), _logits(fp32_model, batch)
    assert out.dtype == torch.float32
    assert not torch.equal(out, ref)  # it did run in bf16 ...
    torch.testing.assert_close(out, ref, atol=0.05, rtol=0.05)  # ... and stays near fp32
    cm = CompressedModel(model=model, plan=plan, resolved=resolved, fp32_state=state, base_config=base,
                         tokenizer=make_tokenizer(tmp_path / "tok"), params=1)
    fp32_cm = CompressedModel(model=fp32_model, plan=plan, resolved=resolved, fp32_state=state, base_config=base,
                              tokenizer=None)
    assert cm.size_bytes() < 0.7 * fp32_cm.size_bytes()
    back = load(cm.save_pretrained(tmp_path / arch))
    assert is_bf16(back.model) and back.plan.technique("precision").dtype == "bf16"
    assert torch.equal(_logits(back.model, batch), out)
    assert all(v.dtype == torch.float32 for v in back.fp32_state.values() if v.is_floating_point())  # saved fp32


def test_the_cast_is_idempotent_and_fp32_leaves_the_model():
    model = build_tiny_model("bert")
    batch = build_batch(model)
    before = _logits(model, batch)
    assert Precision("fp32").apply_(model) is model and torch.equal(_logits(model, batch), before)
    Precision("bf16").apply_(model)
    once = _logits(model, batch)
    Precision("bf16").apply_(model)
    assert torch.equal(_logits(model, batch), once) and len(model._forward_hooks) == 1


def test_the_plan_key_round_trips_and_bad_values_fail_in_one_line(tmp_path):
    plan = CompressionPlan.from_dict({"schema": "autocompress.plan/v1", "name": "p", "precision": {"dtype": "bf16"}})
    assert plan.techniques_at("finalize") == [Precision("bf16")]
    path = tmp_path / "p.yaml"
    plan.save(path)
    assert CompressionPlan.load(path) == plan
    assert "precision" not in CompressionPlan(name="p").to_dict()
    with pytest.raises(UserError, match="precision.dtype = 'fp16'"):
        CompressionPlan.from_dict({"schema": "autocompress.plan/v1", "name": "p", "precision": {"dtype": "fp16"}})


def test_onnx_runtime_refuses_a_bf16_plan_and_the_exported_graph_stays_fp32(tmp_path):
    from autocompress.latency.onnx import build_onnx, exportable
    from autocompress.latency.runtime import get_runtime

    plan = CompressionPlan(name="b", techniques={"precision": Precision("bf16")})
    with pytest.raises(UserError, match="ONNX Runtime cannot run"):
        build_onnx(build_tiny_model("bert"), tmp_path / "m.onnx", plan=plan)
    with pytest.raises(UserError, match="ONNX Runtime cannot run"):
        get_runtime("onnxruntime").build(build_tiny_model("bert"), None, plan=plan)
    fp32, _ = exportable(build_tiny_model("bert"), plan)  # OpenVINO compiles it in bf16 by an option
    assert not is_bf16(fp32) and all(p.dtype == torch.float32 for p in fp32.parameters())
    assert not list(tmp_path.iterdir())  # nothing half-written


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="the openvino package is not installed here")
def test_openvino_runs_a_bf16_plan_in_bf16_scores_it_there_and_times_the_scored_ir(tmp_path):
    import numpy as np
    import openvino as ov

    from autocompress.latency import Target
    from autocompress.latency.runtime import get_runtime
    from autocompress.latency.runtime_openvino import OpenVINORuntime, check_bf16, scored_ir
    from autocompress.transform import rebuild_structure_

    plan = CompressionPlan(name="b", techniques={"precision": Precision("bf16")})
    if not OpenVINORuntime.bf16:
        with pytest.raises(UserError, match="no bf16 kernels"):
            check_bf16(plan)
        return
    kind = get_runtime("openvino")
    model = build_tiny_model("bert")
    batch = build_batch(model)
    with torch.no_grad():
        fp32 = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.numpy()
    target = Target(runtime="openvino", threads=1, batch_size=4, seq_len=10)
    for session in (kind.build(copy.deepcopy(model), target, plan=plan, workdir=tmp_path),  # the plan says bf16
                    kind.build(copy.deepcopy(model), target.with_precision("bf16"), workdir=tmp_path)):  # the target
        try:
            assert session.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.bf16
            got = session.logits(batch["input_ids"].numpy(), batch["attention_mask"].numpy())
            assert 0 < np.abs(got - fp32).max() < 0.1
        finally:
            session.close()
    resolved = plan.resolve(4, 4, 64, 32)
    rebuild_structure_(model, resolved)
    cm = CompressedModel(model=model, plan=plan, resolved=resolved, fp32_state=copy.deepcopy(model.state_dict()),
                         base_config=model.config.to_dict(), tokenizer=make_tokenizer(tmp_path / "tok"))
    cm.save_pretrained(tmp_path / "saved")

    def unused():
        raise AssertionError("bf16 alone needs no calibration data")

    logits_fn = kind.scorer(cm, tmp_path / "saved", unused, threads=1)
    assert logits_fn is not None and scored_ir(load(tmp_path / "saved")) is not None
    got = logits_fn(batch["input_ids"].numpy(), batch["attention_mask"].numpy())
    assert 0 < np.abs(got - fp32).max() < 0.1
    session = kind.build_compressed(load(tmp_path / "saved"), Target(runtime="openvino", threads=1, seq_len=16))
    try:
        assert session.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.bf16
    finally:
        session.close()


# ----------------------------------------------------------------------------------- the search's knob


def _space_with(bf16_costs: dict | None):
    """The default allocated space prepared with a synthetic torch predictor and, when
    ``bf16_costs`` is given, a bf16 sibling whose costs are the fp32 ones times those factors."""
    from test_allocate import PREDICTOR, importance, synthetic_predictor

    from autocompress.latency import Target
    from autocompress.latency.predictor import LatencyPredictor
    from autocompress.search.spaces import load_space

    predictor = PREDICTOR
    if bf16_costs is not None:
        table = synthetic_predictor().table
        costs = {k: v * bf16_costs.get(k, 1.0) for k, v in table["costs"].items()}
        target = Target(**table["target"]).with_precision("bf16") if _bf16_kernels() else None
        if target is None:
            pytest.skip("this CPU has no bf16 kernels: a bf16 target cannot be made")
        predictor = PREDICTOR.with_sibling(LatencyPredictor({**table, "costs": costs, "target": target.to_dict()}))
    return load_space("allocated").prepare(predictor=predictor, importance=importance(seed=4))


def _bf16_kernels() -> bool:
    from autocompress.latency.runtime import runtime_class

    return runtime_class("torch").bf16


FASTER = {"fixed": 0.8, "layers": 0.5, "attention": 0.5, "activation": 0.5, "fp32_linear": 0.35}


def test_without_a_bf16_table_the_space_drops_bf16_and_says_why():
    space = _space_with(None)
    assert "precision" not in space.techniques
    assert any(d.startswith("precision bf16:") for d in space.dropped)
    assert "precision" not in space.recipes()[0][1]


def test_bf16_that_does_not_pay_is_dropped_by_the_predictor():
    space = _space_with({"fp32_linear": 0.95})  # 5% faster: below PAYING_PRECISION
    assert "precision" not in space.techniques and "predicted at" in space.dropped[-1]


def test_bf16_that_pays_is_sampled_allocated_in_its_own_table_and_used_by_the_recipes():
    import optuna

    from autocompress.search.allocate import teacher_latency

    space = _space_with(FASTER)
    assert space.techniques["precision"] == {"dtype": ("fp32", "bf16")}
    dtype, precision = space.fastest_arithmetic()
    assert precision == "bf16" and set(dtype.values()) == {"fp32"}  # bf16 beats int8 linears here
    fp32_teacher = teacher_latency(space.predictor.predict, space.predictor.dims)
    for name, params in space.recipes():
        assert params["precision"] == "bf16" and params["dtype.ffn"] == "fp32", name
        result = space.allocate(*space.knobs(optuna.trial.FixedTrial(params)), space.predictor.dims)
        assert result.plan.technique("precision").dtype == "bf16"
        assert result.teacher_ms == pytest.approx(fp32_teacher)  # the target is a fraction of the fp32 teacher
        # predicted in bf16: the plan is predicted by the sibling, and it meets the target there
        assert space.predictor.predict(result.plan) == pytest.approx(result.predicted_ms)
        assert result.predicted_ms <= result.target_ms + 1e-9
    # the same target keeps more of the model in bf16 than in fp32 with int8 linears
    knobs = {"target": 0.4, "depth_bias": 0.0, "layer_order": "measured", "width": "measured", "fit": "exact",
             "distill.kind": "logits+hidden", "embeddings": "fp32"}
    kept = {}
    for precision, dtype in (("bf16", "fp32"), ("fp32", "int8")):
        trial = optuna.trial.FixedTrial({**knobs, "precision": precision, "dtype.attention": dtype, "dtype.ffn": dtype})
        plan = space.allocate(*space.knobs(trial), space.predictor.dims).plan
        kept[precision] = sum(r.heads + r.ffn for r in plan.resolve(6, 12, 1536, 384))
    assert kept["bf16"] > kept["fp32"]


def test_a_predictor_asked_for_a_precision_it_has_no_table_for_says_so():
    from test_allocate import PREDICTOR

    plan = CompressionPlan(name="b", techniques={"precision": Precision("bf16")})
    with pytest.raises(UserError, match="no bf16 latency table"):
        PREDICTOR.predict(plan)
    assert PREDICTOR.predict(plan.resolve(6, 12, 1536, 384)) == PREDICTOR.predict(CompressionPlan(name="f"))


def test_a_bf16_target_is_its_own_cache_key_and_fp32_keys_are_unchanged():
    from autocompress.latency import Target

    fp32 = Target(runtime="torch", threads=2)
    assert "precision" not in fp32.to_dict()
    if not _bf16_kernels():
        with pytest.raises(UserError, match="no bf16 kernels"):
            fp32.with_precision("bf16")
        return
    bf16 = fp32.with_precision("bf16")
    assert bf16.to_dict()["precision"] == "bf16" and Target(**bf16.to_dict()) == bf16
    assert "bf16" in bf16.describe()
    with pytest.raises(UserError, match="fp32 or bf16"):
        Target(runtime="torch", precision="fp16")
    with pytest.raises(UserError, match="no bf16 kernels"):
        Target(runtime="onnxruntime", precision="bf16")


def test_the_latency_commands_calibrate_a_bf16_table_on_request_and_refuse_it_in_one_line(capsys):
    """``latency calibrate --precision bf16`` (what benchmarks/planner.py runs before its searches,
    so that no search spends its time on the bf16 table): a runtime without bf16 kernels exits 2
    with one line, before any model is loaded."""
    import argparse

    from autocompress.cli import main
    from autocompress.latency import Target

    args = argparse.Namespace(runtime="torch", threads=1, batch_size=1, seq_len=16, precision="fp32")
    assert Target.from_args(args).precision == "fp32"
    assert main(["latency", "calibrate", "--runtime", "onnxruntime", "--precision", "bf16"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no bf16 kernels" in err
    if _bf16_kernels():
        assert Target.from_args(argparse.Namespace(**{**vars(args), "precision": "bf16"})).precision == "bf16"


def test_the_recipes_take_whichever_arithmetic_the_predictor_says_is_fastest():
    # int8 linears cheaper inside bf16 than fp32 ones (as OpenVINO measured): the recipes mix them
    mixed = _space_with({**FASTER, "fp32_linear": 0.9, "int8_linear": 0.3})
    dtype, precision = mixed.fastest_arithmetic()
    assert precision == "bf16" and set(dtype.values()) == {"int8"}
    assert {p["precision"] for _, p in mixed.recipes()} == {"bf16"}
    # bf16 slower than int8 linears in fp32 (yet >10% faster than the fp32 teacher): int8, fp32
    slow = _space_with({"fp32_linear": 0.8, "int8_linear": 3.0})
    assert "precision" in slow.techniques and slow.fastest_arithmetic()[1] == "fp32"


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="the openvino package is not installed here")
def test_an_openvino_export_of_a_bf16_plan_ships_its_scored_ir_with_the_bf16_recipe(tmp_path):
    from autocompress.export import _openvino_writer
    from autocompress.latency import Target
    from autocompress.latency.runtime import get_runtime
    from autocompress.latency.runtime_openvino import OpenVINORuntime
    from autocompress.transform import rebuild_structure_

    if not OpenVINORuntime.bf16:
        pytest.skip("OpenVINO has no bf16 kernels on this CPU")
    plan = CompressionPlan(name="b", techniques={"precision": Precision("bf16")})
    model = build_tiny_model("bert")
    resolved = plan.resolve(4, 4, 64, 32)
    rebuild_structure_(model, resolved)
    cm = CompressedModel(model=model, plan=plan, resolved=resolved, fp32_state=copy.deepcopy(model.state_dict()),
                         base_config=model.config.to_dict(), tokenizer=make_tokenizer(tmp_path / "tok"))
    folder = cm.save_pretrained(tmp_path / "saved")
    get_runtime("openvino").scorer(cm, folder, lambda: [])  # what an OpenVINO search leaves in the folder
    loaded = load(folder)
    out = tmp_path / "ir"
    out.mkdir()
    written = _openvino_writer(loaded, folder, Target(runtime="openvino", threads=1, seq_len=16))(
        out, {"out": str(out), "metrics": {}, "trial": 0, "study": "s", "format": "openvino", "pick": "0",
              "measured_on": {}, "recommended": False})
    info = written["openvino"]
    assert info["compile_config"] == {"INFERENCE_PRECISION_HINT": "bf16"} and "bf16" in written["usage"]
    assert (out / "model.bin").read_bytes() == (folder / "openvino" / "model.bin").read_bytes()
    assert 0 < info["check"]["max_abs_diff"] < 0.1 and info["latency"]["runs"] >= 20
    assert "# bf16, as the search measured it" in (out / "README.md").read_text()
