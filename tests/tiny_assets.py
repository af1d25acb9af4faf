"""Tiny on-disk assets for fast tests: a word-level tokenizer, a random BERT folder, synthetic data.

The synthetic task is separable (label given by a "good"/"bad" cue word among filler words) so a
tiny model trained for a few dozen steps must reach high accuracy — a broken training loop fails.
"""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd

FILLER = ["the", "movie", "film", "was", "plot", "actor", "scene", "a", "very", "quite", "story", "music"]
CUES = {"fresh": ["good", "great", "fine"], "rotten": ["bad", "awful", "dull"]}
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def vocab() -> list[str]:
    return SPECIAL + FILLER + [w for ws in CUES.values() for w in ws]


def make_tokenizer(folder: Path):
    from transformers import BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab()) + "\n")
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab())}, do_lower_case=True)
    tok.save_pretrained(folder)
    return tok


def make_model_folder(folder: Path, *, layers: int = 2, hidden: int = 32, heads: int = 4,
                      intermediate: int = 64, seed: int = 0) -> Path:
    """A random BertModel (no classifier head) with tokenizer, saved as safetensors."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    make_tokenizer(folder)
    config = BertConfig(vocab_size=len(vocab()), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=intermediate, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder, safe_serialization=True)
    return folder


def synthetic_frame(n: int = 400, seed: int = 0, labels=("fresh", "rotten")) -> pd.DataFrame:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = labels[i % len(labels)]
        words = rng.choices(FILLER, k=rng.randint(3, 8))
        words.insert(rng.randrange(len(words) + 1), rng.choice(CUES[["fresh", "rotten"][labels.index(label) % 2]]))
        rows.append({"review": " ".join(words) + f" {i % 7}", "polarity": label})
    return pd.DataFrame(rows)


SEARCH_SPACE = """schema: autocompress.space/v1
name: tiny-joint
layers:
  keep: [true, false]
  always_keep: [0]
  heads: [1.0, 0.5, 0.25]
  ffn: [1.0, 0.5, 0.25]
  rank: {attention: [null, 0.5], ffn: [null]}
  dtype: {attention: [fp32, int8], ffn: [fp32, int8]}
distill:
  kind: [none, logits, logits+hidden, logits+hidden+attention]
  steps: 20
  lr: 1.0e-3
  batch_size: 16
fidelity:
  screen_steps: 5
  screen_examples: 48
  min_promote: 2
"""


def search_setup(tmp: Path, *, space: str = SEARCH_SPACE, executor: str = "local") -> list[str]:
    """A tiny model folder, synthetic data and a tiny space under ``tmp``; returns the task and
    search options of ``autocompress search`` for them (AUTOCOMPRESS_HOME is the caller's job).
    Trials run on the local executor unless ``executor`` says otherwise: the tests that check
    behaviour needing Ray (workers, clusters, a crash mid-trial) add ``--executor ray`` (the last
    flag wins)."""
    data = tmp / "reviews.csv"
    synthetic_frame(480).to_csv(data, index=False)
    model = make_model_folder(tmp / "tiny-bert", layers=4)
    (tmp / "space.yaml").write_text(space)
    return ["--executor", executor, "--model", str(model), "--dataset", str(data), "--text-column", "review", "--label-column", "polarity",
            "--teacher-epochs", "6", "--teacher-lr", "2e-3", "--seq-len", "32", "--predictor-grid", "tiny",
            "--polish", "0", "--space", str(tmp / "space.yaml")]
