"""compress → evaluate → save → load on tiny models: correctness of the whole plan pipeline."""

import argparse
import importlib.util
from dataclasses import replace

import pytest
import torch

from autocompress.apply import compress, compress_stages
from autocompress.compressed import CompressedModel, count_params, load
from autocompress.context import TaskContext
from autocompress.evaluate import evaluate, task_metrics
from autocompress.latency import Target
from autocompress.plan import LINEAR_GROUPS, CompressionPlan, DistillConfig, LayerPlan
from autocompress.techniques import quantize_dynamic_
from autocompress.transform import apply_structure_, quantize_config
from autocompress.techniques.distill import layer_map
from conftest import ARCHS, build_batch, build_tiny_model
from tiny_assets import make_model_folder, make_tokenizer, synthetic_frame


def tiny_args(tmp_path, **over):
    path = tmp_path / "reviews.csv"
    synthetic_frame(480).to_csv(path, index=False)
    model = make_model_folder(tmp_path / "tiny-bert", layers=4)
    args = dict(model=str(model), dataset=str(path), text_column="review", label_column="polarity", seed=0,
                trust_remote_code=False, no_finetune=False, teacher_epochs=6.0, teacher_lr=2e-3)
    return argparse.Namespace(**{**args, **over})


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("apply")
    mp = pytest.MonkeyPatch()
    mp.setenv("AUTOCOMPRESS_HOME", str(tmp / "home"))
    context = TaskContext.from_args(tiny_args(tmp), progress=False)
    yield context
    mp.undo()


def _batch(ctx):
    return ctx.calibration_batches()[0]


def _logits(model, batch):
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


MIXED = CompressionPlan(
    name="mixed",
    defaults=LayerPlan(dtype={"q": "int8", "ffn_in": "int8"}),
    layers={0: LayerPlan(heads=3, ffn=0.5, rank={"ffn_out": 8}),
            1: LayerPlan(keep=False),
            2: LayerPlan(heads=2, sparsity={"ffn_in": 0.5}, dtype={"v": "int8"})},
    distill=DistillConfig(steps=20, lr=1e-3, batch_size=16))


def test_teacher_is_good_enough_for_these_tests(ctx):
    assert ctx.teacher.metrics["validation_accuracy"] >= 0.9


def test_keep_all_reproduces_the_teacher(ctx):
    cm = compress(CompressionPlan.keep_all(), ctx, progress=False)
    batch = _batch(ctx)
    torch.testing.assert_close(_logits(cm.model, batch), _logits(ctx.teacher_model(), batch))
    assert cm.params == count_params(ctx.teacher_model())


def test_mixed_plan_round_trips_and_keeps_sparsity(ctx, tmp_path):
    cm = compress(MIXED, ctx, progress=False)
    assert cm.params < count_params(ctx.teacher_model())
    assert cm.info["recovery"]["steps"] == 20
    # unstructured zeros survive KD recovery (masks are re-applied after every step)
    layer2_ffn_in = [v for k, v in cm.fp32_state.items() if k.endswith("layer.1.intermediate.dense.weight")][0]
    assert (layer2_ffn_in == 0).float().mean().item() == pytest.approx(0.5, abs=0.01)
    out = cm.save_pretrained(tmp_path / "m")
    for name in ("plan.yaml", "config.json", "model.safetensors", "autocompress.json", "tokenizer_config.json"):
        assert (out / name).is_file()
    back = load(out)
    batch = _batch(ctx)
    assert torch.equal(_logits(cm.model, batch), _logits(back.model, batch))
    assert back.plan.fingerprint() == MIXED.fingerprint()
    assert back.params == cm.params
    assert sum(isinstance(m, torch.nn.Linear) for m in back.model.modules()) < \
        sum(isinstance(m, torch.nn.Linear) for m in ctx.teacher_model().modules())  # some are int8 now


