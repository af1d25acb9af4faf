"""Techniques on tiny random models of every supported architecture."""

import copy
import re
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification

from autocompress.arch import get_adapter
from autocompress.errors import UserError
from autocompress.plan import LINEAR_GROUPS, CompressionPlan, LayerPlan
from autocompress.techniques import (
    FFNPruningConfig,
    HeadPruningConfig,
    LayerDropConfig,
    LowRankConfig,
    LowRankLinear,
    QuantizeConfig,
    SparsityConfig,
    drop_layers_,
    factorize_,
    importance_scores,
    keep_heads_,
    magnitude_scores,
    prune_ffn_,
    prune_heads_,
    quantize_dynamic_,
    sparsify_,
    taylor_scores,
)
from autocompress.transform import apply_structure_, quantize_config, rebuild_structure_

HEAD_DIM, HIDDEN = 8, 32


def logits(model, batch):
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def resolve(plan, model):
    a = get_adapter(model)
    return plan.resolve(a.num_layers(model), a.num_heads(model), a.intermediate_size(model), a.hidden_size(model))


def linear(model, index, group):
    adapter = get_adapter(model)
    return adapter.get_linear(adapter.encoder_layers(model)[index], group)


def test_keep_all_plan_reproduces_logits(arch, tiny_model, make_batch):
    model = tiny_model(arch)
    batch = make_batch(model)
    before, size = logits(model, batch), n_params(model)
    apply_structure_(model, resolve(CompressionPlan.keep_all(), model), batches=[batch])
    assert n_params(model) == size
    torch.testing.assert_close(logits(model, batch), before, rtol=0, atol=0)


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_prune_heads_removes_expected_parameters(arch, attn_implementation, tiny_model, make_batch):
    if arch == "mpnet" and attn_implementation == "sdpa":
        pytest.skip("MPNet only has its own eager attention")
    model = tiny_model(arch, attn_implementation=attn_implementation)
    batch = make_batch(model)
    size = n_params(model)
    prune_heads_(model, HeadPruningConfig(keep={0: 2, 2: 3}), batches=[batch])
    per_head = 3 * (HEAD_DIM * HIDDEN + HEAD_DIM) + HIDDEN * HEAD_DIM  # q/k/v rows + biases, attn_out columns
    assert size - n_params(model) == 3 * per_head
    adapter = get_adapter(model)
    assert [adapter.layer_num_heads(layer) for layer in adapter.encoder_layers(model)] == [2, 4, 3, 4]
    out = logits(model, batch)
    assert out.shape == (4, 2) and torch.isfinite(out).all()


def zero_all_heads_but(model, index, head):
    """Make every head of layer ``index`` except ``head`` contribute nothing; boost ``head``."""
    with torch.no_grad():
        out = linear(model, index, "attn_out")
        for h in range(4):
            if h != head:
                out.weight[:, h * HEAD_DIM:(h + 1) * HEAD_DIM] = 0
        linear(model, index, "v").weight[head * HEAD_DIM:(head + 1) * HEAD_DIM] *= 3
    if model.config.model_type == "mpnet":  # a loud position bias: slicing the wrong head would show
        with torch.no_grad():
            model.mpnet.encoder.relative_attention_bias.weight.normal_(0, 3)


@pytest.mark.parametrize("importance", ["taylor", "magnitude"])
def test_prune_heads_keeps_the_top_scoring_head(arch, importance, tiny_model, make_batch):
    model = tiny_model(arch)
    batch = make_batch(model)
    zero_all_heads_but(model, 1, head=2)
    q_rows = linear(model, 1, "q").weight[2 * HEAD_DIM:3 * HEAD_DIM].detach().clone()
    before = logits(model, batch)
    config = HeadPruningConfig(keep={1: 1}, importance=importance)
    prune_heads_(model, config, batches=[batch, make_batch(model, seed=1)])
    assert torch.equal(linear(model, 1, "q").weight, q_rows)
    torch.testing.assert_close(logits(model, batch), before, rtol=0, atol=1e-6)


def test_prune_heads_uses_given_scores(tiny_model, make_batch):
    model = tiny_model("bert")
    k_weight = linear(model, 3, "k").weight.detach().clone()
    prune_heads_(model, HeadPruningConfig(keep={3: 2}), scores={3: torch.tensor([0.5, 0.1, 0.2, 0.9])})
    assert torch.equal(linear(model, 3, "k").weight, torch.cat([k_weight[0:8], k_weight[24:32]]))


