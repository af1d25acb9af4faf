"""``autocompress export`` on a real tiny search run: plan, Hugging Face folder, ONNX fp32 and int8."""

from __future__ import annotations

import importlib.util
import json
import shlex
import shutil

import numpy as np
import onnx
import pytest
import torch

from autocompress.cli import main
from autocompress.compressed import load
from autocompress.latency.onnx import run_onnx
from autocompress.plan import CompressionPlan
from conftest import use_tiny_project
from tiny_assets import synthetic_frame

TEXTS = list(synthetic_frame(24, seed=5)["review"])


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_project):
    """A 3-trial tiny search (trial 0: the teacher, a keep-all plan; trial 1: the decision-tree
    baseline, every linear int8; trial 2: sampled). The search keeps only the front's models, so
    the models of trials 0 and 1 are rebuilt the way the missing-model error says: export the
    plan, then ``autocompress apply`` (both plans train nothing, so the rebuild is exact)."""
    mp, tiny = use_tiny_project(tiny_project, tmp_path_factory.mktemp("export"))
    tmp = tiny["tmp"]
    out = tmp / "run"
    assert main(["search", *tiny["args"], "--trials", "3", "--threads", "1", "--out", str(out),
                 "--study-name", "t"]) == 0
    for trial in (0, 1):
        folder = out / "models" / f"trial-{trial:04d}"
        if not folder.is_dir():
            manifest = _export(out, "plan", tmp / f"plan-{trial}", pick=trial)
            assert main(_apply_argv(manifest, folder)) == 0
    teacher, baseline = (load(out / "models" / f"trial-{n:04d}").resolved for n in (0, 1))
    assert all(r.keep and (r.heads, r.ffn) == (4, 64) and not any(r.rank.values()) for r in teacher + baseline)
    assert {d for r in teacher for d in r.dtype.values()} == {"fp32"}
    assert {d for r in baseline for d in r.dtype.values()} == {"int8"}
    yield {"tmp": tmp, "run": out, "recommended": json.loads((out / "recommended.json").read_text())["candidate"]}
    mp.undo()


def _export(run_dir, fmt, out, *, pick="recommended", extra=()) -> dict:
    argv = ["export", str(run_dir), "--format", fmt, "--out", str(out), "--pick", str(pick), "--json", *extra]
    assert main(argv) == 0
    return json.loads((out / "export.json").read_text())


def _apply_argv(manifest: dict, out) -> list[str]:
    words = shlex.split(manifest["usage"])
    assert words[:2] == ["autocompress", "apply"] and words[-1] == "DIR"
    return words[1:-1] + [str(out)]


def _encode(folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)(TEXTS, padding=True, truncation=True, return_tensors="pt")


def _logits(model, batch):
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("autocompress: error: "), err
    return err[0]


# ---------------------------------------------------------------- plan


def test_plan_export_round_trips_and_apply_accepts_it(run, tmp_path, capsys):
    rec = run["recommended"]
    manifest = _export(run["run"], "plan", tmp_path / "rec")
    assert json.loads(capsys.readouterr().out)["trial"] == rec["number"]
    text = (tmp_path / "rec" / "plan.yaml").read_text()
    assert text.startswith("schema: autocompress.plan/v1")
    plan = CompressionPlan.load(tmp_path / "rec" / "plan.yaml")
    assert plan.fingerprint() == CompressionPlan.from_dict(rec["plan"]).fingerprint() == manifest["plan"]["fingerprint"]
    assert manifest["recommended"] and manifest["metrics"]["accuracy"] == rec["accuracy"]
    assert sorted(manifest["files"]) == ["export.json", "plan.yaml"]

    by_number = _export(run["run"], "plan", tmp_path / "by-number", pick=rec["number"])
    assert by_number["plan"] == manifest["plan"]
    assert main(_apply_argv(manifest, tmp_path / "applied")) == 0  # the printed command works as it is
    assert load(tmp_path / "applied").plan.fingerprint() == plan.fingerprint()


def test_plan_of_a_trial_off_the_front_comes_from_the_study(run, tmp_path):
    manifest = _export(run["run"], "plan", tmp_path / "p", pick=1)
    assert not manifest["recommended"] and manifest["metrics"]["warm_start"] == "baseline"
    assert CompressionPlan.load(tmp_path / "p" / "plan.yaml").name == "decision-tree-baseline"


