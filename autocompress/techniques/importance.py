"""Importance scores for attention heads and FFN neurons (higher = more important).

Scores are keyed by position in the model's current encoder layer list:
``heads[i]`` has one entry per head of layer i, ``ffn[i]`` one per FFN neuron.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from autocompress.arch import ArchAdapter, get_adapter
from autocompress.errors import UserError
from autocompress.arch.base import LINEAR_GROUPS

Importance = Literal["taylor", "magnitude"]
IMPORTANCE_METHODS = ("taylor", "magnitude")


@dataclass(frozen=True)
class ImportanceScores:
    """Per-layer score vectors for heads and FFN neurons."""

    heads: dict[int, torch.Tensor]
    ffn: dict[int, torch.Tensor]


def taylor_scores(
    model: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]], *, max_batches: int | None = None
) -> ImportanceScores:
    """First-order Taylor importance, summed over examples: ``|sum(grad * activation)|``.

    The activation of a head is its slice of the input of the attention output projection, that
    of an FFN neuron is its input to ``ffn_out``; the sum runs over tokens (and the head's dims),
    the absolute value is taken per example. ``loss = model(**batch).loss``, so each batch must
    include ``labels``. Runs in eval mode; parameter ``.grad`` fields are left untouched.
    """
    adapter = get_adapter(model)
    layers = adapter.encoder_layers(model)
    head_dim = adapter.head_dim(model)
    captured: dict[tuple[str, int], torch.Tensor] = {}

    def capture(key: tuple[str, int]):
        def hook(module: nn.Module, args: tuple) -> None:
            captured[key] = args[0]

        return hook

    handles = []
    for i, layer in enumerate(layers):
        handles.append(adapter.get_linear(layer, "attn_out").register_forward_pre_hook(capture(("heads", i))))
        handles.append(adapter.get_linear(layer, "ffn_out").register_forward_pre_hook(capture(("ffn", i))))
    scores: dict[str, dict[int, torch.Tensor]] = {"heads": {}, "ffn": {}}
    params = list(model.parameters())
    requires_grad = [p.requires_grad for p in params]
    was_training = model.training
    device = params[0].device
    model.eval()
    try:
        for p in params:
            p.requires_grad_(True)
        seen = 0
        for batch in batches:
            if max_batches is not None and seen >= max_batches:
                break
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            captured.clear()
            with torch.enable_grad():
                loss = model(**batch).loss
                if loss is None:
                    raise UserError("importance: batches must include 'labels' so the model returns a loss")
                keys = list(captured)
                grads = torch.autograd.grad(loss, [captured[k] for k in keys])
            for (kind, i), grad in zip(keys, grads):
                contrib = (captured[kind, i] * grad).detach()  # (batch, tokens, width)
                if kind == "heads":
                    contrib = contrib.unflatten(-1, (-1, head_dim)).sum(dim=-1)
                per_unit = contrib.sum(dim=1).abs().sum(dim=0)
                scores[kind][i] = scores[kind].get(i, 0) + per_unit
            seen += 1
        if seen == 0:
            raise UserError("importance: no batches were given")
    finally:
        captured.clear()
        for handle in handles:
            handle.remove()
        for p, flag in zip(params, requires_grad):
            p.requires_grad_(flag)
        model.train(was_training)
    return ImportanceScores(heads=scores["heads"], ffn=scores["ffn"])


def magnitude_scores(model: nn.Module) -> ImportanceScores:
    """Data-free scores: L2 norm of the weights a unit owns.

    A head owns its rows of q/k/v and its columns of ``attn_out``; an FFN neuron owns its row
    of ``ffn_in`` and its column of ``ffn_out``.
    """
    adapter = get_adapter(model)
    head_dim = adapter.head_dim(model)
    heads, ffn = {}, {}
    with torch.no_grad():
        for i, layer in enumerate(adapter.encoder_layers(model)):
            sq = {g: dense_linear(adapter, layer, g).weight.pow(2) for g in LINEAR_GROUPS}
            per_head = sum(sq[g].unflatten(0, (-1, head_dim)).sum(dim=(1, 2)) for g in ("q", "k", "v"))
            per_head = per_head + sq["attn_out"].unflatten(1, (-1, head_dim)).sum(dim=(0, 2))
            heads[i] = per_head.sqrt()
            ffn[i] = (sq["ffn_in"].sum(dim=1) + sq["ffn_out"].sum(dim=0)).sqrt()
    return ImportanceScores(heads=heads, ffn=ffn)


def importance_scores(
    model: nn.Module,
    *,
    batches: Iterable[Mapping[str, torch.Tensor]] | None = None,
    importance: Importance = "taylor",
    max_batches: int | None = None,
) -> ImportanceScores:
    """Taylor scores from ``batches``; magnitude scores if asked for or if there is no data."""
    if importance not in IMPORTANCE_METHODS:
        raise UserError(f"importance = {importance!r} but it must be one of: {', '.join(IMPORTANCE_METHODS)}")
    if importance == "magnitude" or batches is None:
        return magnitude_scores(model)
    return taylor_scores(model, batches, max_batches=max_batches)


def dense_linear(adapter: ArchAdapter, layer: nn.Module, group: str) -> nn.Linear:
    """The group's ``nn.Linear``; UserError if it was already factorized or quantized."""
    linear = adapter.get_linear(layer, group)
    if type(linear) is not nn.Linear:
        raise UserError(
            f"{group} is a {type(linear).__name__}; score and prune heads/FFN before factorizing or quantizing"
        )
    return linear
