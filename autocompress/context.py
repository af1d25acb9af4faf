"""Everything a candidate needs from the task, loaded once: the teacher, its tokenizer, the
tokenised data and the teacher's cached logits.

A :class:`TaskContext` is built once per command (or once per search worker, shipped through
Ray's object store) and shared by every candidate, so no trial re-reads the teacher, re-tokenises
the data or re-runs the teacher.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from . import training
from .data import TaskData, tokenized, tokenized_key
from .errors import UserError
from .spec import TASK_OPTIONS, TaskSpec  # noqa: F401 (TASK_OPTIONS: re-exported)
from .tasks import Task, get_task
from .teacher import Teacher, teacher_logits


def load_task_and_teacher(spec: TaskSpec, *, progress: bool = True):
    """Resolve the spec's model and dataset; return ``(source, task, teacher, from_cache)``."""
    from .data import load_task
    from .models import resolve_model
    from .teacher import TeacherConfig, get_teacher

    source = resolve_model(spec.model)
    task = load_task(spec.dataset, text_column=spec.text_column, label_column=spec.label_column, seed=spec.seed)
    config = TeacherConfig(epochs=spec.teacher_epochs, lr=spec.teacher_lr, seed=spec.seed, finetune=not spec.no_finetune)
    teacher, cached = get_teacher(source, task, config, progress=progress, trust_remote_code=spec.trust_remote_code)
    return source, task, teacher, cached


