"""Vocabulary trimming (:mod:`autocompress.techniques.vocabulary`): same logits on texts whose
tokens are kept, unknown ids read the [UNK] row, every architecture, int8 embeddings on top, and
ONNX Runtime computing what torch computes from the original tokenizer's ids."""

import importlib.util
from pathlib import Path

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


def test_a_plan_that_trims_saves_smaller_and_loads_to_the_same_logits(tmp_path):
    """``vocabulary: {keep: train}`` with int8 embeddings and linears: applied before recovery from
    the task's training ids, saved with the weights, rebuilt from the saved shapes at load."""
    from types import SimpleNamespace

    from autocompress.compressed import CompressedModel, load
    from autocompress.export import plain_loadable
    from autocompress.plan import CompressionPlan
    from autocompress.techniques.vocabulary import Vocabulary
    from autocompress.transform import apply_structure_, finalize_
    from tiny_assets import make_tokenizer

    vocab = 2000
    model = build_tiny_model("bert", vocab_size=vocab)
    batch = build_batch(model)
    train = batch["input_ids"][:2].tolist()  # the task's training ids: rows 2 and 3 hold ids not among them
    special = SimpleNamespace(unk_token_id=UNK, all_special_ids=[0, UNK, 2])
    ctx = SimpleNamespace(tokenizer=special, data={"train": {"input_ids": train}})
    plan = CompressionPlan.from_dict({"schema": "autocompress.plan/v1", "name": "small", "defaults": {"dtype": "int8"},
                                      "vocabulary": {"keep": "train"}, "embeddings": {"dtype": "int8"}})
    assert plan.techniques_at("structure") == [Vocabulary("train")]
    resolved = plan.resolve(4, 4, 64, 32)
    apply_structure_(model, resolved)
    for technique in plan.techniques_at("structure"):
        technique.prepare_(model, ctx)
    kept = model.get_input_embeddings().kept
    assert kept == len(set(sum(train, [])) | {0, UNK, 2})
    state = {k: v.clone() for k, v in model.state_dict().items()}
    base = build_tiny_model("bert", vocab_size=vocab).config.to_dict()
    untrimmed = build_tiny_model("bert", vocab_size=vocab)
    finalize_(model, plan, resolved)
    cm = CompressedModel(model=model, plan=plan, resolved=resolved, fp32_state=state, base_config=base,
                         tokenizer=make_tokenizer(tmp_path / "tok"), params=1)
    finalize_(untrimmed, CompressionPlan.from_dict({**plan.to_dict(), "vocabulary": {"keep": "all"}}), resolved)
    plain = CompressedModel(model=untrimmed, plan=plan, resolved=resolved, fp32_state={}, base_config=base,
                            tokenizer=None)
    assert cm.size_bytes() < plain.size_bytes() - (vocab - kept) * 32 + vocab * 4  # int8 rows gone, remap added
    back = load(cm.save_pretrained(tmp_path / "small"))
    assert isinstance(back.model.get_input_embeddings(), TrimmedEmbedding)
    assert torch.equal(_logits(back.model, batch), _logits(model, batch))
    torch.testing.assert_close(_logits(back.fp32_model(), batch), _logits(build_fp32_like(cm), batch))
    assert back.plan.technique("vocabulary") == Vocabulary("train") and not plain_loadable(back)


def build_fp32_like(cm):
    from autocompress.compressed import build_fp32

    return build_fp32(cm.base_config, cm.resolved, cm.fp32_state, plan=cm.plan)


def test_the_plan_key_is_checked_and_left_out_when_it_keeps_all():
    from autocompress.plan import CompressionPlan

    with pytest.raises(UserError, match="vocabulary.keep = 'some'"):
        CompressionPlan.from_dict({"schema": "autocompress.plan/v1", "name": "p", "vocabulary": {"keep": "some"}})
    plan = CompressionPlan.from_dict({"schema": "autocompress.plan/v1", "name": "p", "vocabulary": {"keep": "all"}})
    assert "vocabulary" not in plan.to_dict() and plan.fingerprint() == CompressionPlan(name="p").fingerprint()


def test_onnx_runtime_runs_a_trimmed_int8_table_as_torch_does(tmp_path):
    from autocompress.latency.onnx import build_onnx, run_onnx
    from autocompress.plan import CompressionPlan
    from autocompress.transform import finalize_

    model = build_tiny_model("bert", vocab_size=2000)
    batch = build_batch(model)
    trim_vocabulary_(model, kept_token_ids(batch["input_ids"].tolist(), special_ids=[0, UNK]), unk_id=UNK)
    plan = CompressionPlan.from_dict({"schema": "autocompress.plan/v1", "name": "p", "embeddings": {"dtype": "int8"}})
    resolved = plan.resolve(4, 4, 64, 32)
    fp32_table = build_onnx(model, tmp_path / "fp32.onnx", resolved=resolved)
    int8_table = build_onnx(model, tmp_path / "int8.onnx", resolved=resolved, plan=plan)
    assert int8_table.stat().st_size < fp32_table.stat().st_size
    expected = _logits(finalize_(model, plan, resolved), batch).numpy()
    assert abs(run_onnx(int8_table, batch["input_ids"], batch["attention_mask"]) - expected).max() < 1e-4


def test_a_space_file_can_offer_trimming_and_a_size_budget_puts_it_in_the_recipes(tmp_path):
    import optuna

    from autocompress.search import __file__ as search_package
    from autocompress.search.spaces import load_space
    from test_allocate import DIMS, PREDICTOR, importance

    text = (Path(search_package).parent / "builtin" / "allocated.yaml").read_text().replace(
        "techniques:                # whole-model", "techniques:\n  vocabulary:\n    keep: [all, train]\n  # whole-model")
    (tmp_path / "trim.yaml").write_text(text)
    space = load_space(str(tmp_path / "trim.yaml"))
    assert space.techniques["vocabulary"] == {"keep": ("all", "train")}
    plain = space.prepare(predictor=PREDICTOR, importance=importance(seed=4)).with_budget(0.4)
    sized = space.prepare(predictor=PREDICTOR, importance=importance(seed=4), size_mb=20.0).with_budget(0.4)
    for budgeted, keep in ((plain, "all"), (sized, "train")):
        recipes = budgeted.recipes()
        plan = budgeted.allocate(*budgeted.knobs(optuna.trial.FixedTrial(recipes[0][1])), DIMS).plan
        assert plan.technique("vocabulary").keep == keep


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="the openvino package is not installed here")
def test_openvino_computes_the_trimmed_model_s_logits_from_the_original_ids(tmp_path):
    from autocompress.latency import Target
    from autocompress.latency.runtime import get_runtime

    model = build_tiny_model("bert", vocab_size=2000)
    batch = build_batch(model)
    trim_vocabulary_(model, kept_token_ids(batch["input_ids"][:2].tolist(), special_ids=[0, UNK]), unk_id=UNK)
    session = get_runtime("openvino").build(model, Target(runtime="openvino", threads=1, batch_size=4, seq_len=10),
                                            workdir=tmp_path)
    try:
        got = session.logits(batch["input_ids"].numpy(), batch["attention_mask"].numpy())
    finally:
        session.close()
    assert abs(got - _logits(model, batch).numpy()).max() < 1e-4
