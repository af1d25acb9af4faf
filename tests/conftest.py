"""Shared fixtures: tiny randomly initialised classifiers for every supported architecture."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    MPNetConfig,
    MPNetForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
)

ARCHS = ("bert", "roberta", "distilbert", "mpnet")
VOCAB = 100
LAYERS, HIDDEN, HEADS, FFN = 4, 32, 4, 64


def build_tiny_model(arch: str, seed: int = 0, **overrides) -> torch.nn.Module:
    """A seeded tiny ``*ForSequenceClassification`` (2 labels) in eval mode."""
    if arch == "distilbert":
        sizes = dict(dim=HIDDEN, n_layers=LAYERS, n_heads=HEADS, hidden_dim=FFN)
    else:
        sizes = dict(hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=FFN)
    config_cls, model_cls = {
        "bert": (BertConfig, BertForSequenceClassification),
        "roberta": (RobertaConfig, RobertaForSequenceClassification),
        "distilbert": (DistilBertConfig, DistilBertForSequenceClassification),
        "mpnet": (MPNetConfig, MPNetForSequenceClassification),
    }[arch]
    config = config_cls(**{"vocab_size": VOCAB, "max_position_embeddings": 64, "num_labels": 2, **sizes, **overrides})
    torch.manual_seed(seed)
    return model_cls(config).eval()


def build_batch(model: torch.nn.Module, batch_size: int = 4, seq_len: int = 10, seed: int = 0) -> dict:
    """Random ``input_ids``/``attention_mask``/``labels``; most rows right-padded."""
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, VOCAB, (batch_size, seq_len), generator=g)
    attention_mask = torch.ones(batch_size, seq_len, dtype=torch.long)
    for row in range(batch_size):
        n_pad = (2 * row) % (seq_len - 1)
        attention_mask[row, seq_len - n_pad:] = 0
    input_ids[attention_mask == 0] = model.config.pad_token_id
    labels = torch.randint(0, 2, (batch_size,), generator=g)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


@pytest.fixture
def tiny_model():
    """``tiny_model(arch, seed=0, **config_overrides)`` -> tiny random classifier."""
    return build_tiny_model


@pytest.fixture
def make_batch():
    """``make_batch(model, batch_size=4, seq_len=10, seed=0)`` -> dict with labels and padding."""
    return build_batch


@pytest.fixture(params=ARCHS)
def arch(request) -> str:
    return request.param


@pytest.fixture(scope="session")
def default_context():
    """The real default task: the minilm-l6 teacher fine-tuned on rotten-tomatoes (about 5 minutes
    on 2 cores the first time, then read from the user cache — the same teacher the README's main
    command trains). Loaded eagerly so later environment changes cannot move it."""
    import argparse

    from autocompress.context import TASK_OPTIONS, TaskContext

    defaults = dict(model="minilm-l6", dataset="rotten-tomatoes", text_column="text", label_column="label",
                    seed=0, trust_remote_code=False, no_finetune=False, teacher_epochs=2.0, teacher_lr=1e-4)
    assert set(defaults) == set(TASK_OPTIONS)
    ctx = TaskContext.from_args(argparse.Namespace(**defaults), progress=False)
    ctx.tokenizer, ctx.data, ctx.calibration_batches()  # noqa: B018 (load now)
    return ctx


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory):
    """One tiny search task for the whole session: a random 4-layer BERT folder, synthetic data, a
    tiny space, and one cache folder (``home``). Modules that search point ``AUTOCOMPRESS_HOME`` at
    it, so the tiny teacher is fine-tuned, its data tokenised and its latency table calibrated once
    for the session instead of once per module."""
    from tiny_assets import search_setup

    tmp = tmp_path_factory.mktemp("tiny-project")
    return {"tmp": tmp, "home": tmp / "home", "args": search_setup(tmp)}


def use_tiny_project(project: dict, tmp) -> tuple[pytest.MonkeyPatch, dict]:
    """``AUTOCOMPRESS_HOME`` set to the session's tiny cache; returns the patch (undo it at the end)
    and the module's view: its own ``tmp`` folder, the shared search options."""
    mp = pytest.MonkeyPatch()
    mp.setenv("AUTOCOMPRESS_HOME", str(project["home"]))
    return mp, {"tmp": tmp, "args": list(project["args"])}
