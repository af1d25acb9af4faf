"""Architecture adapters: locating layers, linears and head counts in real transformers models."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn
from transformers import AutoConfig

from autocompress.arch import get_adapter
from autocompress.arch.bert import BertAdapter
from autocompress.arch.distilbert import DistilBertAdapter
from autocompress.arch.mpnet import MPNetAdapter
from autocompress.arch.roberta import RobertaAdapter
from autocompress.errors import UserError
from autocompress.plan import LINEAR_GROUPS

EXPECTED_ADAPTER = {"bert": BertAdapter, "roberta": RobertaAdapter, "distilbert": DistilBertAdapter,
                    "mpnet": MPNetAdapter}


def logits(model, batch):
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def test_get_adapter_picks_by_model_type(arch, tiny_model):
    assert type(get_adapter(tiny_model(arch))) is EXPECTED_ADAPTER[arch]


@pytest.mark.parametrize("model_type", ["xlm-roberta", "camembert"])
def test_roberta_derivatives_use_roberta_adapter(model_type):
    model = SimpleNamespace(config=SimpleNamespace(model_type=model_type))
    assert type(get_adapter(model)) is RobertaAdapter


def test_unsupported_model_type_names_supported_ones():
    model = SimpleNamespace(config=SimpleNamespace(model_type="gpt2"))
    with pytest.raises(UserError, match=r"unsupported model type 'gpt2'; supported model types: bert, camembert, "
                                        r"distilbert, mpnet, roberta, xlm-roberta$"):
        get_adapter(model)


def test_sizes_from_config(arch, tiny_model):
    model = tiny_model(arch)
    adapter = get_adapter(model)
    sizes = (adapter.num_layers(model), adapter.num_heads(model), adapter.head_dim(model),
             adapter.hidden_size(model), adapter.intermediate_size(model))
    assert sizes == (4, 4, 8, 32, 64)
    assert len(adapter.encoder_layers(model)) == 4


def test_linear_groups_have_expected_shapes(arch, tiny_model):
    model = tiny_model(arch)
    adapter = get_adapter(model)
    layer = adapter.encoder_layers(model)[1]
    shapes = {g: tuple(adapter.get_linear(layer, g).weight.shape) for g in LINEAR_GROUPS}
    assert shapes == {"q": (32, 32), "k": (32, 32), "v": (32, 32), "attn_out": (32, 32),
                      "ffn_in": (64, 32), "ffn_out": (32, 64)}
    assert len({id(adapter.get_linear(layer, g)) for g in LINEAR_GROUPS}) == 6


@pytest.mark.parametrize("group", LINEAR_GROUPS)
def test_set_linear_replaces_the_module_the_model_runs(arch, group, tiny_model, make_batch):
    model = tiny_model(arch)
    batch = make_batch(model)
    adapter = get_adapter(model)
    layer = adapter.encoder_layers(model)[0]
    old = adapter.get_linear(layer, group)
    new = nn.Linear(old.in_features, old.out_features)
    with torch.no_grad():
        new.weight.copy_(old.weight * 3)
        new.bias.copy_(old.bias)
    before = logits(model, batch)
    adapter.set_linear(layer, group, new)
    assert adapter.get_linear(layer, group) is new
    assert any(m is new for m in model.modules()) and not any(m is old for m in model.modules())
    assert not torch.allclose(logits(model, batch), before)


def test_set_encoder_layers_updates_config(arch, tiny_model, make_batch, tmp_path):
    model = tiny_model(arch)
    adapter = get_adapter(model)
    layers = adapter.encoder_layers(model)
    adapter.set_encoder_layers(model, [layers[0], layers[3]])
    assert len(adapter.encoder_layers(model)) == 2
    assert adapter.encoder_layers(model)[1] is layers[3]
    assert model.config.num_hidden_layers == 2
    assert logits(model, make_batch(model)).shape == (4, 2)
    model.config.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).num_hidden_layers == 2


def test_set_layer_num_heads(arch, tiny_model):
    model = tiny_model(arch)
    adapter = get_adapter(model)
    layer = adapter.encoder_layers(model)[2]
    assert adapter.layer_num_heads(layer) == 4
    adapter.set_layer_num_heads(layer, 3)
    assert adapter.layer_num_heads(layer) == 3
    assert adapter.layer_num_heads(adapter.encoder_layers(model)[1]) == 4
    if adapter.width_attr:
        assert getattr(adapter.attention(layer), adapter.width_attr) == 24


def test_mpnet_layers_get_their_own_slice_of_the_position_bias(tiny_model):
    model = tiny_model("mpnet")
    adapter = get_adapter(model)
    layer = adapter.encoder_layers(model)[0]
    attn = layer.attention.attn
    adapter.set_layer_heads(layer, [1, 3])
    adapter.set_layer_heads(layer, [1])  # composes: original head 3
    assert attn.head_index.tolist() == [3]
    assert adapter.layer_num_heads(layer) == 1 and attn.all_head_size == 8
    assert "attention.attn.head_index" in layer.state_dict()
    # give the attention one head's worth of projections, then record the bias it receives
    attn.q, attn.k, attn.v, attn.o = nn.Linear(32, 8), nn.Linear(32, 8), nn.Linear(32, 8), nn.Linear(8, 32)
    seen = []
    attn.register_forward_hook(lambda module, args, out: seen.append(args[2]))
    full = model.mpnet.encoder.compute_position_bias(torch.zeros(2, 5, 32))
    layer.attention(torch.zeros(2, 5, 32), None, full)
    assert full.shape == (2, 4, 5, 5)
    assert torch.equal(seen[0], full[:, [3]])