@dataclass
class TaskContext:
    task: TaskData = field(repr=False)
    teacher: Teacher
    max_length: int = 128
    seed: int = 0
    spec: dict = field(default_factory=dict)  # the options it was built from (re-buildable later)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_spec(cls, spec: TaskSpec, *, progress: bool = True) -> "TaskContext":
        """Resolve the spec's model and dataset (training or reusing the teacher)."""
        _, task, teacher, _ = load_task_and_teacher(spec, progress=progress)
        ctx = cls(task=task, teacher=teacher, max_length=teacher.info["config"]["max_length"], seed=spec.seed,
                  spec=spec.to_dict())
        ctx.prepare(progress=progress)
        return ctx

    @classmethod
    def from_args(cls, args, *, progress: bool = True) -> "TaskContext":
        """From parsed task options (``--model``, ``--dataset``, ...; see :class:`TaskSpec`)."""
        return cls.from_spec(TaskSpec.from_args(args), progress=progress)

    @classmethod
    def default(cls, *, progress: bool = False, **options) -> "TaskContext":
        """The task the CLI runs when given no task options (the embedded MiniLM on Rotten
        Tomatoes), with ``options`` (e.g. ``seed=1``) in place of those defaults."""
        return cls.from_spec(TaskSpec.from_dict(options), progress=progress)

    def prepare(self, *, progress: bool = True) -> "TaskContext":
        """Load the teacher, tokenise the data and compute (or read) the teacher's logits now."""
        torch.set_num_threads(os.cpu_count() or 1)
        self.teacher_logits(progress=progress)
        return self

    # ------------------------------------------------------------ lazily loaded, then kept

    def cached(self, key: str, make):
        """``make()``, computed once per context under ``key`` (keys starting 'structure-' are not pickled)."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    @property
    def task_type(self) -> Task:
        """What the model is fine-tuned for (:mod:`autocompress.tasks`): its head, metric and losses."""
        return get_task(self.task.kind)

    @property
    def tokenizer(self):
        return self.cached("tokenizer", self.teacher.load_tokenizer)

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id or 0

    @property
    def data(self):
        return self.cached("data", lambda: tokenized(self.task, self.tokenizer, tokenizer_id=self.teacher.tokenizer_id,
                                                   max_length=self.max_length))

    @property
    def data_key(self) -> str:
        return tokenized_key(self.task, self.teacher.tokenizer_id, self.max_length)

    def teacher_model(self) -> torch.nn.Module:
        return self.cached("teacher_model", self._load_teacher)

    def _load_teacher(self) -> torch.nn.Module:
        blob = self._cache.pop("teacher_blob", None)
        if blob is None:
            return self.teacher.load_model()
        model = self.task_type.from_config(blob["config"])
        model.load_state_dict(blob["state"])
        return model.eval()

    def teacher_logits(self, *, progress: bool = False) -> dict[str, torch.Tensor]:
        return self.cached("logits", lambda: teacher_logits(self.teacher, self.data, data_key=self.data_key,
                                                          pad_id=self.pad_id, progress=progress,
                                                          model=self.teacher_model()))

    def teacher_hidden(self):
        """The teacher's hidden states on the training split, for hidden-state KD without running the
        teacher (:func:`~autocompress.techniques.distill.teacher_hidden_states`); None when they
        would not fit in :data:`~autocompress.techniques.distill.HIDDEN_CACHE_BYTES`. Computed once
        per context (and per Ray worker: never pickled)."""
        from .arch import get_adapter
        from .techniques.distill import HIDDEN_CACHE_BYTES, hidden_cache_bytes, teacher_hidden_states

        def make():
            model = self.teacher_model()
            adapter = get_adapter(model)
            size = hidden_cache_bytes(self.data["train"], adapter.num_layers(model), adapter.hidden_size(model))
            if size > HIDDEN_CACHE_BYTES:
                return None
            return teacher_hidden_states(model, self.data["train"], self.pad_id)

        return self.cached("structure-teacher-hidden", make)

    @property
    def fingerprint(self) -> str:
        """Identifies the teacher and the tokenised data (a worker's cache key)."""
        return f"{self.teacher.path.name}-{self.data_key}"

    def dims(self) -> dict[str, int]:
        from .arch import get_adapter

        model = self.teacher_model()
        adapter = get_adapter(model)
        return {"num_layers": adapter.num_layers(model), "num_heads": adapter.num_heads(model),
                "intermediate_size": adapter.intermediate_size(model), "hidden_size": adapter.hidden_size(model)}

    def check_target(self, target) -> None:
        """:class:`UserError` when ``target`` asks for inputs the teacher cannot take (before anything
        is built or written)."""
        from .arch import get_adapter

        model = self.teacher_model()
        limit = get_adapter(model).max_positions(model)
        if limit is not None and target.seq_len > limit:
            raise UserError(f"--seq-len {target.seq_len} is longer than the model takes ({limit} positions)")

    def importance(self):
        """Taylor importance of the teacher's heads and FFN neurons on the calibration batches: the
        same for every candidate and for the allocator, so computed once (per worker). ``taylor_scores``
        leaves the model's gradients and modes as it found them."""
        from .techniques import taylor_scores

        return self.cached("structure-importance", lambda: taylor_scores(self.teacher_model(), self.calibration_batches()))

    def input_grams(self) -> dict:
        """The teacher's calibration Gram matrices for one-shot reconstruction (computed once per worker)."""
        from .techniques import input_grams

        return self.cached("structure-grams", lambda: input_grams(self.teacher_model(), self.calibration_batches()))

    def probe_set(self, batches: int = 16, batch_size: int = 64) -> tuple[list, list]:
        """Training batches and the teacher's logits on them, for screening by a linear probe."""
        def make():
            logits = self.teacher_logits()["train"]
            chosen = list(training.iterate(self.data["train"], batch_size, pad_id=self.pad_id, shuffle=True,
                                           seed=self.seed + 1, with_index=True))[:batches]
            return chosen, [logits[b["index"]] for b in chosen]

        return self.cached(f"probe-{batches}-{batch_size}", make)

    def fresh_student(self) -> torch.nn.Module:
        """A private copy of the teacher to compress."""
        return copy.deepcopy(self.teacher_model())

    def calibration_batches(self, n: int = 8, batch_size: int = 32) -> list[training.Batch]:
        """A fixed set of training batches for importance scores."""
        return self.cached(f"calib-{n}-{batch_size}", lambda: list(
            training.iterate(self.data["train"], batch_size, pad_id=self.pad_id, shuffle=True,
                             seed=self.seed))[:n])

    def __getstate__(self):
        """Pickled by value — teacher weights, tokenizer, tokenised data (in memory), teacher
        logits — so a worker on another node needs no access to this machine's cache."""
        import datasets

        self.prepare(progress=False)
        state = self.__dict__.copy()
        cache = {k: v for k, v in self._cache.items() if k != "teacher_model" and not k.startswith("structure-")}
        cache["data"] = datasets.DatasetDict({k: datasets.Dataset.from_dict(v.to_dict()) for k, v in self.data.items()})
        # modules travel as config + weights: transformers' output hooks do not survive pickling
        model = self.teacher_model()
        cache["teacher_blob"] = {"config": model.config.to_dict(), "state": model.state_dict()}
        state["_cache"] = cache
        return state