def test_kd_recovery_raises_agreement_with_the_teacher(ctx):
    # one layer left, 95% of its weights zeroed: the task is lost until recovery (within the masks)
    harsh = dict(defaults=LayerPlan(sparsity={g: 0.95 for g in LINEAR_GROUPS}),
                 layers={i: LayerPlan(keep=False) for i in (1, 2, 3)})
    before = task_metrics(compress(CompressionPlan(name="harsh", **harsh), ctx, progress=False).model, ctx,
                          splits=("validation",))
    recovered = CompressionPlan(name="harsh-kd", distill=DistillConfig(steps=120, lr=3e-3, batch_size=16), **harsh)
    after = task_metrics(compress(recovered, ctx, progress=False).model, ctx, splits=("validation",))
    assert before["validation_fidelity"] <= 0.75
    assert after["validation_fidelity"] >= 0.9


def test_hidden_and_attention_distillation_run(ctx):
    plan = CompressionPlan(name="kd-inner", layers={1: LayerPlan(keep=False), 3: LayerPlan(keep=False)},
                           distill=DistillConfig(steps=5, lr=1e-3, batch_size=16, hidden_projection="learned",
                                                 weights={"logits": 1.0, "hidden": 1.0, "attention": 1.0}))
    cm = compress(plan, ctx, progress=False)
    assert cm.info["recovery"]["steps"] == 5
    assert torch.isfinite(torch.tensor(cm.info["recovery"]["final_loss"]))
    # the shared teacher is back on its default attention implementation
    assert ctx.teacher_model().config._attn_implementation == "sdpa"


def test_cached_teacher_states_give_the_recovery_the_running_teacher_gives(ctx):
    """Hidden-state KD reads the teacher's states from a per-task cache instead of running the
    teacher each step: the states are the teacher's (fp16, unpadded) and the recovered model
    matches the one recovered beside the running teacher within fp16 rounding."""
    from autocompress.techniques import LayerDropConfig, drop_layers_
    from autocompress.techniques.distill import DistillInputs, distill_, teacher_hidden_states

    teacher = ctx.teacher_model()
    cache = ctx.teacher_hidden()
    assert cache is not None and len(cache) == len(ctx.data["train"])
    row = ctx.data["train"][3]
    with torch.no_grad():
        live = teacher(input_ids=torch.tensor([row["input_ids"]]), output_hidden_states=True).hidden_states[1:]
    assert cache[3].dtype == torch.float16 and cache[3].shape == (4, len(row["input_ids"]), 32)
    assert torch.allclose(cache[3].float(), torch.cat(live), atol=2e-2, rtol=1e-2)
    assert teacher_hidden_states(teacher, ctx.data["train"], ctx.pad_id, batch_size=7)[3].shape == cache[3].shape

    config = DistillConfig(steps=12, lr=1e-3, batch_size=16, weights={"logits": 1.0, "hidden": 1.0})
    students = []
    for cached in (None, cache):
        student = ctx.fresh_student()
        drop_layers_(student, LayerDropConfig((1, 3)))
        summary = distill_(student, DistillInputs(train=ctx.data["train"], teacher_logits=ctx.teacher_logits()["train"],
                                                  pad_id=ctx.pad_id, teacher=None if cached else teacher,
                                                  teacher_layers=4, teacher_hidden=cached), config, progress=False)
        students.append((student, summary["final_loss"]))
    (a, loss_a), (b, loss_b) = students
    assert loss_a == pytest.approx(loss_b, rel=2e-2)
    batch = _batch(ctx)
    assert torch.allclose(_logits(a, batch), _logits(b, batch), atol=2e-2)
    # compress uses the cache for hidden-state KD (the teacher does not run), not for attention KD
    calls = []
    handle = teacher.register_forward_hook(lambda m, i, o: calls.append(1) if m is teacher else None)
    try:
        compress(CompressionPlan(name="kd", layers={1: LayerPlan(keep=False)}, distill=config), ctx, progress=False)
        assert calls == []
        attention = DistillConfig(steps=2, lr=1e-3, batch_size=16, weights={"logits": 1.0, "hidden": 1.0, "attention": 1.0})
        compress(CompressionPlan(name="kd-att", layers={1: LayerPlan(keep=False)}, distill=attention), ctx, progress=False)
        assert len(calls) == 2
    finally:
        handle.remove()


@pytest.mark.parametrize("weights", [{"logits": 1.0}, {"logits": 1.0, "hidden": 1.0, "attention": 1.0}],
                         ids=["logits", "logits+hidden+attention"])
