"""``autocompress study run|status|check``: overnight studies described by YAML files.

A study file (``schema: autocompress.study/v1``, see ``studies/``) is a thin layer over the options
of ``autocompress search``: it is checked here (one-line errors with ``file:line``), turned into
the argument list of ``autocompress search`` and parsed by the real search parser, so defaults and
checks stay in one place, and run by the same code as that command. Running a study again
continues it (same storage and study name: Optuna continues the study).

Relative paths in a study file resolve against the file's folder (out dir, storage, local model,
dataset and space files); catalog names (``minilm-l6``, ``rotten-tomatoes``), built-in spaces
(``joint``, ``structured``, ``quant_only``) and hub ids (``owner/name``) stay names.
"""

from __future__ import annotations

import argparse
import datetime as dt
import difflib
import json
import math
import re
import shlex
import sys
from dataclasses import dataclass, field
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


@dataclass
class Study:
    """A checked study file and the ``search`` options it stands for."""

    file: Path
    name: str
    argv: list[str]               # the ``autocompress search`` arguments
    args: argparse.Namespace      # parsed by the real search parser
    search: Any                   # SearchConfig
    run: Any                      # RunConfig
    notes: list[str] = field(default_factory=list)

    @property
    def storage_url(self) -> str:
        return self.run.storage_url

    def command(self) -> str:
        return shlex.join(["autocompress", *self.argv])


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


def _read(file: Path, shown: str) -> tuple[dict, _Where]:
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


def _checked(data: dict, where: _Where) -> dict:
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


def _values(flat: dict, where: _Where) -> None:
    """Values that have a fixed vocabulary or syntax: checked here so the error names the key."""
    from .latency.target import RUNTIMES
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
    for key, choices in (("sampler", SAMPLERS), ("target.runtime", RUNTIMES), ("predictor_grid", ("default", "tiny"))):
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


def _builtin_spaces() -> set[str]:
    from .search.space import BUILTIN

    return {p.stem for p in BUILTIN.glob("*.yaml")}


def _local(value: str, base: Path) -> Path:
    path = Path(value).expanduser()
    return (path if path.is_absolute() else base / path).resolve()


def _asset(kind: str, value: str, base: Path, where: _Where) -> str:
    """A model or dataset spec: catalog names and hub ids stay; paths resolve against ``base``."""
    from . import assets

    if value in assets.CATALOG:
        return value
    path = _local(value, base)
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


def _storage(value: str, base: Path) -> str:
    if value.startswith("sqlite:///"):
        rest = value[len("sqlite:///"):]
        if rest and rest != ":memory:" and not rest.startswith("/"):
            return f"sqlite:///{_local(rest, base)}"
        return value
    if value.startswith("journal:"):
        return f"journal:{_local(value[len('journal:'):], base)}"
    if "://" in value:
        return value  # postgresql://, mysql://, ...: as it is
    return f"sqlite:///{_local(value, base)}"


def _storage_file(url: str) -> Path | None:
    """The file behind a SQLite or journal URL (None for database servers)."""
    if url.startswith("sqlite:///"):
        rest = url[len("sqlite:///"):]
        return Path(rest) if rest and rest != ":memory:" else None
    if url.startswith("journal:"):
        return Path(url[len("journal:"):])
    return None


# ---------------------------------------------------------------- the study


