"""The runtime seam: one registered class per runtime (torch, ONNX Runtime, OpenVINO), sessions
timed under the protocol, OpenVINO computing what torch computes, and the search offering only
what a runtime has kernels for. No figure is asserted: timings only have to exist."""

import copy
import importlib.util

import numpy as np
import pytest
import torch

from autocompress.errors import UserError
from autocompress.latency import Target
from autocompress.latency.features import Grid, calibration_plans, model_dims, reference_plans
from autocompress.latency.runtime import Runtime, get_runtime, runtime_class, runtime_names
from autocompress.plan import CompressionPlan, LayerPlan
from autocompress.techniques import Embeddings
from autocompress.search.space import SearchSpace
from autocompress.search.spaces import load_space
from conftest import build_batch, build_tiny_model

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None
needs_openvino = pytest.mark.skipif(not HAS_OPENVINO, reason="the openvino package is not installed here")


def test_runtimes_register_themselves_and_unknown_ones_fail_in_one_line():
    assert {"torch", "onnxruntime", "openvino"} <= set(runtime_names())
    with pytest.raises(UserError, match="unknown runtime 'tvm'; choose one of torch, onnxruntime, openvino"):
        Target(runtime="tvm")

    class Fancy(Runtime):
        name = "fancy-test-runtime"
        package = "no_such_package_here"

    try:
        assert "fancy-test-runtime" in runtime_names()
        Target(runtime="fancy-test-runtime")  # known, so a target may name it ...
        with pytest.raises(UserError, match=r"needs the no_such_package_here package \(pip install"):
            get_runtime("fancy-test-runtime")  # ... but it cannot be built here
    finally:
        from autocompress.latency import runtime

        runtime._REGISTRY.pop("fancy-test-runtime")


@pytest.mark.parametrize("name", ["torch", "onnxruntime", pytest.param("openvino", marks=needs_openvino)])
def test_every_runtime_times_a_plan_under_the_protocol(name):
    model = build_tiny_model("bert")
    plan = CompressionPlan(name="p", layers={1: LayerPlan(keep=False)}, techniques={"embeddings": Embeddings("int8")},
                           # OpenVINO's int8 (NNCF) stores the word embeddings int8 by itself: fp32 linears there
                           defaults=LayerPlan(dtype={"q": "int8"} if name != "openvino" else {}))
    resolved = plan.resolve(4, 4, 64, 32)
    from autocompress.transform import rebuild_structure_

    rebuild_structure_(model, resolved)
    fp32 = copy.deepcopy(model)
    session = get_runtime(name).build(model, Target(runtime=name, threads=1, seq_len=16), resolved=resolved,
                                      plan=plan)
    try:
        stats = session.time(runs=20, warmup=2, max_seconds=2.0)
        shipped = session.artefact_bytes()
    finally:
        session.close()
    assert stats.runs >= 20 and stats.p50 > 0
    # the size of what it ran: the int8 word embeddings save 3 of every 4 bytes of the table
    plain = get_runtime(name).build(fp32, Target(runtime=name, threads=1, seq_len=16), resolved=plan.resolve(4, 4, 64, 32))
    try:
        plain_bytes = plain.artefact_bytes()
    finally:
        plain.close()
    table = fp32.get_input_embeddings().weight.numel() * 4
    assert 0 < shipped < plain_bytes - 0.6 * table


@needs_openvino
def test_openvino_computes_the_logits_torch_computes(tmp_path):
    model = build_tiny_model("bert")
    batch = build_batch(model)
    target = Target(runtime="openvino", threads=1, batch_size=4, seq_len=10)
    with torch.no_grad():
        expected = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.numpy()
    session = get_runtime("openvino").build(model, target, workdir=tmp_path)
    try:
        got = session.logits(batch["input_ids"].numpy(), batch["attention_mask"].numpy())
        # fp32 on every CPU: where bf16 units exist, OpenVINO's default would be bf16 (6.6e-3 off here)
        import openvino as ov

        assert session.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    finally:
        session.close()
    assert np.abs(got - expected).max() < 1e-4
    assert not list(tmp_path.iterdir())  # closing removes what the session wrote