def test_prune_ffn_removes_expected_parameters_and_keeps_top_neurons(arch, tiny_model, make_batch):
    model = tiny_model(arch)
    batch = make_batch(model)
    with torch.no_grad():  # neurons 32.. of layer 1 write nothing, so Taylor must keep 0..31
        linear(model, 1, "ffn_out").weight[:, 32:] = 0
    ffn_in_weight = linear(model, 1, "ffn_in").weight.detach().clone()
    before, size = logits(model, batch), n_params(model)
    prune_ffn_(model, FFNPruningConfig(keep={0: 40, 1: 32, 3: 16}), batches=[batch])
    assert size - n_params(model) == (24 + 32 + 48) * (HIDDEN + 1 + HIDDEN)
    assert torch.equal(linear(model, 1, "ffn_in").weight, ffn_in_weight[:32])
    assert linear(model, 3, "ffn_out").in_features == 16
    before_other_layers = tiny_model(arch)  # same seed: prove layers 0 and 3 actually changed the output
    assert not torch.allclose(logits(before_other_layers, batch), logits(model, batch))
    pruned_only_layer_1 = tiny_model(arch)
    with torch.no_grad():
        linear(pruned_only_layer_1, 1, "ffn_out").weight[:, 32:] = 0
    prune_ffn_(pruned_only_layer_1, FFNPruningConfig(keep={1: 32}), batches=[batch])
    torch.testing.assert_close(logits(pruned_only_layer_1, batch), before, rtol=0, atol=1e-6)


def test_full_rank_factorization_reproduces_outputs(arch, tiny_model, make_batch):
    model = tiny_model(arch)
    batch = make_batch(model)
    before = logits(model, batch)
    factorize_(model, LowRankConfig({(i, g): 32 for i in range(4) for g in LINEAR_GROUPS}))
    assert all(isinstance(linear(model, i, g), LowRankLinear) for i in range(4) for g in LINEAR_GROUPS)
    torch.testing.assert_close(logits(model, batch), before, rtol=0, atol=1e-5)


def test_low_rank_parameter_count(arch, tiny_model, make_batch):
    model = tiny_model(arch)
    size = n_params(model)
    factorize_(model, LowRankConfig({(0, "ffn_in"): 4, (2, "q"): 3}))
    # ffn_in: 64x32 + 64 -> 4*(32+64) + 64 ; q: 32x32 + 32 -> 3*(32+32) + 32
    assert size - n_params(model) == (64 * 32 - 4 * 96) + (32 * 32 - 3 * 64)
    assert linear(model, 0, "ffn_in").rank == 4 and linear(model, 2, "q").rank == 3
    assert logits(model, make_batch(model)).shape == (4, 2)


def test_low_rank_is_the_best_approximation():
    torch.manual_seed(0)
    dense = nn.Linear(20, 12)
    low = LowRankLinear.from_linear(dense, 5)
    approx = (low.up.weight @ low.down.weight).detach()
    s = torch.linalg.svdvals(dense.weight.detach().double())
    error = torch.linalg.matrix_norm(dense.weight.detach().double() - approx.double())
    torch.testing.assert_close(error, s[5:].pow(2).sum().sqrt(), rtol=1e-5, atol=1e-6)  # Eckart-Young
    assert torch.equal(low.up.bias, dense.bias)


def test_drop_layers(arch, tiny_model, make_batch):
    model = tiny_model(arch)
    layers = list(get_adapter(model).encoder_layers(model))
    drop_layers_(model, LayerDropConfig.every_other(4))
    remaining = get_adapter(model).encoder_layers(model)
    assert [id(m) for m in remaining] == [id(layers[0]), id(layers[2])]
    assert model.config.num_hidden_layers == 2
    assert logits(model, make_batch(model)).shape == (4, 2)


def test_every_other():
    assert LayerDropConfig.every_other(6).drop == (1, 3, 5)
    assert LayerDropConfig.every_other(6, keep_bottom=False).drop == (0, 2, 4)


def mixed_plan() -> CompressionPlan:
    return CompressionPlan(
        name="mixed",
        layers={
            0: LayerPlan(heads=2, ffn=40, rank={"q": 4, "ffn_out": 6}),
            1: LayerPlan(keep=False),
            2: LayerPlan(heads=3, sparsity={"ffn_in": 0.5, "k": 0.2}),
            3: LayerPlan(heads=1, ffn=0.25, rank={"attn_out": 5}, dtype={"ffn_in": "int8"}),
        },
    )


