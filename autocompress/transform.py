"""A resolved plan applied to a model: the per-layer knobs turned into the techniques' configs.

Technique configs index layers by position in the model's *current* layer list. Resolved plans
(``CompressionPlan.resolve``) use the *original* numbering; the functions here translate.

Typical flow::

    resolved = plan.resolve(...)
    apply_structure_(model, resolved, batches=calibration_batches)
    ...KD recovery...; sparsify_(model, sparsity_config(resolved))   # recovery refills zeros
    finalize_(model, plan, resolved)   # int8 linears, then whole-model techniques (int8 embeddings)

and at load time: model from the saved config, ``rebuild_structure_(model, resolved)``,
``model.load_state_dict(saved)``, then ``finalize_(model, plan, resolved)``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn

from autocompress.arch import get_adapter
from autocompress.errors import UserError
from autocompress.plan import CompressionPlan, ResolvedLayer
from autocompress.techniques import (
    Importance,
    ImportanceScores,
    LayerDropConfig,
    LowRankConfig,
    QuantizeConfig,
    SparsityConfig,
    drop_layers_,
    factorize_,
    importance_scores,
    keep_ffn_neurons_,
    keep_heads_,
    quantize_dynamic_,
    reconstruct_,
    sparsify_,
    top_indices,
)


def apply_structure_(
    model: nn.Module,
    resolved_layers: Sequence[ResolvedLayer],
    *,
    batches: Iterable[Mapping[str, torch.Tensor]] | None = None,
    importance: Importance = "taylor",
    max_batches: int | None = None,
    scores: ImportanceScores | None = None,
    grams: Mapping[tuple[int, str], torch.Tensor] | None = None,
) -> None:
    """Apply a resolved plan's structural changes to an uncompressed model, in place.

    Order: importance scores (once, on the full model; magnitude if ``batches`` is None; or
    ``scores`` as given) -> head pruning -> FFN pruning (with ``grams``, the calibration Gram
    matrices of :func:`~autocompress.techniques.reconstruct.input_grams` on the full model, the
    projections reading the pruned heads/neurons are refitted by least squares) -> layer
    dropping -> low-rank factorization -> sparsity. Quantization is left to the caller (after
    KD recovery) via :func:`quantize_dynamic_`.
    """
    adapter = get_adapter(model)
    layers = adapter.encoder_layers(model)
    if len(resolved_layers) != len(layers):
        raise UserError(
            f"the plan was resolved for {len(resolved_layers)} layers but the model has {len(layers)}"
        )
    heads, ffn = _pruning_targets(model, resolved_layers, {r.index: r.index for r in resolved_layers})
    if heads or ffn:
        if scores is None:
            scores = importance_scores(model, batches=batches, importance=importance, max_batches=max_batches)
        head_dim = adapter.head_dim(model)
        keep_h = {i: top_indices(scores.heads[i], n) for i, n in heads.items()}
        keep_f = {i: top_indices(scores.ffn[i], n) for i, n in ffn.items()}
        originals = {**{(i, "attn_out"): adapter.get_linear(layers[i], "attn_out") for i in keep_h},
                     **{(i, "ffn_out"): adapter.get_linear(layers[i], "ffn_out") for i in keep_f}}
        keep_heads_(model, keep_h)
        keep_ffn_neurons_(model, keep_f)
        if grams is not None:
            kept = {**{(i, "attn_out"): (torch.tensor(h)[:, None] * head_dim + torch.arange(head_dim)).flatten()
                       for i, h in keep_h.items()},
                    **{(i, "ffn_out"): torch.tensor(f) for i, f in keep_f.items()}}
            reconstruct_(model, originals, kept, grams)
    drop_layers_(model, LayerDropConfig(tuple(r.index for r in resolved_layers if not r.keep)))
    factorize_(model, _lowrank_config(resolved_layers))
    sparsify_(model, sparsity_config(resolved_layers))


def rebuild_structure_(model: nn.Module, resolved_layers: Sequence[ResolvedLayer]) -> None:
    """Give a freshly built model the shapes :func:`apply_structure_` produced, without data.

    For loading a saved compressed model: build the model from its saved config, call this,
    then ``load_state_dict``. Works whether the config has the original layer count or the
    reduced one written by ``save_pretrained`` after dropping. Sparsity needs no rebuilding
    (zeros are in the weights) and quantization is re-applied by the caller.
    """
    adapter = get_adapter(model)
    n = len(adapter.encoder_layers(model))
    kept = [r for r in resolved_layers if r.keep]
    if n == len(resolved_layers):
        positions = {r.index: r.index for r in resolved_layers}
    elif n == len(kept):
        positions = {r.index: p for p, r in enumerate(kept)}
    else:
        raise UserError(
            f"the model has {n} layers but the plan was resolved for {len(resolved_layers)} "
            f"layers keeping {len(kept)}"
        )
    heads, ffn = _pruning_targets(model, resolved_layers, positions)
    keep_heads_(model, {i: range(h) for i, h in heads.items()})
    keep_ffn_neurons_(model, {i: range(f) for i, f in ffn.items()})
    if n == len(resolved_layers):
        drop_layers_(model, LayerDropConfig(tuple(r.index for r in resolved_layers if not r.keep)))
    factorize_(model, _lowrank_config(resolved_layers), svd=False)


def finalize_(model: nn.Module, plan: CompressionPlan, resolved_layers: Sequence[ResolvedLayer], *,
              linears: bool = True) -> nn.Module:
    """The steps after recovery, in place (nothing trains after them): int8 linears of the plan's
    layers (unless ``linears`` is False: a copy exported for a runtime that quantizes them itself),
    then the plan's whole-model techniques (:meth:`CompressionPlan.techniques_at`). The one call for
    a model just built, a model loaded and a model exported."""
    if linears:
        quantize_dynamic_(model, quantize_config(resolved_layers))
    for technique in plan.techniques_at("finalize"):
        technique.apply_(model)
    return model


def quantize_config(resolved_layers: Sequence[ResolvedLayer]) -> QuantizeConfig:
    """The plan's int8 linears, keyed by position after layer dropping."""
    return QuantizeConfig({
        (p, g): "int8" for p, r in enumerate(_kept(resolved_layers)) for g, d in r.dtype.items() if d == "int8"
    })


