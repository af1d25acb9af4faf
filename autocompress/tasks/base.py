"""The task seam: a small base class, its contract, and the registry.

A subclass sets ``name`` and is registered when its module is imported; :func:`get_task` returns
an instance. Contract (tensors are float logits on the CPU, one row per example):

- ``auto_class``: the ``transformers`` Auto class of the head (``from_pretrained``/``from_config``);
- ``metric``: the name of :meth:`score` in reports (trial rows store it as ``accuracy``);
- :meth:`score` (higher is better), :meth:`agreement` with the teacher's outputs (share of equal
  predictions), :meth:`loss` (supervised, for fine-tuning and importance scores) and
  :meth:`distill_loss` (student vs teacher outputs at a temperature, scaled by its square).
"""

from __future__ import annotations

from typing import ClassVar

from autocompress.errors import UserError

DEFAULT_TASK = "sequence-classification"
_REGISTRY: dict[str, type["Task"]] = {}


class Task:
    name: ClassVar[str]
    auto_class: ClassVar[str]
    metric: ClassVar[str]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            _REGISTRY[cls.name] = cls

    # -- the model ----------------------------------------------------------------------------

    def model_class(self):
        import transformers

        return getattr(transformers, self.auto_class)

    def from_pretrained(self, path, *, num_labels: int | None = None, label_names: tuple[str, ...] | None = None,
                        trust_remote_code: bool = False):
        """The model with this task's head from a safetensors folder (a missing head is added)."""
        raise NotImplementedError

    def from_config(self, config: dict):
        """An untrained model with this task's head from a saved config dict (``model_type`` included)."""
        from transformers import AutoConfig

        config = dict(config)
        return self.model_class().from_config(AutoConfig.for_model(config.pop("model_type"), **config))

    # -- outputs ----------------------------------------------------------------------------

    def score(self, logits, labels) -> float:
        raise NotImplementedError

    def agreement(self, logits, teacher_logits) -> float:
        raise NotImplementedError

    def loss(self, logits, labels, *, reduction: str = "mean"):
        raise NotImplementedError

    def distill_loss(self, logits, teacher_logits, temperature: float):
        raise NotImplementedError


def get_task(name: str = DEFAULT_TASK) -> Task:
    try:
        return _REGISTRY[name]()
    except KeyError:
        raise UserError(f"unknown task {name!r}; tasks: {', '.join(task_names())}") from None


def task_names() -> list[str]:
    return sorted(_REGISTRY)


__all__ = ["DEFAULT_TASK", "Task", "get_task", "task_names"]
