"""Teacher fine-tuning on a tiny random BERT: it learns, it is cached, it reloads identically."""

import json

import pytest
import torch

from autocompress import training
from autocompress.data import load_task, tokenized
from autocompress.models import resolve_model
from autocompress.teacher import TeacherConfig, get_teacher
from tiny_assets import make_model_folder, synthetic_frame


@pytest.fixture
def tiny_task(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOCOMPRESS_HOME", str(tmp_path / "home"))
    path = tmp_path / "reviews.csv"
    synthetic_frame(480).to_csv(path, index=False)
    model_dir = make_model_folder(tmp_path / "tiny-bert")
    return resolve_model(str(model_dir)), load_task(str(path), text_column="review", label_column="polarity")


def test_teacher_learns_a_separable_task_and_is_cached(tiny_task):
    source, task = tiny_task
    config = TeacherConfig(epochs=6, lr=2e-3, batch_size=16, max_length=32)
    teacher, cached = get_teacher(source, task, config, progress=False)
    assert not cached
    assert teacher.metrics["validation_accuracy"] >= 0.9  # chance is 0.5: a broken loop fails here
    assert (teacher.path / "model.safetensors").is_file()
    info = json.loads((teacher.path / "teacher.json").read_text())
    assert info["dataset"]["fingerprint"] == task.fingerprint
    assert info["config"]["lr"] == 2e-3

    again, cached = get_teacher(source, task, config, progress=False)
    assert cached and again.path == teacher.path
    other, cached = get_teacher(source, task, TeacherConfig(epochs=1, lr=2e-3, batch_size=16, max_length=32),
                                progress=False)
    assert not cached and other.path != teacher.path

    # the saved teacher reproduces its recorded accuracy
    model, tok = teacher.load_model(), teacher.load_tokenizer()
    data = tokenized(task, tok, tokenizer_id=teacher.tokenizer_id, max_length=32)
    logits, labels = training.predict(model, training.iterate(data["validation"], 64, pad_id=tok.pad_token_id))
    assert round(float((logits.argmax(-1) == labels).float().mean()), 4) == teacher.metrics["validation_accuracy"]


def test_no_finetune_uses_the_model_as_is(tiny_task):
    source, task = tiny_task
    teacher, _ = get_teacher(source, task, TeacherConfig(finetune=False, max_length=32), progress=False)
    assert teacher.info["train"] is None
    assert 0.0 <= teacher.metrics["test_accuracy"] <= 1.0


def test_non_finite_loss_is_an_error():
    model = torch.nn.Linear(2, 2)

    def loss_fn(m, b):
        return m(b["x"]).sum() * float("nan")

    with pytest.raises(FloatingPointError):
        training.fit(model, lambda e: [{"x": torch.ones(1, 2)}], steps=2, lr=1e-3, loss_fn=loss_fn, progress=False)


def test_length_grouped_batches_cover_every_example_once():
    rows = [{"input_ids": [1] * (i % 9 + 1), "attention_mask": [1] * (i % 9 + 1), "labels": i % 2} for i in range(101)]
    batches = list(training.iterate(rows, 8, pad_id=0, shuffle=True, seed=3, with_index=True))
    seen = torch.cat([b["index"] for b in batches]).tolist()
    assert sorted(seen) == list(range(101))
    assert all(b["input_ids"].shape == b["attention_mask"].shape for b in batches)
