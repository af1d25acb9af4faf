"""DistilBERT: ``distilbert.transformer.layer[i]``, config fields ``n_layers``/``n_heads``/``hidden_dim``."""

from collections.abc import Sequence

from torch import nn

from autocompress.arch.base import ArchAdapter


class DistilBertAdapter(ArchAdapter):
    model_types = ("distilbert",)
    layers_path = "transformer.layer"
    attention_path = "attention"
    heads_attr = "n_heads"
    width_attr = None
    intermediate_attr = "hidden_dim"
    linear_paths = {
        "q": "attention.q_lin",
        "k": "attention.k_lin",
        "v": "attention.v_lin",
        "attn_out": "attention.out_lin",
        "ffn_in": "ffn.lin1",
        "ffn_out": "ffn.lin2",
    }

    def set_encoder_layers(self, model: nn.Module, layers: Sequence[nn.Module]) -> None:
        super().set_encoder_layers(model, layers)
        model.base_model.transformer.n_layers = len(layers)
