"""The task seam: registry, the sequence-classification task's outputs, and that models and
recovery carry the task they were built for."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from autocompress.errors import UserError
from autocompress.tasks import DEFAULT_TASK, Task, get_task, task_names
from autocompress.tasks.base import _REGISTRY
from tiny_assets import make_model_folder

LOGITS = torch.tensor([[2.0, -1.0], [0.1, 0.3], [-0.5, 0.5], [1.0, 1.5]])
LABELS = torch.tensor([0, 1, 0, 0])


def test_the_default_task_is_registered_and_unknown_names_fail_in_one_line():
    assert DEFAULT_TASK in task_names()
    assert get_task().name == DEFAULT_TASK and get_task().metric == "accuracy"
    with pytest.raises(UserError, match="unknown task 'ner'; tasks: sequence-classification"):
        get_task("ner")


def test_a_subclass_with_a_name_registers_itself():
    class Toy(Task):
        name = "toy-task"
        auto_class = "AutoModel"
        metric = "toy"

    try:
        assert "toy-task" in task_names() and isinstance(get_task("toy-task"), Toy)
    finally:
        _REGISTRY.pop("toy-task")


def test_sequence_classification_scores_and_losses():
    task = get_task()
    assert task.score(LOGITS, LABELS) == pytest.approx(0.5)  # rows 0 and 1 right
    teacher = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert task.agreement(LOGITS, teacher) == pytest.approx(0.75)  # row 1 differs
    assert torch.allclose(task.loss(LOGITS, LABELS, reduction="none"), F.cross_entropy(LOGITS, LABELS, reduction="none"))
    t = 2.0  # Hinton et al.: KL(teacher || student) at temperature t, times t^2, averaged over rows
    p_teacher = F.softmax(teacher / t, -1)
    expected = (p_teacher * (p_teacher.log() - F.log_softmax(LOGITS / t, -1))).sum(-1).mean() * t ** 2
    assert float(task.distill_loss(LOGITS, teacher, t)) == pytest.approx(float(expected), rel=1e-6)
    assert float(task.distill_loss(teacher, teacher, t)) == pytest.approx(0.0, abs=1e-6)


def test_models_are_built_with_the_tasks_head(tmp_path):
    from autocompress.models import load_model, model_dims

    folder = make_model_folder(tmp_path / "m")
    model = load_model(folder, 3, label_names=("a", "b", "c"))
    assert type(model).__name__ == "BertForSequenceClassification" and not model.training
    assert model.config.id2label == {0: "a", 1: "b", 2: "c"}
    rebuilt = get_task().from_config(model.config.to_dict())
    assert type(rebuilt) is type(model) and rebuilt.config.num_labels == 3
    assert model_dims(folder) == {"num_layers": 2, "num_heads": 4, "intermediate_size": 64, "hidden_size": 32}


def test_a_saved_model_records_its_task_and_older_folders_load_as_classifiers(tmp_path, tiny_model):
    from transformers import AutoTokenizer

    from autocompress.compressed import MANIFEST, CompressedModel, load
    from autocompress.plan import CompressionPlan
    from tiny_assets import make_tokenizer

    model = tiny_model("bert")
    plan = CompressionPlan.keep_all()
    resolved = plan.resolve(model.config.num_hidden_layers, model.config.num_attention_heads,
                            model.config.intermediate_size)
    make_tokenizer(tmp_path / "tok")
    cm = CompressedModel(model=model, plan=plan, resolved=resolved, fp32_state=model.state_dict(),
                         base_config=model.config.to_dict(), tokenizer=AutoTokenizer.from_pretrained(tmp_path / "tok"))
    out = cm.save_pretrained(tmp_path / "saved")
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["task"] == DEFAULT_TASK and load(out).task == DEFAULT_TASK
    del manifest["task"]  # a folder saved before tasks were named
    (out / MANIFEST).write_text(json.dumps(manifest))
    again = load(out)
    assert again.task == DEFAULT_TASK and type(again.model).__name__ == type(model).__name__


def test_recovery_uses_the_tasks_distillation_loss(tiny_model, make_batch):
    """KD recovery minimises the task's distillation loss, on the teacher's cached outputs of the
    same examples, at the plan's temperature."""
    from autocompress.plan import DistillConfig
    from autocompress.techniques.distill import DistillInputs, distill_

    calls = []

    class Recording(type(get_task())):
        name = "recording-task"

        def distill_loss(self, logits, teacher_logits, temperature):
            calls.append((logits.detach().clone(), teacher_logits.clone(), temperature))
            return super().distill_loss(logits, teacher_logits, temperature)

    try:
        student = tiny_model("bert")
        batch = make_batch(student, batch_size=8)
        train = [{"input_ids": row[m.bool()].tolist(), "attention_mask": [1] * int(m.sum()), "labels": int(y)}
                 for row, m, y in zip(batch["input_ids"], batch["attention_mask"], batch["labels"])]
        teacher_logits = torch.randn(8, 2)
        distill_(student, DistillInputs(train=train, teacher_logits=teacher_logits, pad_id=0,
                                        task=get_task("recording-task")),
                 DistillConfig(steps=3, batch_size=4, temperature=3.0), progress=False)
        assert len(calls) == 3 and all(t == 3.0 for _, _, t in calls)
        for logits, seen, _ in calls:  # each row is the cached output of one training example
            assert logits.shape == seen.shape == (4, 2)
            assert all(any(torch.equal(r, t) for t in teacher_logits) for r in seen)
    finally:
        _REGISTRY.pop("recording-task")
