"""What a run is about, as plain data: the task (:class:`TaskSpec`). The CLI's task options, study
files and code build it alike; :class:`autocompress.context.TaskContext` loads what it names."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class TaskSpec:
    """The model and data of a task, and how its teacher is fine-tuned.

    ``model``: a catalog name, a local safetensors folder or a hub id; ``dataset``: a catalog name,
    a local CSV/TSV/JSONL/JSON/parquet file or a hub dataset id, read through ``text_column`` and
    ``label_column``; ``seed``: of the data split and of training; ``no_finetune``: the model
    already classifies the task; ``trust_remote_code``: allow model code from the hub to run.
    """

    model: str = "minilm-l6"
    dataset: str = "rotten-tomatoes"
    text_column: str = "text"
    label_column: str = "label"
    seed: int = 0
    trust_remote_code: bool = False
    no_finetune: bool = False
    teacher_epochs: float = 2.0
    teacher_lr: float = 1e-4

    @classmethod
    def from_args(cls, args) -> "TaskSpec":
        """From parsed options (an ``argparse.Namespace`` or anything with these attributes)."""
        return cls(**{name: getattr(args, name) for name in TASK_OPTIONS})

    @classmethod
    def from_dict(cls, d: dict) -> "TaskSpec":
        unknown = set(d) - set(TASK_OPTIONS)
        if unknown:
            raise TypeError(f"not task options: {', '.join(sorted(unknown))}")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


TASK_OPTIONS = tuple(f.name for f in fields(TaskSpec))
DEFAULT_TASK = TaskSpec()
