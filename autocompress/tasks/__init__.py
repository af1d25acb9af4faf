"""What the encoder is fine-tuned for: one :class:`Task` per kind of problem, one file each.

A task says which Hugging Face head the model carries, how a batch of outputs is scored, how a
student's outputs are compared with the teacher's (the agreement the search reports and the loss
knowledge distillation minimises) and its supervised loss. Everything above this layer (teacher
fine-tuning, evaluation, screening, KD recovery, saved models, export) asks the task instead of
assuming a sequence classifier. Implementations register themselves by subclassing.
"""

from __future__ import annotations

from autocompress.tasks.base import DEFAULT_TASK, Task, get_task, task_names
from autocompress.tasks import sequence_classification as _sequence_classification  # noqa: F401 (registers)

__all__ = ["DEFAULT_TASK", "Task", "get_task", "task_names"]
