"""Task data: local files with custom columns, label encoding, deterministic stratified splits, errors."""

import pandas as pd
import pytest

from autocompress import cache
from autocompress.data import load_task, tokenized
from autocompress.errors import UserError
from tiny_assets import make_tokenizer, synthetic_frame


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOCOMPRESS_HOME", str(tmp_path / "home"))


@pytest.fixture
def csv_file(tmp_path):
    path = tmp_path / "reviews.csv"
    synthetic_frame(400).to_csv(path, index=False)
    return path


def test_csv_with_custom_columns_and_string_labels(csv_file):
    task = load_task(str(csv_file), text_column="review", label_column="polarity")
    assert task.label_names == ("fresh", "rotten")
    assert task.sizes() == {"train": 320, "validation": 40, "test": 40}
    assert set(task.splits["train"].columns) == {"text", "label"}
    assert set(task.splits["test"]["label"]) == {0, 1}
    assert [m["split"] for m in task.split_info["made"]] == ["validation", "test"]
    assert all(m["stratified"] for m in task.split_info["made"])
    # stratified: each held-out split is exactly balanced (the pool is)
    assert task.splits["validation"]["label"].value_counts().tolist() == [20, 20]


def test_jsonl_with_integer_multiclass_labels(tmp_path):
    frame = synthetic_frame(300).rename(columns={"review": "sentence"})
    frame["label"] = [i % 3 + 4 for i in range(len(frame))]  # ints 4,5,6
    path = tmp_path / "data.jsonl"
    frame[["sentence", "label"]].to_json(path, orient="records", lines=True)
    task = load_task(str(path), text_column="sentence")
    assert task.label_names == ("4", "5", "6")
    assert task.num_labels == 3
    assert sorted(task.splits["train"]["label"].unique()) == [0, 1, 2]


def test_split_is_deterministic_from_the_seed(csv_file):
    kw = dict(text_column="review", label_column="polarity")
    a, b = load_task(str(csv_file), seed=1, **kw), load_task(str(csv_file), seed=1, **kw)
    c = load_task(str(csv_file), seed=2, **kw)
    assert a.fingerprint == b.fingerprint
    pd.testing.assert_frame_equal(a.splits["test"], b.splits["test"])
    assert a.fingerprint != c.fingerprint
    assert set(a.splits["test"]["text"]) != set(c.splits["test"]["text"])
    # no overlap between splits
    texts = [set(a.splits[s]["text"]) for s in ("train", "validation", "test")]
    assert not (texts[0] & texts[1]) and not (texts[0] & texts[2]) and not (texts[1] & texts[2])


def test_given_splits_are_kept(tmp_path):
    path = tmp_path / "train.parquet"
    synthetic_frame(200).rename(columns={"review": "text", "polarity": "label"}).to_parquet(path)
    task = load_task(str(path))
    assert sum(task.sizes().values()) == 200


def test_missing_column_names_the_existing_ones(csv_file):
    with pytest.raises(UserError, match="no column 'text'.*review, polarity"):
        load_task(str(csv_file), label_column="polarity")


def test_empty_and_single_class_data_are_clear_errors(tmp_path):
    empty = tmp_path / "empty.csv"
    pd.DataFrame({"text": ["", "  "], "label": ["a", "b"]}).to_csv(empty, index=False)
    with pytest.raises(UserError, match="no labelled rows"):
        load_task(str(empty))
    one = tmp_path / "one.csv"
    pd.DataFrame({"text": [f"t {i}" for i in range(50)], "label": ["a"] * 50}).to_csv(one, index=False)
    with pytest.raises(UserError, match="one class"):
        load_task(str(one))


def test_unknown_dataset_and_wrong_kind(tmp_path):
    with pytest.raises(UserError, match="rotten-tomatoes"):
        load_task("imbd")
    with pytest.raises(UserError, match="is a model, not a dataset"):
        load_task("minilm-l6")
    bad = tmp_path / "data.xlsx"
    bad.write_text("x")
    with pytest.raises(UserError, match="expected a .csv"):
        load_task(str(bad))


def test_tokenised_data_is_cached(csv_file, tmp_path):
    task = load_task(str(csv_file), text_column="review", label_column="polarity")
    tok = make_tokenizer(tmp_path / "tok")
    first = tokenized(task, tok, tokenizer_id="t1", max_length=16)
    assert set(first["train"].column_names) >= {"input_ids", "attention_mask", "labels"}
    assert max(len(x) for x in first["train"]["input_ids"]) <= 16
    entries = list((cache.home() / "tokenized").iterdir())
    assert len(entries) == 1
    second = tokenized(task, tok, tokenizer_id="t1", max_length=16)
    assert second["test"]["input_ids"] == first["test"]["input_ids"]
    assert len(list((cache.home() / "tokenized").iterdir())) == 1
    tokenized(task, tok, tokenizer_id="t1", max_length=8)
    assert len(list((cache.home() / "tokenized").iterdir())) == 2