def test_staged_build_pauses_without_changing_the_result(ctx, weights):
    """The search screens the snapshot at step 6, then continues: the finished model must be the
    one a straight build gives (same optimiser state, schedule and data order)."""
    plan = CompressionPlan(name="staged", layers={1: LayerPlan(keep=False)}, defaults=LayerPlan(heads=2, dtype={"q": "int8"}),
                           distill=DistillConfig(steps=15, lr=1e-3, batch_size=16, weights=weights))
    straight = compress(plan, ctx, progress=False)
    stages = compress_stages(plan, ctx, pause_at=(6,), progress=False)
    snapshot = next(stages)
    assert snapshot.info["final"] is False and snapshot.info["recovery"]["steps"] == 6
    batch = _batch(ctx)
    screened_logits = _logits(snapshot.model, batch)  # evaluating the snapshot must not disturb the run
    finished = next(stages)
    assert finished.info["final"] is True and finished.info["recovery"]["steps"] == 15
    for key, value in straight.fp32_state.items():
        assert torch.equal(value, finished.fp32_state[key]), key
    assert torch.equal(_logits(straight.model, batch), _logits(finished.model, batch))
    assert not torch.equal(screened_logits, _logits(finished.model, batch))  # the snapshot was taken earlier
    with pytest.raises(StopIteration):
        next(stages)
    assert ctx.teacher_model().config._attn_implementation == "sdpa"


def test_staged_build_can_stop_at_the_snapshot_and_look_before_training(ctx):
    plan = CompressionPlan(name="staged", layers={1: LayerPlan(keep=False), 2: LayerPlan(keep=False)},
                           distill=DistillConfig(steps=10, lr=1e-3, batch_size=16,
                                                 weights={"logits": 1.0, "attention": 1.0}))
    untrained = compress(CompressionPlan(name="untrained", layers=plan.layers), ctx, progress=False)
    stages = compress_stages(plan, ctx, pause_at=(0,), progress=False)
    first = next(stages)
    assert first.info["recovery"]["steps"] == 0
    batch = _batch(ctx)
    assert torch.equal(_logits(first.model, batch), _logits(untrained.model, batch))
    stages.close()  # not promoted: the rest of the recovery never runs
    assert ctx.teacher_model().config._attn_implementation == "sdpa"
    # a plan without recovery steps is finished at once, whatever the pause
    done = next(compress_stages(CompressionPlan(name="none"), ctx, pause_at=(5,), progress=False))
    assert done.info["final"] is True


def test_layer_map_auto_spreads_over_the_teacher():
    assert layer_map(DistillConfig(), 6, 6) == [0, 1, 2, 3, 4, 5]
    assert layer_map(DistillConfig(), 3, 6) == [1, 3, 5]
    assert layer_map(DistillConfig(), 2, 4) == [1, 3]


def test_evaluate_reports_every_metric(ctx):
    target = Target(threads=1, seq_len=16)
    full = evaluate(compress(CompressionPlan.keep_all(), ctx, progress=False), ctx, target, runs=20)
    small = evaluate(compress(MIXED, ctx, progress=False), ctx, target, runs=20)
    assert full["fidelity"] == 1.0 and full["accuracy"] == ctx.teacher.metrics["test_accuracy"]
    assert full["latency"]["runs"] >= 20 and full["latency"]["p50"] > 0
    assert full["latency"]["p90"] >= full["latency"]["p50"]
    assert small["gflops"] < full["gflops"] and small["params"] < full["params"]
    assert small["size_mb"] < full["size_mb"]


@pytest.mark.parametrize("arch", ARCHS)
def test_save_load_identical_logits_for_every_architecture(arch, tmp_path):
    model = build_tiny_model(arch)
    batch = build_batch(model)
    plan = CompressionPlan(name="m", layers={0: LayerPlan(heads=2, ffn=40, dtype={"k": "int8"}),
                                             1: LayerPlan(keep=False), 2: LayerPlan(rank={"q": 4})})
    resolved = plan.resolve(4, 4, 64, 32)
    apply_structure_(model, resolved)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    base = build_tiny_model(arch).config.to_dict()
    quantize_dynamic_(model, quantize_config(resolved))
    cm = CompressedModel(model=model, plan=plan, resolved=resolved, fp32_state=state, base_config=base,
                         tokenizer=make_tokenizer(tmp_path / "tok"), params=1)
    back = load(cm.save_pretrained(tmp_path / arch))
    assert torch.equal(_logits(model, batch), _logits(back.model, batch))


