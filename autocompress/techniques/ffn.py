"""Structured pruning of FFN neurons."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from autocompress.arch import ArchAdapter, get_adapter
from autocompress.errors import UserError
from autocompress.techniques.heads import slice_linear, top_indices
from autocompress.techniques.importance import Importance, dense_linear, importance_scores


@dataclass(frozen=True)
class FFNPruningConfig:
    """FFN neurons to keep per layer (position in the current layer list); others untouched."""

    keep: Mapping[int, int]
    importance: Importance = "taylor"


def prune_ffn_(
    model: nn.Module,
    config: FFNPruningConfig,
    *,
    scores: Mapping[int, torch.Tensor] | None = None,
    batches: Iterable[Mapping[str, torch.Tensor]] | None = None,
) -> None:
    """Keep the top-``keep`` FFN neurons of each listed layer by score, in place.

    ``scores`` (one value per neuron) are used as given; otherwise they are computed with
    ``config.importance`` from ``batches`` (magnitude scores when there are no batches).
    """
    adapter = get_adapter(model)
    layers = adapter.encoder_layers(model)
    for index, n in config.keep.items():
        _check_keep(index, n, layers, adapter)
    if scores is None:
        scores = importance_scores(model, batches=batches, importance=config.importance).ffn
    keep_ffn_neurons_(model, {i: top_indices(scores[i], n) for i, n in config.keep.items()})


def keep_ffn_neurons_(model: nn.Module, indices: Mapping[int, Sequence[int]]) -> None:
    """Slice each listed layer's FFN down to neurons ``indices[layer]``, in place.

    Keeps those rows (and biases) of ``ffn_in`` and columns of ``ffn_out``. For rebuilding a
    saved model's shapes before ``load_state_dict``, pass ``{layer: range(n)}``.
    """
    adapter = get_adapter(model)
    layers = adapter.encoder_layers(model)
    for index, neurons in indices.items():
        neurons = sorted(int(j) for j in neurons)
        _check_keep(index, len(neurons), layers, adapter)
        layer = layers[index]
        ffn_in, ffn_out = dense_linear(adapter, layer, "ffn_in"), dense_linear(adapter, layer, "ffn_out")
        if len(set(neurons)) != len(neurons) or neurons[0] < 0 or neurons[-1] >= ffn_in.out_features:
            raise UserError(f"FFN pruning: layer {index} has neurons 0..{ffn_in.out_features - 1}, got {neurons}")
        if len(neurons) == ffn_in.out_features:
            continue
        index_tensor = torch.tensor(neurons)
        adapter.set_linear(layer, "ffn_in", slice_linear(ffn_in, index_tensor, dim=0))
        adapter.set_linear(layer, "ffn_out", slice_linear(ffn_out, index_tensor, dim=1))


def _check_keep(index: int, n: int, layers: nn.ModuleList, adapter: ArchAdapter) -> None:
    if not 0 <= index < len(layers):
        raise UserError(f"FFN pruning: layer {index} does not exist (the model has {len(layers)} layers)")
    current = adapter.get_linear(layers[index], "ffn_in").out_features
    if not 1 <= n <= current:
        raise UserError(f"FFN pruning: layer {index} has {current} neurons, cannot keep {n}")
