"""Integration: plans applied to the real minilm-l6 teacher on rotten-tomatoes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from autocompress.apply import compress
from autocompress.compressed import load
from autocompress.evaluate import task_metrics
from autocompress.plan import CompressionPlan, DistillConfig

pytestmark = pytest.mark.integration
PLANS = Path(__file__).parent.parent / "examples" / "plans"


def test_default_teacher_accuracy(default_context):
    assert default_context.teacher.metrics["validation_accuracy"] >= 0.80


def test_int8_agrees_with_fp32_on_98_percent(default_context):
    cm = compress(CompressionPlan.load(PLANS / "minilm-int8-all.yaml"), default_context, progress=False)
    metrics = task_metrics(cm.model, default_context, splits=("test",))
    assert metrics["fidelity"] >= 0.98, metrics


def test_example_plans_all_resolve_and_half_depth_round_trips(default_context, tmp_path):
    for path in PLANS.glob("minilm-*.yaml"):
        CompressionPlan.load(path).resolve(6, 12, 1536, 384)
    plan = CompressionPlan.load(PLANS / "minilm-half-depth.yaml")
    plan = CompressionPlan(**{**plan.__dict__, "distill": DistillConfig(steps=20, lr=1e-4)})
    cm = compress(plan, default_context, progress=False)
    back = load(cm.save_pretrained(tmp_path / "half"))
    batch = default_context.calibration_batches()[0]
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        assert torch.equal(cm.model(**inputs).logits, back.model(**inputs).logits)
    assert sum(1 for r in back.resolved if r.keep) == 3


def test_cli_apply_then_evaluate(default_context, tmp_path):
    out = tmp_path / "int8"
    cmd = [sys.executable, "-m", "autocompress.cli"]
    applied = subprocess.run(cmd + ["apply", "--plan", str(PLANS / "minilm-int8-all.yaml"), "--out", str(out), "--json"],
                             capture_output=True, text=True, check=True)
    metrics = json.loads(applied.stdout)["metrics"]
    assert metrics["fidelity"] >= 0.98 and metrics["latency"]["runs"] >= 20
    evaluated = json.loads(subprocess.run(cmd + ["evaluate", str(out), "--json"], capture_output=True, text=True,
                                          check=True).stdout)
    assert evaluated["accuracy"] == metrics["accuracy"] and evaluated["fidelity"] == metrics["fidelity"]