@needs_openvino
def test_openvino_int8_is_scored_on_openvino_and_timing_and_export_use_the_scored_ir(tmp_path):
    """A plan with int8 linears: the search scores the IR OpenVINO runs (NNCF's static int8,
    calibrated on task inputs), saves it in the model's folder, and timing that folder compiles
    that IR. fp32 plans are scored in torch (OpenVINO computes what torch computes)."""
    from autocompress.compressed import CompressedModel, load
    from autocompress.latency.runtime_openvino import scored_ir
    from autocompress.transform import rebuild_structure_
    from tiny_assets import make_tokenizer

    kind = get_runtime("openvino")
    model = build_tiny_model("bert")
    plan = CompressionPlan(name="q8", defaults=LayerPlan(dtype={"q": "int8", "ffn_in": "int8"}))
    resolved = plan.resolve(4, 4, 64, 32)
    rebuild_structure_(model, resolved)
    cm = CompressedModel(model=model, plan=plan, resolved=resolved, fp32_state=copy.deepcopy(model.state_dict()),
                         base_config=model.config.to_dict(), tokenizer=make_tokenizer(tmp_path / "tok"))
    batch = build_batch(model)
    items = [{"input_ids": batch["input_ids"].numpy(), "attention_mask": batch["attention_mask"].numpy()}]
    calibration = lambda: items  # noqa: E731

    def unused():
        raise AssertionError("an fp32 plan needs no calibration data")

    logits_fn = kind.scorer(cm, tmp_path / "saved", calibration, threads=1)
    assert logits_fn is not None and (tmp_path / "saved" / "openvino" / "model.xml").is_file()
    with torch.no_grad():
        fp32 = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.numpy()
    got = logits_fn(batch["input_ids"].numpy(), batch["attention_mask"].numpy())
    assert got.shape == fp32.shape and np.abs(got - fp32).max() < 0.1 * max(1.0, np.abs(fp32).max())
    assert kind.scorer(replace_plan(cm, CompressionPlan.keep_all()), tmp_path / "fp32", unused) is None

    cm.save_pretrained(tmp_path / "saved")  # replaces the folder: the IR is written after saving, as a search does
    assert scored_ir(load(tmp_path / "saved")) is None
    kind.scorer(cm, tmp_path / "saved", calibration)
    loaded = load(tmp_path / "saved")
    assert scored_ir(loaded) == tmp_path / "saved" / "openvino" / "model.xml"
    session = kind.build_compressed(loaded, Target(runtime="openvino", threads=1, seq_len=16))
    try:
        assert session.artefact_bytes() == sum(p.stat().st_size for p in (tmp_path / "saved" / "openvino").glob("model.*"))
        assert session.time(runs=20, warmup=2, max_seconds=2.0).p50 > 0
    finally:
        session.close()


def replace_plan(cm, plan):
    from dataclasses import replace

    return replace(cm, plan=plan, resolved=plan.resolve(4, 4, 64, 32))


def test_a_runtime_without_int8_kernels_gets_fp32_plans_and_spaces(monkeypatch):
    dims = model_dims(build_tiny_model("bert"))
    assert runtime_class("openvino").int8  # NNCF's static int8; declared off here to test a runtime without
    monkeypatch.setattr(runtime_class("openvino"), "int8", False)
    plans = calibration_plans(dims, Grid.tiny(), "openvino")
    assert all(r.dtype[g] == "fp32" for p in plans for r in p.resolve(4, 4, 64, 32) for g in r.dtype)
    assert "int8" not in {p.name for p in reference_plans(dims, "openvino")}
    assert "int8" in {p.name for p in reference_plans(dims, "onnxruntime")}
    assert any(r.dtype[g] == "int8" for p in calibration_plans(dims, Grid.tiny(), "torch")
               for r in p.resolve(4, 4, 64, 32) for g in r.dtype)

    class Predictor:  # what prepare() reads of a predictor here
        def __init__(self, runtime):
            self.target, self.dims = Target(runtime=runtime, threads=1), {**dims, "hidden_size": 32}

    joint = SearchSpace.from_dict({"schema": "autocompress.space/v1", "name": "j",
                                   "layers": {"dtype": ["fp32", "int8"]}, "only_paying_knobs": False})
    assert set(joint.prepare(predictor=Predictor("openvino")).dtype.values()) == {("fp32",)}
    assert set(joint.prepare(predictor=Predictor("torch")).dtype.values()) == {("fp32", "int8")}
    from test_allocate import importance, synthetic_predictor

    allocated = load_space("allocated")
    ov = allocated.prepare(predictor=synthetic_predictor(runtime="openvino"), importance=importance())
    assert set(ov.dtype.values()) == {("fp32",)}
    assert set(allocated.prepare(predictor=synthetic_predictor(), importance=importance()).dtype.values()) == \
        {("fp32", "int8")}