def test_a_full_candidate_is_timed_by_the_timing_process_from_its_saved_folder(ctx, tmp_path, monkeypatch):
    import json
    import os

    from autocompress.latency import isolated
    from autocompress.search.space import Fidelity
    from autocompress.search.trial import evaluate_candidate

    asked = []
    real_ask = isolated._SERVER.ask
    monkeypatch.setattr(isolated._SERVER, "ask", lambda request, timeout: asked.append(request) or real_ask(request, timeout))
    target = Target(threads=1, seq_len=16)
    row = evaluate_candidate(MIXED, ctx, target, Fidelity(screen_steps=5, screen_examples=32),
                             decide=lambda *args: (True, "test"), save_dir=tmp_path / "trial")
    assert row["fidelity"] == "full" and row["latency_ms"] > 0
    [request] = asked  # one request, naming the saved folder and the target
    assert request["folder"] == str(tmp_path / "trial") and request["target"] == target.to_dict()
    assert isolated._SERVER.proc.pid != os.getpid()  # answered by another process, which never trains
    manifest = json.loads((tmp_path / "trial" / "autocompress.json").read_text())
    assert manifest["metrics"]["latency_ms"] == row["latency_ms"]  # the figure is recorded with the model
    assert load(tmp_path / "trial").plan.fingerprint() == MIXED.fingerprint()
    assert row["score_source"] == "torch"  # torch computes what it serves


def test_a_candidate_whose_full_run_would_outlast_the_time_limit_stays_screened(ctx, tmp_path):
    """The promoter is told how long the full run would take, from the candidate's own screen;
    one that would end after the deadline is not promoted (the time would be lost to the cut)."""
    import time

    from autocompress.objectives import Budget
    from autocompress.search.fidelity import Promoter
    from autocompress.search.space import Fidelity
    from autocompress.search.trial import evaluate_candidate

    fidelity = Fidelity(screen_steps=2, screen_examples=32, min_promote=5)
    plan = replace(MIXED, distill=replace(MIXED.distill, steps=400))
    asked = []

    def ask(promoter):
        return lambda *args: asked.append(args) or promoter.decide(*args)

    row = evaluate_candidate(plan, ctx, Target(threads=1, seq_len=16), fidelity,
                             decide=ask(Promoter(fidelity, Budget(), deadline=time.time() + 3600)))
    assert row["fidelity"] == "full"  # an hour is enough
    expected = asked[-1][3]
    assert row["full_seconds_expected"] == pytest.approx(expected, abs=0.1) and expected > 0
    row = evaluate_candidate(plan, ctx, Target(threads=1, seq_len=16), fidelity,
                             decide=ask(Promoter(fidelity, Budget(), deadline=time.time())))  # any full run ends later
    assert row["fidelity"] == "screen" and "after the time limit" in row["promotion"]
    short = replace(plan, distill=replace(plan.distill, steps=4))  # two steps left: far less to do
    row = evaluate_candidate(short, ctx, Target(threads=1, seq_len=16), fidelity, decide=ask(Promoter(fidelity)))
    assert asked[-1][3] < expected
    # screened untrained (what a slow model gets): the recovery is counted at the step speed given
    untrained = Fidelity(screen_steps=0, screen_examples=32, min_promote=5)
    row = evaluate_candidate(plan, ctx, Target(threads=1, seq_len=16), untrained, step_s=1.0,
                             decide=ask(Promoter(untrained, Budget(), deadline=time.time() + 300)))
    assert asked[-1][3] >= 400 * 1.0 and row["fidelity"] == "screen"  # 400 s of recovery do not fit in 300
    # the promoter gets the figures as the row keeps them (rounded), so measured latencies match later
    assert asked[-1][0] == round(asked[-1][0], 4) and asked[-1][1] == round(asked[-1][1], 3)


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="the openvino package is not installed here")
def test_on_openvino_an_int8_candidate_is_scored_on_the_ir_it_is_timed_and_shipped_as(ctx, tmp_path):
    """OpenVINO's int8 is static (NNCF, activation scales from data): the full candidate's accuracy
    is taken from that IR, calibrated on training examples, which the model's folder keeps and the
    timing process compiles (its size is the size reported)."""
    import json

    from autocompress.evaluate import task_metrics
    from autocompress.latency.runtime import file_bytes
    from autocompress.search.space import Fidelity
    from autocompress.search.trial import evaluate_candidate

    target = Target(runtime="openvino", threads=1, seq_len=16)
    row = evaluate_candidate(MIXED, ctx, target, Fidelity(screen_steps=5, screen_examples=32),
                             decide=lambda *args: (True, "test"), save_dir=tmp_path / "trial")
    assert row["fidelity"] == "full" and row["score_source"] == "openvino"
    ir = tmp_path / "trial" / "openvino" / "model.xml"
    scored = json.loads((ir.parent / "scored.json").read_text())
    assert scored["plan_fingerprint"] == MIXED.fingerprint() and scored["int8_linears"] > 0
    assert "64 training examples" in scored["calibration"]
    assert row["size_source"] == "artefact:openvino" and row["size_mb"] == round(file_bytes(ir) / 1e6, 3)
    torch_figures = task_metrics(load(tmp_path / "trial").model, ctx)  # torch's dynamic int8 of the same plan
    assert 0 <= row["accuracy"] <= 1 and abs(row["accuracy"] - torch_figures["validation_accuracy"]) < 0.2


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="the openvino package is not installed here")
def test_on_openvino_a_saved_candidate_is_scored_again_on_the_ir_it_ships_not_quantized_anew(ctx, tmp_path,
                                                                                             monkeypatch):
    """``autocompress evaluate DIR --runtime openvino`` of a search's model: the IR in its folder
    was calibrated for its plan, so scoring it again reads that IR (same figures, no NNCF run)."""
    from autocompress.evaluate import candidate_metrics
    from autocompress.latency import runtime_openvino
    from autocompress.search.space import Fidelity
    from autocompress.search.trial import evaluate_candidate

    target = Target(runtime="openvino", threads=1, seq_len=16)
    row = evaluate_candidate(MIXED, ctx, target, Fidelity(screen_steps=5, screen_examples=32),
                             decide=lambda *args: (True, "test"), save_dir=tmp_path / "trial")
    calls = []
    real = runtime_openvino.quantize_ir
    monkeypatch.setattr(runtime_openvino, "quantize_ir", lambda *a, **k: calls.append(a) or real(*a, **k))
    again = candidate_metrics(load(tmp_path / "trial"), ctx, target)
    assert calls == [] and again["score_source"] == "openvino"
    assert again["validation_accuracy"] == row["accuracy"] and again["accuracy"] == row["test_accuracy"]
    compress(MIXED, ctx, progress=False).save_pretrained(tmp_path / "unscored")  # no IR in its folder
    candidate_metrics(load(tmp_path / "unscored"), ctx, target)
    assert len(calls) == 1  # quantized, as the search does