def load(file: str | Path, *, trials: int | None = None, time_limit: str | None = None,
         json_output: bool = False) -> Study:
    """Read and check a study file; ``trials``/``time_limit`` override the file's limits for this run
    (``time_limit`` replaces both ``time_limit`` and ``stop_at``). Touches nothing on disk."""
    from .latency import Target
    from .options import Parser, add_search_arguments, search_configs
    from .objectives import parse_duration

    shown = str(file)
    path = Path(file).expanduser().resolve()
    data, where = _read(path, shown)
    flat = _checked(data, where)
    _values(flat, where)
    base = path.parent
    notes: list[str] = []

    argv = ["search"]

    def opt(flag: str, key: str, value=None) -> None:
        value = flat.get(key) if value is None else value
        if value is not None:
            argv.append(f"--{flag}={value}")

    opt("model", "model", _asset("model", flat["model"], base, where))
    opt("dataset", "dataset", _asset("dataset", flat["dataset"], base, where))
    opt("text-column", "text_column")
    opt("label-column", "label_column")
    opt("seed", "seed")
    if flat.get("trust_remote_code"):
        argv.append("--trust-remote-code")
    if flat.get("finetune") is False:
        argv.append("--no-finetune")
    opt("teacher-epochs", "teacher.epochs")
    opt("teacher-lr", "teacher.lr")
    opt("runtime", "target.runtime")
    opt("threads", "target.threads")
    opt("batch-size", "target.batch_size")
    opt("seq-len", "target.seq_len")
    opt("budget", "budget.latency")
    opt("size-budget", "budget.size")
    opt("max-drop", "budget.max_drop")
    if flat.get("minimize_size"):
        argv.append("--minimize-size")
    if "space" in flat:
        space = flat["space"]
        opt("space", "space", space if space in _builtin_spaces() and not (base / space).exists()
            else str(_local(space, base)))
    opt("sampler", "sampler")
    opt("sampler-seed", "sampler_seed")
    opt("polish", "polish")

    # limits of this run: the first one reached ends it
    n_trials = trials if trials is not None else flat.get("trials")
    if time_limit is not None:
        window = None if str(time_limit).lower() in ("none", "0") else parse_duration(time_limit)
        window_text = str(time_limit)
    else:
        limits = []
        if str(flat.get("time_limit", "none")).lower() not in ("none", "0"):
            limits.append((parse_duration(flat["time_limit"]), flat["time_limit"]))
        if "stop_at" in flat:
            left = seconds_until(flat["stop_at"])
            limits.append((left, f"{int(left)}s"))
            notes.append(f"stop_at {flat['stop_at']}: {left / 3600:.1f} h from now")
        window, window_text = min(limits) if limits else (None, "none")
    if n_trials is None and window is None:
        where.fail(("time_limit",), "no limit left: give trials or a time limit")
    if n_trials is not None:
        argv.append(f"--trials={n_trials}")
    else:
        notes.append("no trial limit: the time window ends the run ('autocompress search' itself "
                     "cannot say so; it would stop after its default 40 trials)")
    argv.append(f"--time-limit={window_text}")

    opt("workers", "workers")
    opt("out", "out", str(_local(flat["out"], base)))
    opt("study-name", "study_name")
    if "storage" in flat:
        opt("storage", "storage", _storage(flat["storage"], base))
    opt("ray-address", "ray_address")
    if flat.get("baseline") is False:
        argv.append("--no-baseline")
    opt("predictor-grid", "predictor_grid")
    if json_output:
        argv.append("--json")

    try:
        args = add_search_arguments(Parser(prog="autocompress search")).parse_args(argv[1:])
        if n_trials is None:
            args.trials = None  # the search runs until the time limit (SearchConfig allows it)
        Target.from_args(args)
        search, run = search_configs(args)
    except UserError as exc:
        raise UserError(f"{shown}: {exc}") from None
    return Study(file=path, name=run.study_name, argv=argv, args=args, search=search, run=run, notes=notes)


# ---------------------------------------------------------------- commands


