"""One-shot reconstruction of pruned projections (least squares on calibration activations)."""

from __future__ import annotations

import pytest
import torch

from autocompress.arch import get_adapter
from autocompress.errors import UserError
from autocompress.plan import CompressionPlan, LayerPlan
from autocompress.techniques import importance_scores, input_grams
from autocompress.transform import apply_structure_
from autocompress.techniques.reconstruct import ReconstructConfig, reconstructed_linear


def _projection_inputs(model, batches, group):
    """Per layer: (inputs of ``group`` over non-padding tokens, its outputs)."""
    adapter = get_adapter(model)
    seen = {}

    def hook(i):
        def capture(module, args, output):
            seen.setdefault(i, []).append((args[0].flatten(0, -2), output.flatten(0, -2)))
        return capture

    handles = [adapter.get_linear(layer, group).register_forward_hook(hook(i))
               for i, layer in enumerate(adapter.encoder_layers(model))]
    with torch.no_grad():
        for b in batches:
            model(**{k: v for k, v in b.items() if k != "labels"})
    for h in handles:
        h.remove()
    masks = torch.cat([b["attention_mask"].flatten().bool() for b in batches])
    return {i: (torch.cat([x for x, _ in v])[masks], torch.cat([y for _, y in v])[masks]) for i, v in seen.items()}


@pytest.mark.parametrize("arch", ["bert", "distilbert"])
def test_reconstruction_reduces_the_pruned_projection_error_on_calibration_data(arch, tiny_model, make_batch):
    teacher = tiny_model(arch, seed=1)
    batches = [make_batch(teacher, batch_size=8, seq_len=12, seed=s) for s in range(6)]
    grams = input_grams(teacher, batches)
    scores = importance_scores(teacher, batches=batches)
    plan = CompressionPlan(name="cut", defaults=LayerPlan(heads=2, ffn=24))
    resolved = plan.resolve(4, 4, 64, 32)
    reference = {g: _projection_inputs(teacher, batches, g) for g in ("attn_out", "ffn_out")}

    errors = {}
    for reconstruct in (False, True):
        student = tiny_model(arch, seed=1)
        apply_structure_(student, resolved, scores=scores, grams=grams if reconstruct else None)
        adapter = get_adapter(student)
        head_dim = adapter.head_dim(student)
        for g in ("attn_out", "ffn_out"):
            for i, layer in enumerate(adapter.encoder_layers(student)):
                # the pruned projection fed the teacher's inputs at the kept positions vs the teacher's output
                x, y = reference[g][i]
                if g == "attn_out":
                    kept = sorted(torch.argsort(scores.heads[i], descending=True, stable=True)[:2].tolist())
                    cols = (torch.tensor(kept)[:, None] * head_dim + torch.arange(head_dim)).flatten()
                else:
                    cols = torch.tensor(sorted(torch.argsort(scores.ffn[i], descending=True, stable=True)[:24].tolist()))
                with torch.no_grad():
                    out = adapter.get_linear(layer, g)(x[:, cols])
                errors[reconstruct, g, i] = (out - y).pow(2).mean().item()
    for g in ("attn_out", "ffn_out"):
        for i in range(4):
            assert errors[True, g, i] < errors[False, g, i], (g, i, errors[True, g, i], errors[False, g, i])


def test_reconstruction_keeping_every_input_reproduces_the_layer():
    torch.manual_seed(0)
    linear = torch.nn.Linear(6, 3)
    x = torch.randn(200, 6)
    xa = torch.cat([x, torch.ones(200, 1)], 1).double()
    new = reconstructed_linear(linear, range(6), xa.T @ xa, ReconstructConfig(damp=0.0))
    assert torch.allclose(new.weight, linear.weight, atol=1e-5) and torch.allclose(new.bias, linear.bias, atol=1e-5)


def test_reconstruction_is_the_least_squares_fit():
    torch.manual_seed(0)
    linear = torch.nn.Linear(8, 4)
    x = torch.randn(300, 8)
    x[:, 5] = 0.7 * x[:, 1] + 0.1 * torch.randn(300)  # a dropped input the kept ones can partly stand for
    kept = [0, 1, 2, 3]
    xa = torch.cat([x, torch.ones(300, 1)], 1).double()
    new = reconstructed_linear(linear, kept, xa.T @ xa, ReconstructConfig(damp=0.0))
    with torch.no_grad():
        target = linear(x).double()
        design = torch.cat([x[:, kept], torch.ones(300, 1)], 1).double()
        expected = torch.linalg.lstsq(design, target).solution
    assert torch.allclose(new.weight.double(), expected[:-1].T, atol=1e-4)
    assert torch.allclose(new.bias.double(), expected[-1], atol=1e-4)


def test_reconstruct_is_a_plan_key_and_round_trips():
    plan = CompressionPlan.from_dict({"schema": "autocompress.plan/v1", "name": "r", "reconstruct": True,
                                      "defaults": {"ffn": 0.5}})
    assert plan.reconstruct is True and CompressionPlan.from_dict(plan.to_dict()) == plan
    assert "reconstruct" not in CompressionPlan(name="plain").to_dict()  # older plans read the same
    with pytest.raises(UserError, match="reconstruct"):
        CompressionPlan.from_dict({"schema": "autocompress.plan/v1", "name": "r", "reconstruct": "yes"})
    with pytest.raises(UserError, match="damp"):
        ReconstructConfig(damp=2.0)
