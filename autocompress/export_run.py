"""The search run and the picked trial of ``autocompress export``: reading ``RUN_DIR``, choosing
the candidate (``--pick``), its plan, where its saved model is, the run's task options and
target, and the ``autocompress apply`` command that rebuilds it.
"""

from __future__ import annotations

import argparse
import json
import shlex
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

TARGET_KEYS = ("runtime", "threads", "batch_size", "seq_len")
TASK_KEYS = ("model", "dataset", "text_column", "label_column", "seed", "teacher_epochs", "teacher_lr")


@dataclass
class Run:
    """A search output folder: ``pareto.json`` and ``recommended.json`` as written by
    :func:`autocompress.report.write_outputs`."""

    path: Path
    pareto: dict
    recommended: dict

    @property
    def target(self) -> dict:
        return self.pareto.get("target") or {}

    @property
    def study(self) -> str:
        return self.pareto.get("study") or "?"

    @property
    def recommended_number(self) -> int | None:
        return (self.recommended.get("candidate") or {}).get("number")


def read_run(path: Path) -> Run:
    """Read a search output folder; UserError if it is not one."""
    if not path.is_dir():
        raise UserError(f"{path}: no such folder" if not path.exists() else f"{path} is not a folder")
    files = {}
    for name in ("pareto.json", "recommended.json"):
        try:
            files[name] = json.loads((path / name).read_text())
        except FileNotFoundError:
            raise UserError(f"{path} is not a search run: no {name} ('autocompress search --out' writes it)") from None
        except (OSError, ValueError) as exc:
            raise UserError(f"{path / name}: cannot read it: {exc}") from None
    return Run(path, files["pareto.json"], files["recommended.json"])


def pick_row(run: Run, pick: str) -> dict:
    """The result row of the picked trial: from recommended.json, pareto.json, then the study."""
    candidate = run.recommended.get("candidate")
    if pick == "recommended":
        if not candidate:
            raise UserError(f"{run.path}: no candidate completed, so nothing is recommended; --pick a trial number")
        return candidate
    if not pick.isdigit():
        raise UserError(f"--pick {pick}: expected 'recommended' or a trial number")
    number = int(pick)
    known = ([candidate] if candidate else []) + run.pareto.get("members", [])
    found = [r for r in known if r.get("number") == number] or [r for r in study_rows(run) if r["number"] == number]
    if not found:
        front = ", ".join(str(r["number"]) for r in run.pareto.get("members", [])) or "none"
        raise UserError(f"trial {number} is not in {run.path} ({run.pareto.get('trials', '?')} trials; "
                        f"front: {front})")
    return found[0]


def study_rows(run: Run) -> list[dict]:
    """Every trial's row, from the study in ``RUN_DIR/study.db`` (none if it is stored elsewhere)."""
    db = run.path / "study.db"
    if not db.is_file():
        return []
    import optuna

    from .report import study_rows as rows
    from .runner import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=run.study, storage=open_storage(f"sqlite:///{db.resolve()}"))
    except KeyError:
        raise UserError(f"{db}: no study named {run.study!r}") from None
    return rows(study)


def row_plan(row: dict):
    """The plan recorded in a trial's row."""
    from .plan import CompressionPlan

    if not row.get("plan"):
        raise UserError(f"trial {row['number']}: no plan recorded")
    return CompressionPlan.from_dict(row["plan"], source=f"trial {row['number']}")


def model_folder(run: Run, row: dict) -> Path:
    """The trial's saved model, under ``RUN_DIR/models/`` (so a moved run folder still exports)."""
    name = Path(row["model_dir"]).name if row.get("model_dir") else f"trial-{row['number']:04d}"
    folder = run.path / "models" / name
    if not (folder / "autocompress.json").is_file():
        why = ("a search keeps only the front and the recommendation" if row.get("fidelity") == "full" else
               "it was only screened, never saved")
        raise UserError(f"trial {row['number']}: its model is not in {folder} ({why}); export it with --format plan "
                        "and rebuild it with 'autocompress apply --plan PLAN' and the run's task options")
    return folder


def task_options(run: Run, row: dict) -> dict | None:
    """The run's task options (``--model``, ``--dataset``, ...) as recorded in any saved model."""
    manifests = sorted((run.path / "models").glob("*/autocompress.json"))
    if row.get("model_dir"):
        manifests.insert(0, run.path / "models" / Path(row["model_dir"]).name / "autocompress.json")
    for manifest in manifests:
        try:
            task = json.loads(manifest.read_text()).get("info", {}).get("task")
        except (OSError, ValueError):
            continue
        if task and all(k in task for k in TASK_KEYS):
            return task
    return None


def apply_command(plan_path: Path, task: dict | None, target: dict) -> str:
    """The ``autocompress apply`` command that rebuilds and evaluates a plan on the run's task
    and target (``MODEL``/``DATASET`` placeholders when no saved model recorded the task)."""
    words = ["autocompress", "apply", "--plan", str(plan_path)]
    if task is None:
        words += ["--model", "MODEL", "--dataset", "DATASET"]
    else:
        for key in TASK_KEYS:
            words += [f"--{key.replace('_', '-')}", str(task[key])]
        words += [f"--{key.replace('_', '-')}" for key in ("no_finetune", "trust_remote_code") if task.get(key)]
    for key in TARGET_KEYS:
        if target.get(key) is not None:
            words += [f"--{key.replace('_', '-')}", str(target[key])]
    return shlex.join(words + ["--out", "DIR"])


def onnx_target(run_target: dict, overrides: dict):
    """The ONNX Runtime target to measure on: the run's target with ``overrides`` applied."""
    from .latency import Target

    if overrides.get("runtime", "onnxruntime") != "onnxruntime":
        raise UserError(f"--runtime {overrides['runtime']}: an ONNX export runs in onnxruntime")
    values = {**Target().to_dict(), **{k: v for k, v in run_target.items() if k in TARGET_KEYS}, **overrides}
    return Target.from_args(argparse.Namespace(**{**values, "runtime": "onnxruntime"}))