def register(subparsers, parser_class) -> None:
    """Add the ``study`` command group to the CLI's sub-parsers."""
    p = subparsers.add_parser("study", help="overnight studies described by YAML files (studies/*.yaml)")
    sub = p.add_subparsers(dest="study_command", required=True, parser_class=parser_class)

    p_run = sub.add_parser("run", help="run a study file (running it again continues the study)")
    p_run.add_argument("file", help="study file (schema autocompress.study/v1)")
    p_run.add_argument("--trials", type=int, help="trials in this run (replaces the file's trials)")
    p_run.add_argument("--time-limit", help="wall-time limit of this run, e.g. 6h or none "
                                            "(replaces the file's time_limit and stop_at)")
    p_run.add_argument("--json", action="store_true", help="print the recommendation as JSON")
    p_run.set_defaults(func=_run)

    p_status = sub.add_parser("status", help="progress of a study, without running anything")
    p_status.add_argument("file")
    p_status.add_argument("--json", action="store_true")
    p_status.set_defaults(func=_status)

    p_check = sub.add_parser("check", help="validate a study file and print the search command it runs")
    p_check.add_argument("file")
    p_check.add_argument("--json", action="store_true")
    p_check.set_defaults(func=_check)


def _check(args) -> int:
    study = load(args.file)
    storage_file = _storage_file(study.storage_url)
    state = ("exists" if storage_file.exists() else "not created yet") if storage_file else "database server"
    if args.json:
        print(json.dumps({"file": str(study.file), "valid": True, "study_name": study.name,
                          "out": str(study.run.out), "storage": study.storage_url, "storage_state": state,
                          "trials": study.search.trials, "time_limit_s": study.search.time_limit_s,
                          "argv": study.argv, "command": study.command(), "notes": study.notes}, indent=2))
        return 0
    print(f"{args.file}: valid ({SCHEMA})")
    print(f"study    {study.name}")
    print(f"out      {study.run.out}")
    print(f"storage  {study.storage_url} ({state})")
    limit = study.search.time_limit_s
    trials = f"{study.search.trials} trials" if study.search.trials else "no trial limit"
    print(f"limits   {trials}, {_duration(limit) + ' time limit' if limit else 'no time limit'} per run; "
          f"budget {study.search.budget.describe()}")
    for note in study.notes:
        print(f"note     {note}")
    print(study.command())
    return 0


def _run(args) -> int:
    import fcntl
    import os

    if args.trials is not None and args.trials < 1:
        raise UserError(f"--trials must be >= 1, got {args.trials}")
    study = load(args.file, trials=args.trials, time_limit=args.time_limit, json_output=args.json)
    out = study.run.out
    if out.exists() and not out.is_dir():
        raise UserError(f"{args.file}: out {out} exists and is not a folder")
    storage_file = _storage_file(study.storage_url)
    out.mkdir(parents=True, exist_ok=True)
    if storage_file is not None:
        storage_file.parent.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().isoformat(sep=" ", timespec="seconds")
    print(f"[{stamp}] study {study.name} ({args.file}): {study.command()}", file=sys.stderr, flush=True)
    for note in study.notes:
        print(f"  note: {note}", file=sys.stderr, flush=True)
    lock_path = out / ".study.lock"
    with open(lock_path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            owner = lock.read().strip() or "another process"
            raise UserError(f"study {study.name} is already running in {out} ({owner}); "
                            f"wait for it or stop it") from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()} since {stamp}\n")
        lock.flush()
        return study.args.func(study.args)