def sparsity_config(resolved_layers: Sequence[ResolvedLayer]) -> SparsityConfig:
    """The plan's sparsity amounts, keyed by position after layer dropping."""
    return SparsityConfig({
        (p, g): a for p, r in enumerate(_kept(resolved_layers)) for g, a in r.sparsity.items() if a > 0
    })


def _lowrank_config(resolved_layers: Sequence[ResolvedLayer]) -> LowRankConfig:
    return LowRankConfig({
        (p, g): k for p, r in enumerate(_kept(resolved_layers)) for g, k in r.rank.items() if k is not None
    })


def _kept(resolved_layers: Sequence[ResolvedLayer]) -> list[ResolvedLayer]:
    return [r for r in resolved_layers if r.keep]


def _pruning_targets(
    model: nn.Module, resolved_layers: Sequence[ResolvedLayer], positions: Mapping[int, int]
) -> tuple[dict[int, int], dict[int, int]]:
    """Heads and FFN neurons to keep, keyed by current position, for layers that change."""
    adapter = get_adapter(model)
    layers = adapter.encoder_layers(model)
    heads, ffn = {}, {}
    for r in _kept(resolved_layers):
        layer = layers[positions[r.index]]
        if r.heads != adapter.layer_num_heads(layer):
            heads[positions[r.index]] = r.heads
        if r.ffn != adapter.get_linear(layer, "ffn_in").out_features:
            ffn[positions[r.index]] = r.ffn
    return heads, ffn


__all__ = ["apply_structure_", "finalize_", "quantize_config", "rebuild_structure_", "sparsity_config"]
