"""Vocabulary trimming: the word-embedding table cut to the tokens a task uses.

A BERT-family tokenizer has ~30k (XLM-R: 250k) tokens; a task's texts use a fraction of them
(Rotten Tomatoes' training split: see :func:`kept_token_ids`), and in a small encoder that table is
most of the weights (MiniLM-L6: 11.7M of 22.7M parameters). :class:`TrimmedEmbedding` keeps the
rows of the kept tokens and one small remap from every original id to its row; an id that was not
kept reads the ``[UNK]`` row, as the tokenizer would give for a token it does not know.

The remap lives in the model, not in a rewritten tokenizer: the model takes the ids the original
tokenizer makes, so the tokenizer ships unchanged and any tokenizer works (WordPiece, BPE,
SentencePiece); an exported graph is one more ``Gather`` of an int32 table (30,522 ids: 122 KB).
Rewriting a WordPiece vocabulary instead would change how words with removed pieces are split, and
is specific to one tokenizer kind. Texts whose tokens are all kept give exactly the logits of the
untrimmed model (tested).

A plan's ``vocabulary: {keep: train}`` section (:class:`Vocabulary`, a ``structure``-stage
technique: applied to the student before recovery, with the task's data; saved with the weights,
rebuilt from the saved shapes at load). ``keep: all`` (the default) leaves the table as it is.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from autocompress.errors import UserError
from autocompress.techniques.base import Technique


class TrimmedEmbedding(nn.Module):
    """An ``nn.Embedding`` over the original ids whose table holds only the kept rows: ``remap``
    (int32, one entry per original id) gives each id its row; ids not kept read the ``unk_id`` row.
    ``table`` is a plain ``nn.Embedding`` (int8 embeddings may replace it)."""

    def __init__(self, table: nn.Embedding, keep_ids: Iterable[int], unk_id: int):
        super().__init__()
        vocab, dim = table.weight.shape
        keep = sorted({int(i) for i in keep_ids} | {int(unk_id)})
        if keep[0] < 0 or keep[-1] >= vocab:
            raise UserError(f"vocabulary trimming: token id {keep[0] if keep[0] < 0 else keep[-1]} is outside "
                            f"the table's {vocab} rows")
        rows = torch.tensor(keep, dtype=torch.long)
        remap = torch.full((vocab,), keep.index(int(unk_id)), dtype=torch.int32)
        remap[rows] = torch.arange(len(keep), dtype=torch.int32)
        self.register_buffer("remap", remap)
        padding = None if table.padding_idx is None else int(remap[table.padding_idx])
        self.table = nn.Embedding(len(keep), dim, padding_idx=padding)
        with torch.no_grad():
            self.table.weight.copy_(table.weight.detach()[rows])
        self.num_embeddings, self.embedding_dim, self.padding_idx = vocab, dim, table.padding_idx

    @property
    def kept(self) -> int:
        return self.table.num_embeddings

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.table(self.remap[input_ids].long())

    def extra_repr(self) -> str:
        return f"{self.num_embeddings} ids -> {self.kept} rows, {self.embedding_dim}"


def kept_token_ids(input_ids: Iterable[Iterable[int]], special_ids: Iterable[int]) -> list[int]:
    """Every id that occurs in ``input_ids`` (a task's tokenised training texts), plus the
    tokenizer's special ids, sorted."""
    seen: set[int] = {int(i) for i in special_ids}
    for row in input_ids:
        seen.update(int(i) for i in row)
    return sorted(seen)


def trim_vocabulary_(model: nn.Module, keep_ids: Iterable[int], unk_id: int) -> nn.Module:
    """Replace ``model``'s input embeddings (``get_input_embeddings()``, a plain ``nn.Embedding``)
    by a :class:`TrimmedEmbedding` keeping ``keep_ids``, in place; returns the model. A model
    already trimmed is left as it is."""
    table = model.get_input_embeddings()
    if isinstance(table, TrimmedEmbedding):
        return model
    if type(table) is not nn.Embedding:
        raise UserError(f"vocabulary trimming: the input embeddings are a {type(table).__name__}, "
                        "not an nn.Embedding (trim before int8 embeddings)")
    model.set_input_embeddings(TrimmedEmbedding(table, keep_ids, unk_id))
    return model


def _input_embeddings_name(model: nn.Module) -> str:
    table = model.get_input_embeddings()
    return next(name for name, module in model.named_modules() if module is table)


@dataclass(frozen=True)
class Vocabulary(Technique):
    """Which tokens the word-embedding table keeps: ``all`` (as is) or ``train``, the tokens of the
    task's training split plus the tokenizer's special tokens (:class:`TrimmedEmbedding`)."""

    key = "vocabulary"
    stage = "structure"
    choices = {"keep": ("all", "train")}
    saves = ("size",)

    keep: str = "all"

    def prepare_(self, model: nn.Module, ctx) -> nn.Module:
        if self.keep == "all":
            return model
        tokenizer = ctx.tokenizer
        if tokenizer.unk_token_id is None:
            raise UserError("vocabulary trimming: the tokenizer has no unknown token for the ids it removes")
        ids = kept_token_ids(ctx.data["train"]["input_ids"], tokenizer.all_special_ids)
        return trim_vocabulary_(model, ids, tokenizer.unk_token_id)

    def rebuild_(self, model: nn.Module, state) -> None:
        if self.keep == "all" or isinstance(model.get_input_embeddings(), TrimmedEmbedding):
            return
        name = _input_embeddings_name(model)
        table, remap = state.get(f"{name}.table.weight"), state.get(f"{name}.remap")
        if table is None or remap is None:
            raise UserError(f"vocabulary trimming: the saved weights have no trimmed table at {name}")
        shell = TrimmedEmbedding(model.get_input_embeddings(), range(table.shape[0]), unk_id=0)  # shapes only
        if shell.padding_idx is not None:
            shell.table.padding_idx = int(remap[shell.padding_idx])
        model.set_input_embeddings(shell)


__all__ = ["TrimmedEmbedding", "Vocabulary", "kept_token_ids", "trim_vocabulary_"]
