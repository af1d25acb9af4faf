"""The study file format (``schema: autocompress.study/v1``): its keys, reading the YAML with the
``file:line`` of every key, checking keys, types and values (one-line errors), and resolving the
paths it names against the file's folder. :func:`autocompress.study.load` turns a checked file
into the options of ``autocompress search``.
"""

from __future__ import annotations

import datetime as dt
import difflib
import math
import re
from pathlib import Path
from typing import Any

from .errors import UserError

SCHEMA = "autocompress.study/v1"

# key -> (type, what it is); nested sections have their own tables
TOP: dict[str, tuple[Any, str]] = {
    "schema": (str, f"always {SCHEMA}"),
    "description": (str, "free text"),
    "study_name": (str, "Optuna study name; the same name and storage continue the study"),
    "model": (str, "catalog name, local safetensors folder or hub id"),
    "dataset": (str, "catalog name, local CSV/TSV/JSONL/JSON/parquet file or hub id"),
    "text_column": (str, "text column of the dataset"),
    "label_column": (str, "label column of the dataset"),
    "seed": (int, "seed of the data split, training and sampler"),
    "trust_remote_code": (bool, "allow model code from the hub to run"),
    "finetune": (bool, "false: use the model as the teacher as it is"),
    "teacher": (dict, "teacher fine-tuning: epochs, lr"),
    "target": (dict, "runtime, threads, batch_size, seq_len"),
    "space": (str, "built-in space (allocated, joint, structured, quant_only, diagnostic) or a space file"),
    "budget": ((dict, str), "latency (20ms, or a speed-up such as 3x), size, max_drop (or just a latency)"),
    "polish": (float, "retrain the pick with this many times its KD steps after the search (0: off)"),
    "minimize_size": (bool, "add size as a third objective"),
    "sampler": (str, "tpe, nsga2, gp or random"),
    "sampler_seed": (int, "seed of the sampler alone (default: seed)"),
    "trials": (int, "trials per run"),
    "time_limit": (str, "wall-time limit per run, e.g. 6h ('none' for none)"),
    "stop_at": (str, "local time of day by which a run stops starting trials, e.g. '07:00'"),
    "workers": (int, "trials at once"),
    "ray_address": (str, "join an existing Ray cluster"),
    "executor": (str, "ray (trials on Ray Tune workers, the default) or local (one at a time, no Ray)"),
    "baseline": (bool, "false: do not warm-start with the decision-tree baseline"),
    "predictor_grid": (str, "latency table resolution: default or tiny"),
    "storage": (str, "sqlite:///PATH, journal:PATH, a database URL, or a path (SQLite)"),
    "out": (str, "output folder"),
}
SECTIONS: dict[str, dict[str, type | tuple]] = {
    "teacher": {"epochs": float, "lr": float},
    "target": {"runtime": str, "threads": int, "batch_size": int, "seq_len": int},
    "budget": {"latency": str, "size": str, "max_drop": float},
}
REQUIRED = ("schema", "study_name", "model", "dataset", "out")
# what users write when they think in command-line options
ALIASES = {"name": "study_name", "latency": "budget.latency", "latency_budget": "budget.latency",
           "size_budget": "budget.size", "max_drop": "budget.max_drop", "runtime": "target.runtime",
           "threads": "target.threads", "batch_size": "target.batch_size", "seq_len": "target.seq_len",
           "teacher_epochs": "teacher.epochs", "teacher_lr": "teacher.lr", "no_baseline": "baseline: false",
           "no_finetune": "finetune: false", "output": "out", "out_dir": "out", "window": "time_limit"}
_POSITIVE = {"trials", "workers", "target.threads", "target.batch_size", "target.seq_len"}
_TYPE_NAMES = {str: "text", int: "an integer", float: "a number", bool: "true or false", dict: "a mapping"}


# ---------------------------------------------------------------- reading and checking


class _Where:
    """``file:line`` of every key, for messages."""

    def __init__(self, file: str, lines: dict[tuple, int]):
        self.file, self.lines = file, lines

    def __call__(self, *path: str) -> str:
        for n in range(len(path), 0, -1):
            if path[:n] in self.lines:
                return f"{self.file}:{self.lines[path[:n]]}"
        return self.file

    def fail(self, path: tuple, message: str):
        raise UserError(f"{self(*path)}: {message}")


