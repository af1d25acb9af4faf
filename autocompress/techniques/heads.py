"""Structured pruning of attention heads."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from autocompress.arch import ArchAdapter, get_adapter
from autocompress.errors import UserError
from autocompress.techniques.importance import Importance, dense_linear, importance_scores


@dataclass(frozen=True)
class HeadPruningConfig:
    """Heads to keep per layer (position in the current layer list); unlisted layers are untouched."""

    keep: Mapping[int, int]
    importance: Importance = "taylor"


def prune_heads_(
    model: nn.Module,
    config: HeadPruningConfig,
    *,
    scores: Mapping[int, torch.Tensor] | None = None,
    batches: Iterable[Mapping[str, torch.Tensor]] | None = None,
) -> None:
    """Keep the top-``keep`` heads of each listed layer by score, in place.

    ``scores`` (one value per head) are used as given; otherwise they are computed with
    ``config.importance`` from ``batches`` (magnitude scores when there are no batches).
    """
    adapter = get_adapter(model)
    layers = adapter.encoder_layers(model)
    for index, n in config.keep.items():
        _check_keep(index, n, layers, adapter)
    if scores is None:
        scores = importance_scores(model, batches=batches, importance=config.importance).heads
    keep_heads_(model, {i: top_indices(scores[i], n) for i, n in config.keep.items()})


def keep_heads_(model: nn.Module, indices: Mapping[int, Sequence[int]]) -> None:
    """Slice each listed layer down to the heads ``indices[layer]``, in place.

    Removes the other heads' rows (and biases) of q/k/v and columns of ``attn_out`` and updates
    the attention module's head count. For rebuilding a saved model's shapes before
    ``load_state_dict``, pass ``{layer: range(n)}``: which heads is irrelevant there, the saved
    weights (and MPNet's ``head_index`` buffer) overwrite them.
    """
    adapter = get_adapter(model)
    layers = adapter.encoder_layers(model)
    head_dim = adapter.head_dim(model)
    for index, heads in indices.items():
        heads = sorted(int(h) for h in heads)
        current = adapter.layer_num_heads(layers[index])
        _check_keep(index, len(heads), layers, adapter)
        if len(set(heads)) != len(heads) or heads[0] < 0 or heads[-1] >= current:
            raise UserError(f"head pruning: layer {index} has heads 0..{current - 1}, got {heads}")
        if len(heads) == current:
            continue
        rows = (torch.tensor(heads)[:, None] * head_dim + torch.arange(head_dim)).flatten()
        layer = layers[index]
        for group in ("q", "k", "v"):
            adapter.set_linear(layer, group, slice_linear(dense_linear(adapter, layer, group), rows, dim=0))
        adapter.set_linear(layer, "attn_out", slice_linear(dense_linear(adapter, layer, "attn_out"), rows, dim=1))
        adapter.set_layer_heads(layer, heads)


def top_indices(scores: torch.Tensor, k: int) -> list[int]:
    """Indices of the ``k`` highest scores, ascending (ties go to the lower index)."""
    order = torch.argsort(scores.detach().cpu(), descending=True, stable=True)
    return sorted(order[:k].tolist())


def slice_linear(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A new ``nn.Linear`` keeping output rows (``dim=0``, bias too) or input columns (``dim=1``)."""
    weight = linear.weight.detach().index_select(dim, index.to(linear.weight.device))
    out_features, in_features = weight.shape
    new = nn.Linear(in_features, out_features, bias=linear.bias is not None,
                    device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if linear.bias is not None:
            bias = linear.bias.detach()
            new.bias.copy_(bias.index_select(0, index.to(bias.device)) if dim == 0 else bias)
    new.weight.requires_grad_(linear.weight.requires_grad)
    if linear.bias is not None:
        new.bias.requires_grad_(linear.bias.requires_grad)
    return new


def _check_keep(index: int, n: int, layers: nn.ModuleList, adapter: ArchAdapter) -> None:
    if not 0 <= index < len(layers):
        raise UserError(f"head pruning: layer {index} does not exist (the model has {len(layers)} layers)")
    current = adapter.layer_num_heads(layers[index])
    if not 1 <= n <= current:
        raise UserError(f"head pruning: layer {index} has {current} heads, cannot keep {n}")