def status(study: Study) -> dict:
    """Progress of a study from its storage, without creating anything."""
    import optuna

    from .report import member_record, summarise
    from .runner import owner_alive, open_storage

    base = {"file": str(study.file), "study_name": study.name, "storage": study.storage_url,
            "out": str(study.run.out)}
    storage_file = _storage_file(study.storage_url)
    if storage_file is not None and not storage_file.is_file():
        return {**base, "started": False, "why": f"{storage_file} does not exist yet"}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        loaded = optuna.load_study(study_name=study.name, storage=open_storage(study.storage_url))
    except KeyError:
        return {**base, "started": False, "why": f"the storage has no study named '{study.name}'"}
    trials = loaded.get_trials(deepcopy=False)
    states = {s: 0 for s in ("complete", "fail", "running", "pruned", "waiting")}
    fidelity = {"screen": 0, "full": 0}
    stale = 0
    for t in trials:
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
        if t.state == optuna.trial.TrialState.COMPLETE and t.user_attrs.get("fidelity") in fidelity:
            fidelity[t.user_attrs["fidelity"]] += 1
        if t.state == optuna.trial.TrialState.RUNNING and not owner_alive(t):
            stale += 1
    starts = [t.datetime_start for t in trials if t.datetime_start]
    updates = [t.datetime_complete or t.datetime_start for t in trials if t.datetime_complete or t.datetime_start]
    summary = summarise(loaded)
    rec = summary["recommended"]
    stamp = lambda d: d.isoformat(sep=" ", timespec="seconds") if d else None  # noqa: E731
    return {**base, "started": True, "trials": len(trials), "states": states, "fidelity": fidelity,
            "stale_running": stale, "first_trial": stamp(min(starts) if starts else None),
            "last_update": stamp(max(updates) if updates else None),
            "span_seconds": round((max(updates) - min(starts)).total_seconds(), 1) if starts and updates else 0.0,
            "search_seconds": round(loaded.user_attrs.get("wall_seconds", 0.0), 1),
            "budget": summary["budget"].to_dict(), "budget_text": summary["budget"].describe(),
            "teacher": loaded.user_attrs.get("teacher"), "target": loaded.user_attrs.get("target"),
            "best_feasible": member_record(rec) if rec and summary["meets_budget"] else None,
            "closest": member_record(rec) if rec and not summary["meets_budget"] else None,
            "hypervolume": summary["hypervolume"], "front": [member_record(r) for r in summary["front"]],
            "_front_rows": summary["front"]}


def _status(args) -> int:
    from .report import front_table

    info = status(load(args.file))
    rows = info.pop("_front_rows", [])
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(f"study    {info['study_name']} ({args.file})")
    print(f"storage  {info['storage']}")
    if not info["started"]:
        print(f"not started: {info['why']}; run 'autocompress study run {args.file}'")
        return 0
    s, f = info["states"], info["fidelity"]
    extra = f", {s['waiting']} waiting" if s.get("waiting") else ""
    print(f"progress {info['trials']} trials: {s['complete']} complete ({f['full']} full, {f['screen']} screen), "
          f"{s['fail']} failed, {s['running']} running, {s['pruned']} pruned{extra}")
    if info["stale_running"]:
        print(f"         {info['stale_running']} running trial(s) belong to a process that stopped; "
              f"the next run fails and re-queues them")
    print(f"time     first trial {info['first_trial']}, last update {info['last_update']} "
          f"(span {_duration(info['span_seconds'])}; search time of finished runs {_duration(info['search_seconds'])})")
    teacher = info.get("teacher") or {}
    if teacher:
        print(f"teacher  validation accuracy {teacher.get('validation_accuracy', float('nan')):.4f}, "
              f"p50 {teacher.get('latency_ms', float('nan')):.2f} ms")
    best, closest = info["best_feasible"], info["closest"]
    if best:
        print(f"best     trial {best['number']} meets {info['budget_text']}: validation accuracy {best['accuracy']:.4f}, "
              f"p50 {best['latency_ms']:.2f} ms, {best['size_mb']:.1f} MB")
    elif closest:
        print(f"best     none meets {info['budget_text']} yet; closest: trial {closest['number']} "
              f"(accuracy {closest['accuracy']:.4f}, p50 {closest['latency_ms']:.2f} ms, {closest['size_mb']:.1f} MB)")
    else:
        print("best     no fully evaluated trial yet")
    print(f"\nPareto front of the fully evaluated trials ({len(rows)} member{'' if len(rows) == 1 else 's'}, "
          f"hypervolume {info['hypervolume']:.4f}):")
    print(front_table(rows))
    return 0


def _duration(seconds: float | None) -> str:
    seconds = int(seconds or 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
