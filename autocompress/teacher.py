"""The teacher: the task's uncompressed classifier, fine-tuned once and cached.

The cache key combines the model's weights hash, the data fingerprint and the hyper-parameters,
so a later command with the same inputs reuses the teacher instead of training again.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from . import cache, training
from .data import TaskData, tokenized
from .models import ModelSource, load_model, load_tokenizer
from .tasks import DEFAULT_TASK, get_task

TEACHER_JSON = "teacher.json"


@dataclass(frozen=True)
class TeacherConfig:
    """How the teacher is fine-tuned. ``finetune=False`` uses the model as it is (it must already
    be a classifier for the task's labels)."""

    epochs: float = 2.0
    lr: float = 1e-4
    batch_size: int = 32
    max_length: int = 128
    warmup: float = 0.06
    weight_decay: float = 0.01
    seed: int = 0
    finetune: bool = True


@dataclass
class Teacher:
    """A cached teacher folder (HF layout, safetensors) and its metrics."""

    path: Path
    info: dict = field(repr=False)

    @property
    def metrics(self) -> dict:
        return self.info["metrics"]

    @property
    def task(self) -> str:
        """The task it is fine-tuned for (teachers cached before tasks were named are classifiers)."""
        return self.info.get("task", DEFAULT_TASK)

    def load_model(self):
        return load_model(self.path, task=self.task)

    def load_tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.path)

    @property
    def tokenizer_id(self) -> str:
        return self.info["tokenizer_sha256"]


def teacher_logits(teacher: Teacher, data, *, data_key: str, pad_id: int, progress: bool = True,
                   model=None) -> dict[str, torch.Tensor]:
    """The teacher's logits on every split of tokenised ``data`` (row order), computed once.

    Cached in the teacher's folder under ``outputs/DATA_KEY.safetensors``; KD recovery and the
    fidelity metric read them instead of running the teacher again.
    """
    from safetensors.torch import load_file, save_file

    path = teacher.path / "outputs" / f"{data_key}.safetensors"
    if path.is_file():
        return load_file(path)
    model = model if model is not None else teacher.load_model()
    out = {}
    for split in data:
        out[split], _ = training.predict(model, training.iterate(data[split], 64, pad_id=pad_id, with_index=True),
                                         progress=progress, desc=f"teacher outputs ({split})",
                                         total=-(-len(data[split]) // 64))
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    save_file({k: v.contiguous() for k, v in out.items()}, tmp)
    os.replace(tmp, path)
    return out


def teacher_key(source: ModelSource, task: TaskData, config: TeacherConfig) -> str:
    return cache.sha256_json([source.fingerprint, task.fingerprint, asdict(config)])[:24]


def get_teacher(source: ModelSource, task: TaskData, config: TeacherConfig = TeacherConfig(), *,
                progress: bool = True, trust_remote_code: bool = False) -> tuple[Teacher, bool]:
    """The teacher for (``source``, ``task``, ``config``), trained on first use.

    Returns ``(teacher, from_cache)``.
    """
    folder = cache.home() / "teachers" / teacher_key(source, task, config)
    if (folder / TEACHER_JSON).is_file():
        return Teacher(folder, json.loads((folder / TEACHER_JSON).read_text())), True

    torch.manual_seed(config.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    tokenizer = load_tokenizer(source, trust_remote_code=trust_remote_code)
    model = load_model(source.path, task.num_labels, label_names=task.label_names,
                       trust_remote_code=trust_remote_code, task=task.kind)
    data = tokenized(task, tokenizer, tokenizer_id=source.tokenizer_sha256, max_length=config.max_length)
    pad = tokenizer.pad_token_id or 0
    start = time.perf_counter()
    fit_info = None
    if config.finetune:
        steps = max(1, round(config.epochs * len(data["train"]) / config.batch_size))
        fit_info = training.fit(
            model, lambda epoch: training.iterate(data["train"], config.batch_size, pad_id=pad, shuffle=True,
                                                  seed=config.seed + epoch),
            steps=steps, lr=config.lr, warmup=config.warmup, weight_decay=config.weight_decay,
            progress=progress, desc="fine-tune teacher")
    metrics = {}
    for split in ("validation", "test"):
        logits, labels = training.predict(model, training.iterate(data[split], 64, pad_id=pad),
                                          progress=progress, desc=f"evaluate {split}")
        metrics[f"{split}_accuracy"] = round(get_task(task.kind).score(logits, labels), 4)
    info = {
        "model": source.spec, "model_sha256": source.weights_sha256, "tokenizer_sha256": source.tokenizer_sha256,
        "task": task.kind, "dataset": task.describe(), "config": asdict(config), "metrics": metrics,
        "train": fit_info, "seconds": round(time.perf_counter() - start, 1),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    with cache.atomic_dir(folder) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        cache.atomic_write_json(tmp / TEACHER_JSON, info)
    return Teacher(folder, info), False