def test_timing_a_saved_model_reports_the_protocols_figures_or_one_clear_error(ctx, tmp_path):
    from autocompress.latency.isolated import measure_isolated, measure_saved

    stats = measure_isolated(compress(MIXED, ctx, progress=False), Target(threads=1, seq_len=16))  # temp folder
    assert stats.runs >= 20 and 0 < stats.p50 <= stats.p90
    with pytest.raises(RuntimeError, match=r"timing process failed: .*not a compressed model folder"):
        measure_saved(tmp_path, Target(threads=1, seq_len=16))
    with pytest.raises(RuntimeError, match=r"fresh process failed \(exit 2\).*not a compressed model folder"):
        measure_saved(tmp_path, Target(threads=1, seq_len=16), fresh=True)


def test_the_timing_process_is_reused_and_restarted_when_it_dies(ctx, tmp_path):
    from autocompress.latency import isolated

    compress(MIXED, ctx, progress=False).save_pretrained(tmp_path / "model")
    target = Target(threads=1, seq_len=16)
    isolated.measure_saved(tmp_path / "model", target)
    first = isolated._SERVER.proc.pid
    isolated.measure_saved(tmp_path / "model", target)
    assert isolated._SERVER.proc.pid == first  # started once, then reused
    isolated._SERVER.proc.kill()
    isolated._SERVER.proc.wait()
    assert isolated.measure_saved(tmp_path / "model", target).p50 > 0  # a dead one is replaced
    assert isolated._SERVER.proc.pid != first
    fresh = isolated.measure_saved(tmp_path / "model", target, fresh=True)
    assert fresh.runs >= 20 and 0 < fresh.p50 <= fresh.p90


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_timing_beside_a_reference_puts_the_figures_in_the_references_frame(ctx, tmp_path, runtime):
    from autocompress.latency.isolated import Reference, measure_saved

    target = Target(runtime=runtime, threads=1, seq_len=16)
    compress(CompressionPlan.keep_all(), ctx, progress=False).save_pretrained(tmp_path / "teacher")
    compress(MIXED, ctx, progress=False).save_pretrained(tmp_path / "model")
    plain = measure_saved(tmp_path / "model", target)
    assert plain.raw_p50 is None and plain.drift == 1.0
    # a frame taken when the machine ran 100 times slower than now: the figures scale by about 100
    frame = 100 * measure_saved(tmp_path / "teacher", target).p50
    stats = measure_saved(tmp_path / "model", target, reference=Reference(tmp_path / "teacher", frame))
    assert stats.raw_p50 > 0 and stats.p50 == pytest.approx(stats.raw_p50 * stats.drift)
    assert stats.p90 >= stats.p50 and 20 < stats.drift < 500  # the reference now against the frame (tiny models time noisily)