@pytest.mark.parametrize("rebuild_from", ["saved", "original"])
def test_save_and_rebuild_gives_identical_logits(arch, rebuild_from, tiny_model, make_batch, tmp_path):
    model = tiny_model(arch)
    batch = make_batch(model)
    resolved = resolve(mixed_plan(), model)
    apply_structure_(model, resolved, batches=[batch])
    expected = logits(model, batch)
    model.save_pretrained(tmp_path, safe_serialization=True)

    if rebuild_from == "saved":
        fresh = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(tmp_path)).eval()
        assert fresh.config.num_hidden_layers == 3
    else:
        fresh = tiny_model(arch, seed=1)
    rebuild_structure_(fresh, resolved)
    fresh.load_state_dict(load_file(Path(tmp_path) / "model.safetensors"), strict=True)
    torch.testing.assert_close(logits(fresh, batch), expected, rtol=0, atol=0)
    adapter = get_adapter(fresh)
    assert [adapter.layer_num_heads(layer) for layer in adapter.encoder_layers(fresh)] == [2, 3, 1]

    quantize_dynamic_(model, quantize_config(resolved))
    quantize_dynamic_(fresh, quantize_config(resolved))
    torch.testing.assert_close(logits(fresh, batch), logits(model, batch), rtol=0, atol=0)


def test_mpnet_save_and_rebuild_with_non_prefix_heads(tiny_model, make_batch, tmp_path):
    model = tiny_model("mpnet")
    batch = make_batch(model)
    with torch.no_grad():
        model.mpnet.encoder.relative_attention_bias.weight.normal_(0, 3)
    keep_heads_(model, {0: [1, 3], 2: [0, 2, 3], 3: [2]})
    expected = logits(model, batch)
    model.save_pretrained(tmp_path, safe_serialization=True)

    fresh = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(tmp_path)).eval()
    keep_heads_(fresh, {0: range(2), 2: range(3), 3: range(1)})
    assert not torch.allclose(logits(fresh, batch)[:1], expected[:1])  # shapes alone are not enough
    fresh.load_state_dict(load_file(Path(tmp_path) / "model.safetensors"), strict=True)
    assert fresh.mpnet.encoder.layer[0].attention.attn.head_index.tolist() == [1, 3]
    torch.testing.assert_close(logits(fresh, batch), expected, rtol=0, atol=0)


def test_rebuild_rejects_a_model_of_the_wrong_depth(tiny_model):
    resolved = resolve(mixed_plan(), tiny_model("bert"))
    model = tiny_model("bert", num_hidden_layers=2)
    with pytest.raises(UserError, match="the model has 2 layers but the plan was resolved for 4 layers keeping 3"):
        rebuild_structure_(model, resolved)


def quantized_linears(model):
    return {name for name, m in model.named_modules() if m._get_name() == "DynamicQuantizedLinear"}