def test_a_missing_model_is_one_line_but_the_plan_still_exports(run, tmp_path, capsys):
    moved = tmp_path / "moved-run"  # a copied run folder: models are found under it, not at recorded paths
    shutil.copytree(run["run"], moved, ignore=shutil.ignore_patterns("ray"))
    rec = run["recommended"]["number"]
    shutil.rmtree(moved / "models" / f"trial-{rec:04d}")
    assert main(["export", str(moved), "--format", "hf", "--out", str(tmp_path / "hf")]) == 2
    line = _one_error_line(capsys)
    assert f"trial {rec}: its model is not in {moved}" in line and "--format plan" in line
    assert "autocompress apply --plan" in line
    assert not (tmp_path / "hf").exists()
    assert _export(moved, "plan", tmp_path / "plan")["trial"] == rec
    other = next(n for n in (0, 1) if n != rec)
    assert _export(moved, "hf", tmp_path / "other", pick=other)["source_model"].startswith(str(moved))


# ---------------------------------------------------------------- hf


def test_hf_export_reloads_with_identical_logits_and_states_its_metrics(run, tmp_path):
    rec = run["recommended"]
    out = tmp_path / "hf"
    manifest = _export(run["run"], "hf", out)
    for name in ("config.json", "model.safetensors", "tokenizer_config.json", "README.md", "plan.yaml"):
        assert (out / name).is_file(), name
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]  # no temporary folders left beside it
    batch = _encode(out)
    source = load(run["run"] / "models" / f"trial-{rec['number']:04d}")
    assert torch.equal(_logits(load(out).model, batch), _logits(source.model, batch))
    card = (out / "README.md").read_text()
    assert "from autocompress.compressed import load" in card and f"cm = load('{out}')" in card
    for value in (f"{rec['accuracy']:.4f}", f"{rec['test_accuracy']:.4f}", f"{rec['agreement']:.4f}",
                  f"{rec['latency_ms']:.3f}", f"{rec['latency_p90_ms']:.3f}", f"{rec['size_mb']:.3f} MB",
                  f"{rec['params']:,}", f"trial {rec['number']}", "study `t`", "torch, 1 threads, batch 1, seq 32"):
        assert value in card, value
    if not manifest["plain_transformers"]:
        assert "cannot load it" in card


@pytest.mark.parametrize("trial", [0, 1], ids=["keep-all", "int8-only"])
def test_hf_export_of_an_unchanged_structure_loads_in_plain_transformers(run, tmp_path, trial):
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "hf"
    manifest = _export(run["run"], "hf", out, pick=trial)
    assert manifest["plain_transformers"]
    card = (out / "README.md").read_text()
    assert "AutoModelForSequenceClassification.from_pretrained" in card
    assert "from autocompress.compressed import load" in card
    batch = _encode(out)
    ours = load(out)
    plain = _logits(AutoModelForSequenceClassification.from_pretrained(out).eval(), batch)
    if trial == 0:
        assert torch.equal(plain, _logits(ours.model, batch))
    else:  # plain transformers runs the int8 linears in fp32, as the card says
        assert "int8 linears then run in fp32" in card
        assert torch.equal(plain, _logits(ours.fp32_model(), batch))
        assert not torch.equal(plain, _logits(ours.model, batch))


# ---------------------------------------------------------------- onnx


def test_onnx_export_runs_standalone_and_matches_torch(run, tmp_path):
    import onnxruntime as ort

    rec = run["recommended"]
    out = tmp_path / "onnx"
    manifest = _export(run["run"], "onnx", out)
    info = manifest["onnx"]
    assert info["check"]["max_abs_diff"] < 1e-4 and info["check"]["argmax_agreement"] == 1.0
    assert {"p50", "p90", "spread", "runs", "target", "target_description"} <= set(info["latency"])
    assert info["latency"]["target"] == {"runtime": "onnxruntime", "threads": 1, "batch_size": 1, "seq_len": 32}
    assert info["latency"]["runs"] >= 20
    # the README's recipe: onnxruntime and the tokenizer beside the file, nothing of autocompress
    batch = _encode(out)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"input_ids": batch["input_ids"].numpy(),
                                   "attention_mask": batch["attention_mask"].numpy()})[0]
    expected = _logits(load(run["run"] / "models" / f"trial-{rec['number']:04d}").fp32_model(), batch)
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-4, rtol=1e-4)
    assert "p50" in (out / "README.md").read_text()


