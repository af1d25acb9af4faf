"""MPNet: BERT-like layers, plus one relative position bias shared by all layers.

``MPNetEncoder`` computes the bias once, shaped (batch, num_heads, q, k), and passes it to every
layer. When a layer loses heads, its attention module gets a persistent ``head_index`` buffer (the
original head numbers it kept) and a forward pre-hook that slices the bias to those heads. The
buffer is part of the state dict, so it survives ``save_pretrained`` -> rebuild -> ``load_state_dict``.
"""

from collections.abc import Sequence

import torch
from torch import nn

from autocompress.arch.base import ArchAdapter


def _select_bias_heads(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Forward pre-hook on ``MPNetSelfAttention``: keep only this layer's heads of the bias."""
    if len(args) > 2 and args[2] is not None:
        args = (*args[:2], args[2].index_select(1, module.head_index), *args[3:])
    elif kwargs.get("position_bias") is not None:
        kwargs = {**kwargs, "position_bias": kwargs["position_bias"].index_select(1, module.head_index)}
    return args, kwargs


class MPNetAdapter(ArchAdapter):
    model_types = ("mpnet",)
    position_offset = 2  # positions start after the padding index (1), as in RoBERTa
    layers_path = "encoder.layer"
    attention_path = "attention.attn"
    linear_paths = {
        "q": "attention.attn.q",
        "k": "attention.attn.k",
        "v": "attention.attn.v",
        "attn_out": "attention.attn.o",
        "ffn_in": "intermediate.dense",
        "ffn_out": "output.dense",
    }

    def set_layer_heads(self, layer: nn.Module, kept: Sequence[int]) -> None:
        attn = self.attention(layer)
        kept = torch.as_tensor(list(kept), dtype=torch.long, device=next(attn.parameters()).device)
        if "head_index" in attn._buffers:
            attn.head_index = attn.head_index[kept]
        else:
            attn.register_buffer("head_index", kept.clone())
            attn.register_forward_pre_hook(_select_bias_heads, with_kwargs=True)
        super().set_layer_heads(layer, kept.tolist())