def test_runtime_auto_picks_the_fastest_installed_runtime_each_running_its_best_teacher(monkeypatch, tmp_path):
    """Each runtime times the teacher as it runs it best without structural change (int8 linears
    where it has int8 kernels, else fp32); the fastest median wins. Timings are stubbed here."""
    from autocompress import apply
    from autocompress.latency import auto, isolated
    from autocompress.latency.measure import LatencyStats

    class Built:
        def __init__(self, plan):
            self.plan = plan

        def save_pretrained(self, folder):
            folder.mkdir(parents=True)
            (folder / "plan").write_text(self.plan.name)
            return folder

    monkeypatch.setattr(apply, "compress", lambda plan, ctx, progress=False: Built(plan))
    # measured here (docs/runtimes.md): OpenVINO fp32 16.2 ms, its NNCF int8 7.4, ORT int8 11.9
    speed = {("torch", "int8"): 15.5, ("onnxruntime", "int8"): 11.9, ("openvino", "fp32"): 16.2,
             ("openvino", "int8"): 7.4}
    seen = []

    def timed(folder, target, runs=30):
        kind = "int8" if (folder / "plan").read_text() == "int8" else "fp32"
        seen.append((target.runtime, kind))
        p50 = speed[target.runtime, kind]
        return LatencyStats(p50=p50, p90=p50, mean=p50, std=0.0, min=p50, max=p50, iqr=0.0, runs=30)

    monkeypatch.setattr(isolated, "measure_saved", timed)
    installed = [n for n in runtime_names() if runtime_class(n).missing() is None]
    target, figures = auto.fastest_runtime(object(), Target(runtime="torch", threads=1), rounds=2, progress=False)
    assert set(figures) == set(installed) and all(len(f["rounds"]) == 2 for f in figures.values())
    assert {kind for _, kind in seen} <= {"int8", "fp32"}
    assert all(kind == ("int8" if runtime_class(rt).int8 else "fp32") for rt, kind in seen)
    assert target.runtime == ("openvino" if "openvino" in installed else "onnxruntime") and target.threads == 1


def test_a_size_is_the_shipped_artefact_when_the_timing_process_reports_one():
    from types import SimpleNamespace

    from autocompress.evaluate import size_figures
    from autocompress.latency.measure import LatencyStats

    cm = SimpleNamespace(size_bytes=lambda: 24_400_000)
    stats = LatencyStats(p50=8.0, p90=8.5, mean=8.1, std=0.2, min=7.9, max=9.0, iqr=0.3, runs=30)
    assert size_figures(cm, stats, "onnxruntime") == {"size_mb": 24.4, "weights_mb": 24.4, "size_source": "weights"}
    shipped = LatencyStats(**{**stats.__dict__, "artefact_bytes": 23_100_000})
    assert size_figures(cm, shipped, "onnxruntime") == {"size_mb": 23.1, "weights_mb": 24.4,
                                                        "size_source": "artefact:onnxruntime"}
    # the figure survives the timing process's answer (JSON) and scaling to a reference's frame
    from autocompress.latency.isolated import scaled

    again = LatencyStats(**{k: v for k, v in shipped.to_dict().items() if k != "spread"})
    assert scaled(again, 1.1).artefact_bytes == 23_100_000
    from autocompress.latency.runtime import describe_size_source

    assert describe_size_source("artefact:onnxruntime") == "the exported file on onnxruntime, as shipped"
    assert describe_size_source(None) == describe_size_source("weights") == "the weights as they run, int8 packed"