def test_onnx_int8_agrees_and_ort_quantize_json_reproduces_it(run, tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = _export(run["run"], "onnx", tmp_path / "fp32", pick=1, extra=["--threads", "1"])
    int8 = _export(run["run"], "onnx-int8", tmp_path / "int8", pick=1)
    config = json.loads((tmp_path / "int8" / "ort_quantize.json").read_text())
    assert config == json.loads((tmp_path / "fp32" / "ort_quantize.json").read_text())
    nodes = config["arguments"]["nodes_to_quantize"]
    assert int8["onnx"]["int8_matmuls"] == len(nodes) == 24 and fp32["onnx"]["int8_matmuls"] == 0
    ops = [n.op_type for n in onnx.load(str(tmp_path / "int8" / "model.onnx")).graph.node]
    assert ops.count("MatMulInteger") == len(nodes)
    assert int8["onnx"]["check"]["argmax_agreement"] >= 0.9

    batch = _encode(tmp_path / "int8")
    exported = run_onnx(tmp_path / "int8" / "model.onnx", batch["input_ids"], batch["attention_mask"])
    torch_int8 = _logits(load(run["run"] / "models" / "trial-0001").model, batch).numpy()
    assert (exported.argmax(-1) == torch_int8.argmax(-1)).mean() >= 0.9

    args = config["arguments"]
    quantize_dynamic(tmp_path / "fp32" / "model.onnx", tmp_path / "again.onnx",
                     **{**args, "weight_type": QuantType[args["weight_type"]]})
    again = run_onnx(tmp_path / "again.onnx", batch["input_ids"], batch["attention_mask"])
    np.testing.assert_array_equal(again, exported)
    np.testing.assert_array_equal(_optimum_style_quantize(tmp_path, batch), exported)


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="the openvino package is not installed")
def test_openvino_ir_runs_in_plain_openvino_and_matches_torch(run, tmp_path, capsys):
    import openvino as ov

    manifest = _export(run["run"], "openvino", tmp_path / "ir", pick=0)  # the teacher: fp32 linears
    info = manifest["openvino"]
    assert {"model.xml", "model.bin", "tokenizer_config.json", "plan.yaml", "README.md"} <= set(manifest["files"])
    assert info["check"]["max_abs_diff"] < 1e-4 and info["check"]["argmax_agreement"] == 1.0
    assert info["latency"]["target"]["runtime"] == "openvino" and info["latency"]["runs"] >= 20
    # the card's recipe: plain openvino with the manifest's config, the tokenizer beside the IR
    assert info["compile_config"] == {"INFERENCE_PRECISION_HINT": "f32"} and "f32" in manifest["usage"]
    assert repr(info["compile_config"]) in (tmp_path / "ir" / "README.md").read_text()
    batch = _encode(tmp_path / "ir")
    compiled = ov.Core().compile_model(str(tmp_path / "ir" / "model.xml"), "CPU", info["compile_config"])
    got = compiled({"input_ids": batch["input_ids"].numpy(), "attention_mask": batch["attention_mask"].numpy()})[0]
    expected = _logits(load(run["run"] / "models" / "trial-0000").model, batch).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)
    # int8 linears: refused in one line before anything is written
    assert main(["export", str(run["run"]), "--format", "openvino", "--pick", "1", "--out", str(tmp_path / "q")]) == 2
    assert "int8 linears" in _one_error_line(capsys) and not (tmp_path / "q").exists()
    # once the model's folder holds the int8 IR an OpenVINO search scored, that IR is what ships
    import shutil

    from autocompress.latency.runtime import get_runtime

    folder = run["run"] / "models" / "trial-0001"
    cm = load(folder)
    try:
        items = [{"input_ids": batch["input_ids"].numpy(), "attention_mask": batch["attention_mask"].numpy()}]
        get_runtime("openvino").scorer(cm, folder, lambda: items)
        manifest = _export(run["run"], "openvino", tmp_path / "q", pick=1)
        assert (tmp_path / "q" / "model.bin").read_bytes() == (folder / "openvino" / "model.bin").read_bytes()
        assert manifest["openvino"]["linears"].startswith("int8 where the plan says")
        assert "int8 where the plan says" in (tmp_path / "q" / "README.md").read_text()
    finally:
        shutil.rmtree(folder / "openvino", ignore_errors=True)