def read(file: Path, shown: str) -> tuple[dict, _Where]:
    import yaml

    if not file.is_file():
        what = "is a folder, not a study file" if file.is_dir() else "does not exist"
        raise UserError(f"study file {shown} {what}")
    try:
        text = file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{shown}: cannot read: {exc}") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        last = max(1, len(text.splitlines()))
        where = f"{shown}:{min(mark.line + 1, last)}" if mark else shown  # end of file: its last line
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and context_mark is not None and context_mark is not mark:
            context = f"{context} started at line {context_mark.line + 1}"
        raise UserError(f"{where}: not valid YAML: {problem}" + (f" ({context})" if context else "")) from None
    lines: dict[tuple, int] = {}
    _walk(node, (), lines, shown)
    if data is None:
        raise UserError(f"{shown}: the file is empty; a study starts with 'schema: {SCHEMA}'")
    if not isinstance(data, dict):
        raise UserError(f"{shown}: a study file must be a mapping of keys (schema, study_name, model, ...), "
                        f"not {type(data).__name__}")
    return data, _Where(shown, lines)


def _walk(node, prefix: tuple, lines: dict, shown: str) -> None:
    import yaml

    if not isinstance(node, yaml.MappingNode):
        return
    seen: set = set()
    for key, value in node.value:
        name = str(key.value)
        if name in seen:
            raise UserError(f"{shown}:{key.start_mark.line + 1}: key '{'.'.join(prefix + (name,))}' is given twice")
        seen.add(name)
        lines[prefix + (name,)] = key.start_mark.line + 1
        _walk(value, prefix + (name,), lines, shown)


def _unknown(key: str, allowed, where: _Where, path: tuple) -> None:
    dotted = ".".join(path)
    hint = ALIASES.get(key.replace("-", "_")) if len(path) == 1 else None
    if not hint:
        close = difflib.get_close_matches(key.replace("-", "_"), list(allowed), n=1, cutoff=0.6)
        hint = ".".join(path[:-1] + (close[0],)) if close else None
    section = f" in {'.'.join(path[:-1])}" if len(path) > 1 else ""
    suggestion = f"; did you mean '{hint}'?" if hint else ""
    where.fail(path, f"unknown key '{dotted}'{suggestion} (keys{section}: {', '.join(allowed)})")


