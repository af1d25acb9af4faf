"""The search's Optuna study on disk: opening a storage (SQLite, journal file or any RDB URL),
creating or continuing a study and recording what it is about, and trials left running by a
process that died (failed, then queued again)."""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

from ..errors import UserError
from ..objectives import Objectives
from .searcher import DRIVER_ATTR


def open_storage(url: str):
    """An Optuna storage from a URL; failure to open is bad input (one line, exit 2)."""
    import optuna

    try:
        if url.startswith("journal:"):
            from optuna.storages.journal import JournalFileBackend

            return optuna.storages.JournalStorage(JournalFileBackend(url[len("journal:"):]))
        if url.startswith("sqlite:///"):
            # Processes creating one new database at once race on its tables: take turns.
            from .sqlite_storage import SQLiteStorage

            folder = Path(url[len("sqlite:///"):]).parent
            with folder_lock(folder):
                return SQLiteStorage(url, lock=folder, engine_kwargs={"connect_args": {"timeout": 60}})
        return optuna.storages.RDBStorage(url)
    except Exception as exc:  # sqlalchemy/optuna raise many types
        raise UserError(f"cannot open storage {url!r}: {str(exc).splitlines()[0]}") from None


@contextlib.contextmanager
def folder_lock(folder: Path):
    """An exclusive advisory lock on an existing folder (no lock file left behind); no-op if the
    folder does not exist (opening the storage then fails with its own message)."""
    import fcntl

    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def open_study(ctx, target, search, run, dims: dict, teacher_latency_ms: float):
    """Create or continue the study (``search``: a :class:`~autocompress.runner.SearchConfig`, ``run``:
    a :class:`~autocompress.runner.RunConfig`); record what it is about; fail stale trials and retry
    them."""
    import optuna

    from .samplers import make_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    objectives = Objectives(with_size=search.with_size)
    storage = open_storage(run.storage_url)
    sampler = make_sampler(search.sampler, seed=search.seed)
    try:
        study = optuna.create_study(study_name=run.study_name, storage=storage, sampler=sampler,
                                    directions=objectives.directions, load_if_exists=True)
    except ValueError as exc:
        raise UserError(f"study '{run.study_name}': {exc}") from None
    if [d.name.lower() for d in study.directions] != objectives.directions:
        raise UserError(f"study '{run.study_name}' in {run.storage_url} optimises {len(study.directions)} objectives; "
                        f"this run asks for {', '.join(objectives.names)} (use another --study-name)")
    done = len(study.get_trials(deepcopy=False))
    if done:  # continued: a sampler seeded as in the first run would propose the first run's plans again
        study.sampler = make_sampler(search.sampler, seed=search.seed + done)
    if study.metric_names != objectives.names:  # optuna-dashboard labels its axes with them
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(objectives.names)
    previous = study.user_attrs
    for key, now in (("model", ctx.spec.get("model")), ("dataset", ctx.spec.get("dataset")), ("target", target.to_dict())):
        if key in previous and previous[key] != now:
            raise UserError(f"study '{run.study_name}' was run with {key} {previous[key]!r}, not {now!r}; "
                            "use another --study-name or --out")
    teacher = {"validation_accuracy": ctx.teacher.metrics["validation_accuracy"],
               "test_accuracy": ctx.teacher.metrics["test_accuracy"], "latency_ms": round(teacher_latency_ms, 3),
               "path": str(ctx.teacher.path)}
    for key, value in {"model": ctx.spec.get("model"), "dataset": ctx.spec.get("dataset"), "space": search.space,
                       "sampler": search.sampler, "sampler_seed": search.seed, "target": target.to_dict(), "budget": search.budget.to_dict(),
                       "teacher": teacher, "dims": dims, "study_name": run.study_name,
                       "objectives": objectives.names}.items():
        study.set_user_attr(key, value)
    retry_stale(study)
    return study, objectives


STALE = "interrupted: the process running it stopped"


def retry_stale(study) -> int:
    """Trials left RUNNING by a process that died: mark them failed and queue them again."""
    import optuna

    stale = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
             if not owner_alive(t)]
    for t in stale:
        study.tell(t.number, state=optuna.trial.TrialState.FAIL)
        carried = {k: t.user_attrs[k] for k in ("warm_start", "fixed_plan", "plan_name") if k in t.user_attrs}
        study.enqueue_trial(t.params, user_attrs={"retry_of": t.number, "retry_reason": STALE, **carried},
                            skip_if_exists=False)
    return len(stale)


def owner_alive(trial) -> bool:
    """A RUNNING trial is alive while the driver that asked for it still runs. Drivers on other
    hosts cannot be checked from here and are presumed alive."""
    import socket

    owner = trial.user_attrs.get(DRIVER_ATTR)
    if not owner:
        return False
    if owner.get("host") != socket.gethostname():
        return True
    try:
        os.kill(owner["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


__all__ = ["STALE", "folder_lock", "open_storage", "open_study", "owner_alive", "retry_stale"]