def test_int8_quantizes_only_the_selected_linears(arch, tiny_model, make_batch):
    model = tiny_model(arch)
    batch = make_batch(model, batch_size=64, seq_len=12, seed=3)
    reference = copy.deepcopy(model)
    selected = {(0, "ffn_in"), (0, "ffn_out"), (2, "q"), (3, "attn_out")}
    names = {id(linear(model, i, g)): (i, g) for i in range(4) for g in LINEAR_GROUPS}
    all_names = {name: names.get(id(m)) for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    twin = copy.deepcopy(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quantize_dynamic_(model, QuantizeConfig({**dict.fromkeys(selected, "int8"), (1, "q"): "fp32"}))
    assert caught == []
    assert quantized_linears(model) == {name for name, key in all_names.items() if key in selected}
    assert sum(isinstance(m, nn.Linear) for m in model.modules()) == len(all_names) - len(selected)

    fp32, int8 = logits(reference, batch), logits(model, batch)
    assert not torch.equal(fp32, int8)
    margin_fp32, margin_int8 = fp32[:, 1] - fp32[:, 0], int8[:, 1] - int8[:, 0]
    assert (margin_fp32 > 0).any() and (margin_fp32 < 0).any()  # both classes occur: agreement is not trivial
    assert ((margin_fp32 > 0) == (margin_int8 > 0)).float().mean() >= 0.9
    assert torch.corrcoef(torch.stack([margin_fp32, margin_int8]))[0, 1] > 0.95

    quantize_dynamic_(twin, QuantizeConfig(dict.fromkeys(selected, "int8")))
    assert torch.equal(logits(twin, batch), int8)  # deterministic re-quantization


def test_int8_quantizes_both_factors_of_a_low_rank_linear(tiny_model, make_batch):
    model = tiny_model("bert")
    factorize_(model, LowRankConfig({(1, "v"): 4}))
    quantize_dynamic_(model, QuantizeConfig({(1, "v"): "int8"}))
    prefix = "bert.encoder.layer.1.attention.self.value"
    assert quantized_linears(model) == {f"{prefix}.down", f"{prefix}.up"}
    assert logits(model, make_batch(model)).shape == (4, 2)


def test_quantize_config_follows_dropped_layers(tiny_model):
    resolved = resolve(mixed_plan(), tiny_model("bert"))
    assert quantize_config(resolved).modules == {(2, "ffn_in"): "int8"}  # original layer 3 is now at 2


def test_only_quantize_module_touches_torch_ao():
    package = Path(__file__).resolve().parents[1] / "autocompress"
    users = {p.relative_to(package).as_posix() for p in package.rglob("*.py")
             if re.search(r"torch\.ao\b|from torch import ao\b", p.read_text())}
    assert users == {"techniques/quantize.py"}


def test_sparsity_zeroes_the_smallest_weights(arch, tiny_model):
    model = tiny_model(arch)
    factorize_(model, LowRankConfig({(2, "q"): 8}))
    original = {(i, g): copy.deepcopy(linear(model, i, g)) for i in range(4) for g in LINEAR_GROUPS}
    sparsify_(model, SparsityConfig({(0, "ffn_in"): 0.5, (2, "q"): 0.25}))
    for (i, g), old in original.items():
        new = linear(model, i, g)
        if (i, g) == (0, "ffn_in"):
            zeroed = new.weight == 0
            assert zeroed.sum() == 64 * 32 // 2
            assert old.weight[zeroed].abs().max() <= old.weight[~zeroed].abs().min()
            assert torch.equal(new.bias, old.bias)
        elif (i, g) == (2, "q"):
            assert (new.down.weight == 0).sum() == 8 * 32 // 4 and (new.up.weight == 0).sum() == 32 * 8 // 4
        else:
            assert all(torch.equal(a, b) for a, b in zip(old.parameters(), new.parameters()))


def test_apply_structure_sparsity_uses_positions_after_dropping(tiny_model, make_batch):
    model = tiny_model("bert")
    apply_structure_(model, resolve(mixed_plan(), model), batches=[make_batch(model)])
    assert (linear(model, 1, "ffn_in").weight == 0).float().mean() == 0.5  # original layer 2
    assert (linear(model, 1, "k").weight == 0).float().mean() == pytest.approx(0.2, abs=1e-3)
    assert not (linear(model, 0, "ffn_in").weight == 0).any()


@pytest.mark.parametrize("method", ["taylor", "magnitude"])
def test_importance_scores_shapes(arch, method, tiny_model, make_batch):
    model = tiny_model(arch)
    batch = make_batch(model)
    keep_heads_(model, {1: [0, 2]})
    scores = taylor_scores(model, [batch]) if method == "taylor" else magnitude_scores(model)
    assert {i: tuple(s.shape) for i, s in scores.heads.items()} == {0: (4,), 1: (2,), 2: (4,), 3: (4,)}
    assert {i: tuple(s.shape) for i, s in scores.ffn.items()} == {i: (64,) for i in range(4)}
    for s in [*scores.heads.values(), *scores.ffn.values()]:
        assert torch.isfinite(s).all() and (s >= 0).all() and (s > 0).any()
    assert all(p.grad is None for p in model.parameters())


def test_importance_falls_back_to_magnitude_without_data(tiny_model, make_batch):
    model = tiny_model("bert")
    fallback, magnitude = importance_scores(model), magnitude_scores(model)
    assert all(torch.equal(fallback.heads[i], magnitude.heads[i]) for i in range(4))
    taylor = importance_scores(model, batches=[make_batch(model)])
    assert not torch.allclose(taylor.heads[0], magnitude.heads[0])


def test_taylor_scores_need_labels(tiny_model, make_batch):
    model = tiny_model("bert")
    batch = make_batch(model)
    del batch["labels"]
    with pytest.raises(UserError, match="batches must include 'labels'"):
        taylor_scores(model, [batch])


def test_technique_errors(tiny_model):
    model = tiny_model("bert")
    with pytest.raises(UserError, match="layer 0 has 4 heads, cannot keep 5"):
        prune_heads_(model, HeadPruningConfig(keep={0: 5}))
    with pytest.raises(UserError, match="layer 7 does not exist"):
        prune_ffn_(model, FFNPruningConfig(keep={7: 5}))
    with pytest.raises(UserError, match=r"layers\[0\]\.q is 32->32, so its rank must be in 1\.\.32, got 33"):
        factorize_(model, LowRankConfig({(0, "q"): 33}))
    with pytest.raises(UserError, match="cannot drop all 4 layers"):
        drop_layers_(model, LayerDropConfig((0, 1, 2, 3)))
    factorize_(model, LowRankConfig({(0, "q"): 4}))
    with pytest.raises(UserError, match="q is a LowRankLinear; score and prune heads/FFN before factorizing"):
        prune_heads_(model, HeadPruningConfig(keep={0: 2}, importance="magnitude"))
    with pytest.raises(UserError, match="the plan was resolved for 12 layers but the model has 4"):
        apply_structure_(model, CompressionPlan.keep_all().resolve(12, 4, 64))