def _typed(value, kind, where: _Where, path: tuple):
    """``value`` as ``kind`` (str, int, float, bool, dict), or a one-line error naming the key."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    for k in kinds:
        if k is bool and isinstance(value, bool):
            return value
        if k is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if k is float and not isinstance(value, bool):
            if isinstance(value, (int, float)) and math.isfinite(value):
                return float(value)
            if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as text
                try:
                    number = float(value)
                except ValueError:
                    pass
                else:
                    if math.isfinite(number):
                        return number
        if k is str and isinstance(value, str):
            return value
        if k is dict and isinstance(value, dict):
            return value
    wanted = " or ".join(_TYPE_NAMES[k] for k in kinds)
    got = f"{type(value).__name__} {value!r}" if not isinstance(value, (dict, list)) else type(value).__name__
    hint = ""
    if str in kinds and isinstance(value, int) and path[-1] == "stop_at":
        hint = " (YAML reads 07:00 as a number; quote it: '07:00')"
    where.fail(path, f"'{'.'.join(path)}' must be {wanted}, got {got}{hint}")


def checked(data: dict, where: _Where) -> dict:
    """Keys known, types right, required keys present; nested sections flattened to 'a.b' keys."""
    for key in data:
        if str(key) not in TOP:
            _unknown(str(key), TOP, where, (str(key),))
    out: dict[str, Any] = {}
    for key, value in data.items():
        if value is None:  # 'key:' with nothing after it means: not set
            continue
        kind = TOP[key][0]
        value = _typed(value, kind, where, (key,))
        if key == "budget" and isinstance(value, str):
            value = {"latency": value}
        if key in SECTIONS:
            allowed = SECTIONS[key]
            for sub, subvalue in value.items():
                if str(sub) not in allowed:
                    _unknown(str(sub), allowed, where, (key, str(sub)))
                if subvalue is not None:
                    out[f"{key}.{sub}"] = _typed(subvalue, allowed[sub], where, (key, str(sub)))
            continue
        out[key] = value
    for key in REQUIRED:
        if key not in out:
            where.fail((), f"missing required key '{key}' ({TOP[key][1]})")
    if out["schema"] != SCHEMA:
        where.fail(("schema",), f"schema is {out['schema']!r} but expected {SCHEMA!r}")
    if not any(k in out for k in ("trials", "time_limit", "stop_at")):
        where.fail((), "give 'trials' (per run), 'time_limit' (e.g. 6h) or 'stop_at' (e.g. '07:00'), "
                       "or several; a run ends at the first limit reached")
    for key in _POSITIVE:
        if key in out and out[key] < 1:
            where.fail(tuple(key.split(".")), f"'{key}' must be >= 1, got {out[key]}")
    for key in ("teacher.epochs", "teacher.lr"):
        if key in out and out[key] <= 0:
            where.fail(tuple(key.split(".")), f"'{key}' must be > 0, got {out[key]}")
    for key in ("study_name", "model", "dataset", "out", "space", "storage"):
        if key in out and not out[key].strip():
            where.fail((key,), f"'{key}' is empty")
    return out


def values(flat: dict, where: _Where) -> None:
    """Values that have a fixed vocabulary or syntax: checked here so the error names the key."""
    from .latency.runtime import runtime_names
    from .objectives import parse_budget, parse_duration, parse_size
    from .search.samplers import SAMPLERS

    def check(key: str, fn):
        if key in flat:
            try:
                fn(flat[key])
            except UserError as exc:
                where.fail(tuple(key.split(".")), f"{key}: {exc}")

    check("budget.latency", parse_budget)
    check("budget.size", parse_size)
    if flat.get("budget.max_drop", 0) < 0:
        where.fail(("budget", "max_drop"), f"budget.max_drop must be >= 0 accuracy points, got {flat['budget.max_drop']}")
    if str(flat.get("time_limit", "")).lower() not in ("", "none"):
        check("time_limit", parse_duration)
    if "stop_at" in flat:
        _clock(flat["stop_at"], where)
    for key, choices in (("sampler", SAMPLERS), ("target.runtime", runtime_names()), ("predictor_grid", ("default", "tiny"))):
        if key in flat and flat[key] not in choices:
            close = difflib.get_close_matches(flat[key], choices, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            where.fail(tuple(key.split(".")), f"{key} '{flat[key]}' is not one of {', '.join(choices)}{hint}")


def _clock(text: str, where: _Where | None = None) -> tuple[int, int]:
    match = re.fullmatch(r"\s*([01]?\d|2[0-3]):([0-5]\d)\s*", str(text))
    if not match:
        message = f"stop_at {text!r}: expected a local time of day HH:MM such as '07:00'"
        if where is None:
            raise UserError(message)
        where.fail(("stop_at",), message)
    return int(match.group(1)), int(match.group(2))


def seconds_until(hhmm: str, now: dt.datetime | None = None) -> float:
    """Seconds from ``now`` to the next local ``HH:MM`` (tomorrow's if today's has passed)."""
    hour, minute = _clock(hhmm)
    now = now or dt.datetime.now()
    then = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if then <= now:
        then += dt.timedelta(days=1)
    return (then - now).total_seconds()


# ---------------------------------------------------------------- paths


def builtin_spaces() -> set[str]:
    from .search.space import BUILTIN

    return {p.stem for p in BUILTIN.glob("*.yaml")}


def local(value: str, base: Path) -> Path:
    path = Path(value).expanduser()
    return (path if path.is_absolute() else base / path).resolve()


def asset(kind: str, value: str, base: Path, where: _Where) -> str:
    """A model or dataset spec: catalog names and hub ids stay; paths resolve against ``base``."""
    from . import assets

    if value in assets.CATALOG:
        return value
    path = local(value, base)
    explicit = value.startswith((".", "/", "~")) or Path(value).expanduser().is_absolute()
    if path.exists():
        return str(path)
    if explicit:
        where.fail((kind,), f"{kind} {value!r}: {path} does not exist")
    if "/" in value and not value.endswith("/"):
        return value  # a hub id, owner/name
    names = ", ".join(a.name for a in assets.CATALOG.values() if a.kind == kind)
    where.fail((kind,), f"{kind} {value!r} is not a catalog name ({names}), not a file or folder beside the study "
                        f"file ({path} does not exist) and not a hub id (owner/name)")
    return value  # not reached


def storage(value: str, base: Path) -> str:
    if value.startswith("sqlite:///"):
        rest = value[len("sqlite:///"):]
        if rest and rest != ":memory:" and not rest.startswith("/"):
            return f"sqlite:///{local(rest, base)}"
        return value
    if value.startswith("journal:"):
        return f"journal:{local(value[len('journal:'):], base)}"
    if "://" in value:
        return value  # postgresql://, mysql://, ...: as it is
    return f"sqlite:///{local(value, base)}"
