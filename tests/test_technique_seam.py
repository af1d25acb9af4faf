"""The technique seam: a whole-model technique written in one place (here, this file) is a plan
section that parses, checks and round-trips, applies after recovery, is applied again when a saved
model loads, is exported to ONNX Runtime as torch runs it, and is a knob of a search space."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from autocompress.errors import UserError
from autocompress.plan import CompressionPlan
from autocompress.techniques import Technique, technique_keys
from autocompress.techniques.base import _REGISTRY
from conftest import build_batch, build_tiny_model


@dataclass(frozen=True)
class ScaledHead(Technique):
    """A toy technique: the classifier's weights and bias scaled by ``factor`` (logits scale too)."""

    key = "scaled_head"
    choices = {"factor": (1.0, 0.5, 0.25)}

    factor: float = 1.0

    def apply_(self, model):
        with torch.no_grad():
            for p in model.classifier.parameters():
                p.mul_(self.factor)
        return model


@pytest.fixture(autouse=True)
def registered():
    _REGISTRY[ScaledHead.key] = ScaledHead  # defined above: registered at import, again if a test removed it
    yield
    _REGISTRY.pop(ScaledHead.key, None)


def _plan(**section) -> CompressionPlan:
    return CompressionPlan.from_dict({"schema": "autocompress.plan/v1", "name": "p", "scaled_head": section},
                                     source="p.yaml")


def _logits(model, batch):
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def test_a_new_section_parses_checks_and_round_trips(tmp_path):
    assert "scaled_head" in technique_keys() and "embeddings" in technique_keys()
    plan = _plan(factor=0.5)
    assert plan.technique("scaled_head") == ScaledHead(0.5) and plan.to_dict()["scaled_head"] == {"factor": 0.5}
    plan.save(tmp_path / "p.yaml")
    again = CompressionPlan.load(tmp_path / "p.yaml")
    assert again == plan and again.fingerprint() == plan.fingerprint()
    assert "scaled_head" not in _plan(factor=1.0).to_dict()  # left at its default: not stored
    assert _plan(factor=1.0).fingerprint() == CompressionPlan(name="p").fingerprint()
    with pytest.raises(UserError, match=r"p.yaml: scaled_head.factor = 0.3 but it must be one of: 1.0, 0.5, 0.25"):
        _plan(factor=0.3)
    with pytest.raises(UserError, match="p.yaml: scaled_head: unknown key 'bias'; allowed keys: factor"):
        _plan(bias=1)
    assert "scaled_head factor=0.5" in plan.table(4, 4, 64, 32)


def test_it_applies_after_recovery_and_again_at_load_and_on_onnx_runtime(tmp_path):
    from transformers import AutoTokenizer

    from autocompress.compressed import CompressedModel, load
    from autocompress.latency.onnx import build_onnx, run_onnx
    from autocompress.transform import finalize_
    from tiny_assets import make_tokenizer

    plan = _plan(factor=0.25)
    model = build_tiny_model("bert")
    batch = build_batch(model)
    resolved = plan.resolve(4, 4, 64, 32)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    before = _logits(model, batch)
    finalize_(model, plan, resolved)
    torch.testing.assert_close(_logits(model, batch), before * 0.25)
    make_tokenizer(tmp_path / "tok")
    cm = CompressedModel(model=model, plan=plan, resolved=resolved, fp32_state=state,
                         base_config=model.config.to_dict(), tokenizer=AutoTokenizer.from_pretrained(tmp_path / "tok"))
    back = load(cm.save_pretrained(tmp_path / "saved"))  # the folder keeps fp32 weights: applied again
    torch.testing.assert_close(_logits(back.model, batch), before * 0.25)
    path = build_onnx(back.fp32_model(), tmp_path / "m.onnx", resolved=resolved, plan=plan)
    got = run_onnx(path, batch["input_ids"], batch["attention_mask"])
    assert abs(got - (before * 0.25).numpy()).max() < 1e-4


def test_a_space_file_makes_it_a_knob():
    from optuna.trial import FixedTrial

    from autocompress.search.space_file import suggest_techniques, technique_choices

    choices = technique_choices({"techniques": {"scaled_head": {"factor": [1.0, 0.5]}}}, "s.yaml")
    assert choices == {"scaled_head": {"factor": (1.0, 0.5)}}
    assert suggest_techniques(FixedTrial({"scaled_head": 0.5}), choices) == (ScaledHead(0.5),)
    assert suggest_techniques(FixedTrial({"scaled_head": 1.0}), choices) == ()  # its default: left out
    for bad, message in (({"scaled_head": {"factor": [0.3]}}, "has 0.3; choices must be one of 1.0, 0.5, 0.25"),
                         ({"sharpen": {"x": [1]}}, "unknown technique 'sharpen'; techniques: "),
                         ({"scaled_head": {"bias": [1]}}, "unknown key 'bias'")):
        with pytest.raises(UserError, match=message):
            technique_choices({"techniques": bad}, "s.yaml")
