"""``autocompress study run|status|check``: overnight studies described by YAML files.

A study file (``schema: autocompress.study/v1``, see ``studies/``) is a thin layer over the options
of ``autocompress search``: it is checked (:mod:`autocompress.study_file`; one-line errors with
``file:line``), turned into the same :class:`~autocompress.options.SearchOptions` the command's
flags make (defaults and checks in one place, no argument strings in between), and run by the
same code as that command.
Running a study again continues it (same storage and study name: Optuna continues the study).

Relative paths in a study file resolve against the file's folder (out dir, storage, local model,
dataset and space files); catalog names (``minilm-l6``, ``rotten-tomatoes``), built-in spaces
(``joint``, ``structured``, ``quant_only``) and hub ids (``owner/name``) stay names.
"""

from __future__ import annotations

import datetime as dt
import json
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError
from .study_file import ALIASES, REQUIRED, SECTIONS, TOP  # noqa: F401  (re-exported: the file format lives there)
from .study_file import SCHEMA, asset, builtin_spaces, checked, local, read, seconds_until, storage, values


@dataclass
class Study:
    """A checked study file and the ``search`` options it stands for."""

    file: Path
    name: str
    options: Any                  # SearchOptions, built from the file (never through argv)
    search: Any                   # SearchConfig
    run: Any                      # RunConfig
    notes: list[str] = field(default_factory=list)

    @property
    def storage_url(self) -> str:
        return self.run.storage_url

    @property
    def argv(self) -> list[str]:
        """The ``autocompress search`` arguments that run the same search (shown, not parsed)."""
        return ["search", *self.options.to_argv()]

    def command(self) -> str:
        return shlex.join(["autocompress", *self.argv])


# ---------------------------------------------------------------- paths


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
    from .options import SearchOptions, search_configs
    from .objectives import parse_duration

    shown = str(file)
    path = Path(file).expanduser().resolve()
    data, where = read(path, shown)
    flat = checked(data, where)
    values(flat, where)
    base = path.parent
    notes: list[str] = []

    options: dict[str, Any] = {}

    def opt(field: str, key: str, value=None) -> None:
        value = flat.get(key) if value is None else value
        if value is not None:
            options[field] = value

    opt("model", "model", asset("model", flat["model"], base, where))
    opt("dataset", "dataset", asset("dataset", flat["dataset"], base, where))
    opt("text_column", "text_column")
    opt("label_column", "label_column")
    opt("seed", "seed")
    if flat.get("trust_remote_code"):
        options["trust_remote_code"] = True
    if flat.get("finetune") is False:
        options["no_finetune"] = True
    opt("teacher_epochs", "teacher.epochs")
    opt("teacher_lr", "teacher.lr")
    opt("runtime", "target.runtime")
    opt("threads", "target.threads")
    opt("batch_size", "target.batch_size")
    opt("seq_len", "target.seq_len")
    opt("budget", "budget.latency")
    opt("size_budget", "budget.size")
    opt("max_drop", "budget.max_drop")
    if flat.get("minimize_size"):
        options["minimize_size"] = True
    if "space" in flat:
        space = flat["space"]
        opt("space", "space", space if space in builtin_spaces() and not (base / space).exists()
            else str(local(space, base)))
    opt("sampler", "sampler")
    opt("sampler_seed", "sampler_seed")
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
    options["trials"] = n_trials  # None: the time window ends the run
    if n_trials is None:
        notes.append("no trial limit: the time window ends the run ('autocompress search' itself "
                     "cannot say so; it would stop after its default 40 trials)")
    options["time_limit"] = str(window_text)

    opt("workers", "workers")
    opt("out", "out", str(local(flat["out"], base)))
    opt("study_name", "study_name")
    if "storage" in flat:
        opt("storage", "storage", storage(flat["storage"], base))
    opt("ray_address", "ray_address")
    opt("executor", "executor")
    if flat.get("baseline") is False:
        options["no_baseline"] = True
    opt("predictor_grid", "predictor_grid")
    options["json"] = json_output

    search_options = SearchOptions(**options)
    try:
        Target.from_args(search_options)
        search, run = search_configs(search_options)
    except UserError as exc:
        raise UserError(f"{shown}: {exc}") from None
    return Study(file=path, name=run.study_name, options=search_options, search=search, run=run, notes=notes)


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
        from dataclasses import replace

        from .options import search_command

        return search_command(replace(study.options, started_at=getattr(args, "started_at", None)))


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
