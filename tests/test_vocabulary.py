"""Vocabulary trimming (:mod:`autocompress.techniques.vocabulary`): same logits on texts whose
tokens are kept, unknown ids read the [UNK] row, every architecture, int8 embeddings on top, and
ONNX Runtime computing what torch computes from the original tokenizer's ids."""

import pytest
import torch
from torch import nn

from autocompress.errors import UserError
from autocompress.techniques.embeddings import quantize_embeddings_
from autocompress.techniques.vocabulary import TrimmedEmbedding, kept_token_ids, trim_vocabulary_
from conftest import ARCHS, build_batch, build_tiny_model

UNK = 1


def _logits(model, batch):
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("arch", ARCHS)
def test_texts_whose_tokens_are_kept_give_the_same_logits_and_the_table_shrinks(arch):
    model = build_tiny_model(arch, vocab_size=2000)
    batch = build_batch(model)
    keep = kept_token_ids(batch["input_ids"].tolist(), special_ids=[0, UNK, 2])
    before, params = _logits(model, batch), _params(model)
    trim_vocabulary_(model, keep, unk_id=UNK)
    table = model.get_input_embeddings()
    assert isinstance(table, TrimmedEmbedding) and table.kept == len(keep) < 100
    assert _params(model) == params - (2000 - len(keep)) * table.embedding_dim
    torch.testing.assert_close(_logits(model, batch), before, rtol=0, atol=0)


def test_an_id_that_was_not_kept_reads_the_unk_row():
    torch.manual_seed(0)
    table = nn.Embedding(50, 8, padding_idx=0)
    trimmed = TrimmedEmbedding(table, keep_ids=[0, 5, 9], unk_id=UNK)
    ids = torch.tensor([[0, 5, 9, 7, 49, UNK]])
    out = trimmed(ids)
    torch.testing.assert_close(out[0, :3], table(torch.tensor([0, 5, 9])))
    for position in (3, 4, 5):  # 7 and 49 were not kept: both read [UNK]'s vector
        torch.testing.assert_close(out[0, position], table.weight[UNK].detach())
    assert trimmed.kept == 4 and trimmed.num_embeddings == 50 and trimmed.padding_idx == 0
    assert trimmed.table.padding_idx == int(trimmed.remap[0])


def test_kept_ids_are_the_data_s_ids_plus_the_special_ones():
    assert kept_token_ids([[101, 7, 102], [101, 7, 9, 102, 0]], special_ids=[0, 100, 101, 102, 103]) == \
        [0, 7, 9, 100, 101, 102, 103]


def test_int8_embeddings_apply_to_the_trimmed_table():
    model = build_tiny_model("bert", vocab_size=2000)
    batch = build_batch(model)
    keep = kept_token_ids(batch["input_ids"].tolist(), special_ids=[0, UNK])
    trim_vocabulary_(model, keep, unk_id=UNK)
    trimmed = _logits(model, batch)
    quantize_embeddings_(model, "int8")
    table = model.get_input_embeddings()
    assert isinstance(table, TrimmedEmbedding) and table.table.weight.dtype == torch.int8
    assert (_logits(model, batch) - trimmed).abs().max() < 0.05


def test_bad_input_is_one_clear_error():
    model = build_tiny_model("bert", vocab_size=200)
    with pytest.raises(UserError, match="outside the table's 200 rows"):
        trim_vocabulary_(model, [0, 1, 500], unk_id=UNK)
    quantize_embeddings_(model, "int8")
    with pytest.raises(UserError, match="trim before int8 embeddings"):
        trim_vocabulary_(model, [0, 1], unk_id=UNK)


def test_onnx_runtime_runs_the_trimmed_model_on_the_original_ids(tmp_path):
    from autocompress.latency.onnx import build_onnx, run_onnx

    model = build_tiny_model("bert", vocab_size=2000)
    batch = build_batch(model)
    plain = build_onnx(model, tmp_path / "plain.onnx")
    keep = kept_token_ids(batch["input_ids"].tolist(), special_ids=[0, UNK])
    trim_vocabulary_(model, keep, unk_id=UNK)
    small = build_onnx(model, tmp_path / "trimmed.onnx")
    assert small.stat().st_size < plain.stat().st_size - (2000 - len(keep)) * 32 * 4 + 2000 * 4 + 4096
    got = run_onnx(small, batch["input_ids"], batch["attention_mask"])
    assert abs(got - _logits(model, batch).numpy()).max() < 1e-4
