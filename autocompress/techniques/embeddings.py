"""int8 word embeddings: the table stored as int8 with one scale per row, dequantized on lookup.

A plan's ``embeddings: {dtype: int8}`` section (:class:`Embeddings`, a whole-model technique: this
file is all of it). In a small encoder the word-embedding table is most of the weights (MiniLM-L6:
11.7M of 22.7M parameters), so a model whose linears are int8 is still ~50 MB with fp32
embeddings; ONNX Runtime's one-line ``quantize_dynamic`` of the teacher is 23 MB because it
quantizes that ``Gather`` too. Per-row scales keep each token's vector to within 1/254 of its
largest entry.

Like the int8 linears, this runs after recovery: the saved folder keeps the fp32 table and it is
quantized again at load (deterministic). Exported models (ONNX, OpenVINO) store the int8 table
and its per-row scales behind constant ops the runtime folds at load, so every runtime computes
the same values at no latency cost (measured, docs/runtimes.md): it saves size only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from autocompress.errors import UserError
from autocompress.techniques.base import Technique
from autocompress.techniques.vocabulary import TrimmedEmbedding


class Int8Embedding(nn.Module):
    """An ``nn.Embedding`` whose table is int8 with a per-row fp32 scale (symmetric, max-abs)."""

    def __init__(self, weight: torch.Tensor, padding_idx: int | None = None):
        super().__init__()
        weight = weight.detach().float()
        scale = weight.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127.0
        self.register_buffer("weight", torch.round(weight / scale).clamp_(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale)
        self.padding_idx = padding_idx
        self.num_embeddings, self.embedding_dim = weight.shape

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return nn.functional.embedding(input_ids, self.weight).to(self.scale.dtype) * self.scale[input_ids]

    def dequantized(self) -> nn.Embedding:
        """The fp32 ``nn.Embedding`` this table stands for (its rounded values)."""
        table = nn.Embedding(self.num_embeddings, self.embedding_dim, padding_idx=self.padding_idx)
        with torch.no_grad():
            table.weight.copy_(self.weight.float() * self.scale)
        return table

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int8 per-row scales"


def quantize_embeddings_(model: nn.Module, dtype: str) -> nn.Module:
    """Store the model's word embeddings (``get_input_embeddings()``) as :class:`Int8Embedding` when
    ``dtype`` is ``"int8"``, in place; ``"fp32"`` leaves them. Returns the model."""
    if dtype == "fp32":
        return model
    if dtype != "int8":
        raise UserError(f"embeddings dtype must be 'int8' or 'fp32', got {dtype!r}")
    table = model.get_input_embeddings()
    if isinstance(table, TrimmedEmbedding):  # a trimmed vocabulary: its kept rows are the table
        owner, table = table, table.table
    else:
        owner = None
    if isinstance(table, Int8Embedding):
        return model
    if type(table) is not nn.Embedding:
        raise UserError(f"int8 embeddings: the input embeddings are a {type(table).__name__}, not an nn.Embedding")
    if owner is not None:
        owner.table = Int8Embedding(table.weight, table.padding_idx)
    else:
        model.set_input_embeddings(Int8Embedding(table.weight, table.padding_idx))
    return model


@dataclass(frozen=True)
class Embeddings(Technique):
    """What happens to the input embeddings. ``dtype``: the word-embedding table's storage,
    ``fp32`` (as is) or ``int8`` (:class:`Int8Embedding`)."""

    key = "embeddings"
    choices = {"dtype": ("fp32", "int8")}
    saves = ("size",)

    dtype: str = "fp32"

    def apply_(self, model: nn.Module) -> nn.Module:
        return quantize_embeddings_(model, self.dtype)


__all__ = ["Embeddings", "Int8Embedding", "quantize_embeddings_"]