def test_unit_importance_is_measured_once_and_read_back_from_the_teacher_folder(ctx, monkeypatch):
    """The allocator's unit importance (minutes on a base-size teacher) is kept beside the teacher's
    cached logits: a new context (a continued study, another search) reads it instead of measuring;
    another seed (other calibration batches) measures its own."""
    import dataclasses

    from autocompress.search import unit_importance as ui

    ctx._cache.pop("unit_importance", None)
    first = ui.task_importance(ctx)
    assert len(list((ctx.teacher.path / "outputs").glob("importance-*.json"))) == 1
    fresh = dataclasses.replace(ctx, _cache={k: v for k, v in ctx._cache.items() if k != "unit_importance"})
    with monkeypatch.context() as mp:
        mp.setattr(ui.UnitImportance, "measure", classmethod(lambda cls, *a, **k: pytest.fail("measured again")))
        assert ui.task_importance(fresh) == first
    ui.task_importance(dataclasses.replace(ctx, seed=1, _cache={}))
    assert len(list((ctx.teacher.path / "outputs").glob("importance-*.json"))) == 2


def test_recovery_in_bf16_trains_under_autocast_and_is_written_in_the_plan_only_when_asked(ctx):
    """``distill.precision: bf16`` runs the student's forward passes in bf16 (weights and the
    optimiser stay fp32): the model trains, differs from the fp32 recovery, stays fp32; a plan
    without it keeps its fingerprint; a bad value is one line."""
    from autocompress.errors import UserError

    config = DistillConfig(steps=8, lr=1e-3, batch_size=16, weights={"logits": 1.0, "hidden": 1.0})
    plans = [CompressionPlan(name=p, layers={1: LayerPlan(keep=False)}, distill=replace(config, precision=p))
             for p in ("fp32", "bf16")]
    built = [compress(plan, ctx, progress=False) for plan in plans]
    batch = _batch(ctx)
    start = _logits(compress(replace(plans[0], distill=replace(config, steps=0)), ctx, progress=False).model, batch)
    fp32, bf16 = (_logits(cm.model, batch) for cm in built)
    assert not torch.allclose(bf16, start, atol=1e-4) and not torch.allclose(bf16, fp32, atol=1e-6)
    assert torch.allclose(bf16, fp32, atol=0.2)  # the same recovery, in another precision
    assert all(p.dtype == torch.float32 for p in built[1].model.parameters())
    assert built[1].info["recovery"]["final_loss"] > 0
    assert "precision" not in plans[0].to_dict()["distill"] and plans[1].to_dict()["distill"]["precision"] == "bf16"
    assert CompressionPlan.from_dict(plans[1].to_dict()).distill.precision == "bf16"
    assert plans[0].fingerprint() == CompressionPlan(name="x", layers={1: LayerPlan(keep=False)},
                                                     distill=config).fingerprint()
    with pytest.raises(UserError, match="precision = 'fp16' but it must be one of: fp32, bf16"):
        DistillConfig(steps=1, precision="fp16").check("distill")
