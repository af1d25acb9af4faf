"""Compression techniques: each a frozen config plus an in-place function, one file each.

Per-layer techniques (heads, FFN neurons, layers, low-rank, int8 linears, sparsity, least-squares
reconstruction) index layers by position in the model's *current* layer list; the plan's layer
knobs are turned into their configs by :mod:`autocompress.transform`. Whole-model techniques
(int8 word embeddings, vocabulary trimming, bf16 arithmetic) are :class:`~autocompress.techniques.base.Technique` subclasses: a plan
section that applies itself, registered by subclassing; every module here is imported with the
package, so a new technique is one new file. KD recovery is :mod:`autocompress.techniques.distill`.
"""

from __future__ import annotations

from autocompress.techniques.base import Technique, technique_class, technique_keys
from autocompress.techniques.embeddings import Embeddings, Int8Embedding, quantize_embeddings_
from autocompress.techniques.ffn import FFNPruningConfig, keep_ffn_neurons_, prune_ffn_
from autocompress.techniques.heads import HeadPruningConfig, keep_heads_, prune_heads_, top_indices
from autocompress.techniques.importance import (
    Importance,
    ImportanceScores,
    importance_scores,
    magnitude_scores,
    taylor_scores,
)
from autocompress.techniques.layers import LayerDropConfig, drop_layers_
from autocompress.techniques.lowrank import LowRankConfig, LowRankLinear, factorize_
from autocompress.techniques.precision import Precision, cast_bf16_
from autocompress.techniques.quantize import QuantizeConfig, quantize_dynamic_
from autocompress.techniques.reconstruct import ReconstructConfig, input_grams, reconstruct_
from autocompress.techniques.sparsity import SparsityConfig, sparsify_
from autocompress.techniques.vocabulary import TrimmedEmbedding, Vocabulary, trim_vocabulary_


def _register_every_module() -> None:
    """Import every module of this package, so a technique in a new file registers itself."""
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


_register_every_module()
__all__ = [
    "Embeddings",
    "FFNPruningConfig",
    "HeadPruningConfig",
    "Importance",
    "ImportanceScores",
    "Int8Embedding",
    "LayerDropConfig",
    "LowRankConfig",
    "LowRankLinear",
    "Precision",
    "QuantizeConfig",
    "ReconstructConfig",
    "SparsityConfig",
    "TrimmedEmbedding",
    "Vocabulary",
    "Technique",
    "cast_bf16_",
    "drop_layers_",
    "factorize_",
    "importance_scores",
    "input_grams",
    "keep_ffn_neurons_",
    "keep_heads_",
    "magnitude_scores",
    "prune_ffn_",
    "prune_heads_",
    "quantize_dynamic_",
    "quantize_embeddings_",
    "reconstruct_",
    "sparsify_",
    "taylor_scores",
    "technique_class",
    "technique_keys",
    "top_indices",
    "trim_vocabulary_",
]