def _optimum_style_quantize(tmp_path, batch):
    """What Optimum's ``ORTQuantizer.quantize`` does with ``ort_config.json``'s ``quantization``
    (an ``ONNXQuantizer`` built from its fields), run on the fp32 export; returns its logits."""
    from onnxruntime.quantization import QuantizationMode, QuantType
    from onnxruntime.quantization.onnx_quantizer import ONNXQuantizer

    q = json.loads((tmp_path / "int8" / "ort_config.json").read_text())["quantization"]
    assert (q["is_static"], q["format"], q["mode"]) == (False, "QOperator", "IntegerOps")
    quantizer = ONNXQuantizer(
        onnx.load(str(tmp_path / "fp32" / "model.onnx")), q["per_channel"], q["reduce_range"],
        QuantizationMode[q["mode"]], q["is_static"], QuantType[q["weights_dtype"]], QuantType[q["activations_dtype"]],
        None, q["nodes_to_quantize"], q["nodes_to_exclude"], q["operators_to_quantize"],
        extra_options={"WeightSymmetric": q["weights_symmetric"], "ActivationSymmetric": q["activations_symmetric"],
                       "EnableSubgraph": False, "ForceSymmetric": False,
                       "AddQDQPairToWeight": q["qdq_add_pair_to_weight"], "DedicatedQDQPair": q["qdq_dedicated_pair"],
                       "QDQOpTypePerChannelSupportToAxis": q["qdq_op_type_per_channel_support_to_axis"]})
    quantizer.quantize_model()
    quantizer.model.save_model_to_file(str(tmp_path / "optimum.onnx"))
    return run_onnx(tmp_path / "optimum.onnx", batch["input_ids"], batch["attention_mask"])


# ---------------------------------------------------------------- bad input


def test_a_previous_export_is_replaced_and_a_foreign_folder_is_not(run, tmp_path, capsys):
    out = tmp_path / "out"
    _export(run["run"], "plan", out)
    assert _export(run["run"], "hf", out)["format"] == "hf"  # replaces the previous export
    assert (out / "model.safetensors").is_file()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main(["export", str(run["run"]), "--format", "plan", "--out", str(foreign)]) == 2
    assert "did not write" in _one_error_line(capsys)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


def test_an_interrupted_export_leaves_nothing(run, tmp_path, monkeypatch, capsys):
    from autocompress import export

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "onnx_latency", interrupt)  # after model.onnx and the tokenizer are written
    assert main(["export", str(run["run"]), "--format", "onnx", "--out", str(tmp_path / "out")]) == 130
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("case,message", [
    ("no-run-dir", "no such folder"),
    ("not-a-run", "is not a search run: no pareto.json"),
    ("unknown-trial", "trial 99 is not in"),
    ("bad-pick", "expected 'recommended' or a trial number"),
    ("unknown-format", "unknown format 'tflite'; choose one of plan, hf, onnx, onnx-int8"),
    ("out-is-a-file", "exists and is not a folder"),
    ("no-int8-linears", "keeps every linear fp32 and changes nothing else"),
    ("target-for-plan", "--threads only applies to --format onnx"),
    ("torch-runtime-for-onnx", "an ONNX export runs in onnxruntime"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(run, tmp_path, capsys, case, message):
    out = tmp_path / "out"
    run_dir, fmt, extra = str(run["run"]), "plan", []
    if case == "no-run-dir":
        run_dir = str(tmp_path / "nope")
    elif case == "not-a-run":
        (tmp_path / "empty").mkdir()
        run_dir = str(tmp_path / "empty")
    elif case == "unknown-trial":
        extra = ["--pick", "99"]
    elif case == "bad-pick":
        extra = ["--pick", "best"]
    elif case == "unknown-format":
        fmt = "tflite"
    elif case == "out-is-a-file":
        out.write_text("keep me")
    elif case == "no-int8-linears":
        fmt, extra = "onnx-int8", ["--pick", "0"]
    elif case == "target-for-plan":
        extra = ["--threads", "2"]
    elif case == "torch-runtime-for-onnx":
        fmt, extra = "onnx", ["--runtime", "torch"]
    capsys.readouterr()
    assert main(["export", run_dir, "--format", fmt, "--out", str(out), *extra]) == 2
    assert message in _one_error_line(capsys)
    if case == "out-is-a-file":
        assert out.read_text() == "keep me"
    else:
        assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no temporary leftovers
