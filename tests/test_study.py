"""Study files (``autocompress study run|status|check``): a real search on a tiny model and tiny
data through a study file with relative paths, continued by a second run; bad study files fail
with one line; the shipped studies validate."""

import json
import math
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from autocompress.cli import main
from tiny_assets import SEARCH_SPACE as SPACE
from tiny_assets import make_model_folder, synthetic_frame

REPO = Path(__file__).resolve().parent.parent


# every path relative to the study file's folder (studies/), none to the working directory
STUDY = """schema: autocompress.study/v1
study_name: tiny
description: the tiny test task
model: ../assets/tiny-bert
dataset: ../assets/reviews.csv
text_column: review
label_column: polarity
teacher:
  epochs: 6
  lr: 2.0e-3
target:
  runtime: torch
  seq_len: 32
space: space.yaml
budget:
  latency: 50ms
sampler: tpe
sampler_seed: 5
predictor_grid: tiny
executor: local
polish: 0
trials: 3
time_limit: 20m
out: ../runs/tiny
storage: sqlite:///../runs/tiny.db
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_project):
    root = tmp_path_factory.mktemp("study")
    mp = pytest.MonkeyPatch()
    # the session's cache: these assets are the tiny project's (same files, so the same teacher
    # and latency table are found there instead of being made again)
    mp.setenv("AUTOCOMPRESS_HOME", str(tiny_project["home"]))
    (root / "assets").mkdir()
    synthetic_frame(480).to_csv(root / "assets" / "reviews.csv", index=False)
    make_model_folder(root / "assets" / "tiny-bert", layers=4)
    (root / "studies").mkdir()
    (root / "studies" / "space.yaml").write_text(SPACE)
    (root / "studies" / "tiny.yaml").write_text(STUDY)
    (root / "elsewhere").mkdir()
    mp.chdir(root / "elsewhere")  # relative paths must not depend on the working directory
    yield root
    mp.undo()


def _count(db: Path) -> int:
    with sqlite3.connect(db) as con:
        return con.execute("select count(*) from trials").fetchone()[0]


def _one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("autocompress: error: ")
    return err[0]


def test_check_prints_the_resolved_search_command_and_creates_nothing(project, capsys):
    study = str(project / "studies" / "tiny.yaml")
    assert main(["study", "check", study]) == 0
    out = capsys.readouterr().out
    assert f"--model={project / 'assets' / 'tiny-bert'}" in out
    assert f"--dataset={project / 'assets' / 'reviews.csv'}" in out
    assert f"--space={project / 'studies' / 'space.yaml'}" in out
    assert f"--storage=sqlite:///{project / 'runs' / 'tiny.db'}" in out
    assert "--predictor-grid=tiny" in out and "--trials=3" in out and "--budget=50ms" in out
    assert "--sampler-seed=5" in out and "--executor=local" in out
    assert main(["study", "check", study, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["study_name"] == "tiny" and info["trials"] == 3 and info["time_limit_s"] == 1200
    assert info["argv"][0] == "search"
    assert not (project / "runs").exists()


def test_a_study_builds_the_search_options_without_argument_strings(project, monkeypatch):
    """The file becomes SearchOptions directly; the command it prints, parsed by the real search
    parser, gives the same options (one source of defaults and checks)."""
    import argparse

    from autocompress.cli import build_parser
    from autocompress.options import SearchOptions
    from autocompress.study import load

    with monkeypatch.context() as m:
        m.setattr(argparse.ArgumentParser, "parse_args", lambda *a, **k: pytest.fail("a study went through argv"))
        study = load(project / "studies" / "tiny.yaml")
    assert isinstance(study.options, SearchOptions) and study.options.trials == 3
    assert study.options.teacher_lr == 2.0e-3 and study.options.sampler_seed == 5 and study.options.seq_len == 32
    assert SearchOptions.from_args(build_parser().parse_args(study.argv)) == study.options
    assert SearchOptions.from_args(build_parser().parse_args(["search"])) == SearchOptions()  # flag defaults


def test_status_before_the_first_run_says_not_started(project, capsys):
    assert main(["study", "status", str(project / "studies" / "tiny.yaml")]) == 0
    assert "not started" in capsys.readouterr().out
    assert main(["study", "status", str(project / "studies" / "tiny.yaml"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["started"] is False
    assert not (project / "runs").exists()  # the storage was not created by looking at it


def test_run_status_and_continue(project, capsys):
    study = str(project / "studies" / "tiny.yaml")
    db = project / "runs" / "tiny.db"
    assert main(["study", "run", study]) == 0
    captured = capsys.readouterr()
    assert "Pareto front of study 'tiny'" in captured.out
    assert "autocompress search --model=" in captured.err  # the resolved command, for the logs
    assert db.is_file() and (project / "runs" / "tiny" / "pareto.json").is_file()
    assert not (project / "elsewhere" / "runs").exists()
    assert _count(db) == 3

    assert main(["study", "status", study]) == 0
    out = capsys.readouterr().out
    assert "3 trials" in out and "val acc" in out and "Pareto front" in out
    assert main(["study", "status", study, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["started"] is True and info["trials"] == 3
    assert sum(info["states"].values()) == 3 and info["states"]["running"] == 0
    assert info["fidelity"]["full"] >= 1 and info["front"]
    assert info["best_feasible"] is not None and info["best_feasible"]["latency_ms"] <= 50

    # what optuna-dashboard needs: the study loads with plain Optuna, attributes are JSON, values
    # are numbers, and the objectives are named
    loaded = optuna.load_study(study_name="tiny", storage=f"sqlite:///{db}")
    assert loaded.metric_names == ["accuracy", "latency_ms"]
    json.dumps(loaded.user_attrs)
    for t in loaded.trials:
        json.dumps(t.user_attrs)
        json.dumps(t.system_attrs)
        assert t.values is None or all(not math.isnan(v) for v in t.values)

    # the same study again, with this run's trials overridden: continued in the same storage
    assert main(["study", "run", study, "--trials", "2"]) == 0
    capsys.readouterr()
    assert _count(db) == 5
    assert main(["study", "status", study, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["trials"] == 5
    loaded = optuna.load_study(study_name="tiny", storage=f"sqlite:///{db}")
    assert sum(t.user_attrs.get("warm_start") == "teacher" for t in loaded.trials) == 1


def test_a_continued_run_proposes_new_plans(project):
    db = project / "runs" / "tiny.db"
    if not db.is_file():
        pytest.skip("needs the study of test_run_status_and_continue")
    loaded = optuna.load_study(study_name="tiny", storage=f"sqlite:///{db}")
    sampled = [t.params for t in loaded.trials if not t.user_attrs.get("warm_start") and t.params]
    assert len(sampled) >= 2
    assert all(p != sampled[0] for p in sampled[1:])


def test_status_flags_running_trials_of_a_stopped_process(tmp_path, capsys):
    (tmp_path / "m").mkdir()
    (tmp_path / "d.csv").write_text("text,label\n")
    study = tmp_path / "s.yaml"
    study.write_text("schema: autocompress.study/v1\nstudy_name: s\nmodel: ./m\ndataset: ./d.csv\n"
                     "trials: 1\nout: run\n")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "run").mkdir()
    made = optuna.create_study(study_name="s", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}",
                               directions=["maximize", "minimize"])
    made.ask().set_user_attr("driver", {"host": socket.gethostname(), "pid": dead.pid})
    made.tell(made.ask(), state=optuna.trial.TrialState.FAIL)
    assert main(["study", "status", str(study)]) == 0
    out = capsys.readouterr().out
    assert "2 trials" in out and "1 failed, 1 running" in out and "re-queues" in out
    assert "no fully evaluated trial yet" in out


def _bad(tmp_path, body: str) -> Path:
    (tmp_path / "m").mkdir(exist_ok=True)
    (tmp_path / "d.csv").write_text("text,label\n")
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    return path


GOOD = ("schema: autocompress.study/v1\nstudy_name: s\nmodel: ./m\ndataset: ./d.csv\ntrials: 2\n"
        "out: out\nstorage: sqlite:///store/s.db\n")


@pytest.mark.parametrize("body,message", [
    (GOOD + "budget: {latency: 20ms\n", "bad.yaml:8: not valid YAML"),
    (GOOD + "out: [unclosed\nseed: 1\n", "not valid YAML"),
    (GOOD + "  bad indent: 1\n", "bad.yaml:8: not valid YAML"),
    (GOOD + "budjet: {latency: 20ms}\n", "bad.yaml:8: unknown key 'budjet'; did you mean 'budget'?"),
    (GOOD + "threads: 2\n", "unknown key 'threads'; did you mean 'target.threads'?"),
    (GOOD + "target: {runtime: torch, thread: 2}\n", "unknown key 'target.thread'; did you mean 'target.threads'?"),
    (GOOD + "budget: {latency: 20xs}\n", "bad.yaml:8: budget.latency: unknown unit 'xs'"),
    (GOOD + "budget: fast\n", "cannot parse latency budget 'fast'"),
    (GOOD + "budget: {size: 30 parsecs}\n", "budget.size"),
    (GOOD + "time_limit: 6 weeks\n", "bad.yaml:8: time_limit: unknown unit 'weeks'"),
    (GOOD + "stop_at: 6:30\n", "quote it"),
    (GOOD + "stop_at: '25:00'\n", "expected a local time of day HH:MM"),
    (GOOD + "workers: two\n", "'workers' must be an integer, got str 'two'"),
    (GOOD + "workers: 0\n", "'workers' must be >= 1"),
    (GOOD + "target: {threads: 1.5}\n", "'target.threads' must be an integer"),
    (GOOD + "baseline: maybe\n", "'baseline' must be true or false"),
    (GOOD + "sampler: tpee\n", "sampler 'tpee' is not one of tpe, nsga2, gp, random (did you mean 'tpe'?)"),
    (GOOD + "target: {runtime: tensorrt}\n", "target.runtime 'tensorrt' is not one of torch, onnxruntime"),
    (GOOD + "space: nope.yaml\n", "search space"),
    (GOOD + "study_name: again\n", "bad.yaml:8: key 'study_name' is given twice"),
    (GOOD.replace("study_name: s\n", ""), "missing required key 'study_name'"),
    (GOOD.replace("trials: 2\n", ""), "give 'trials'"),
    (GOOD.replace("autocompress.study/v1", "autocompress.study/v9"), "expected 'autocompress.study/v1'"),
    (GOOD.replace("./m", "./missing-model"), "bad.yaml:3: model './missing-model'"),
    (GOOD.replace("./m", "bert-huge"), "not a catalog name (minilm-l6)"),
    ("- a list\n", "must be a mapping"),
    ("", "the file is empty"),
])
def test_bad_study_files_fail_with_one_line_and_create_nothing(tmp_path, capsys, body, message):
    path = _bad(tmp_path, body)
    for command in ("run", "status", "check"):
        assert main(["study", command, str(path)]) == 2, command
        line = _one_error_line(capsys)
        assert message in line, line
    assert not (tmp_path / "out").exists() and not (tmp_path / "store").exists()


def test_missing_study_file_and_bad_overrides(tmp_path, capsys):
    assert main(["study", "run", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml does not exist" in _one_error_line(capsys)
    path = _bad(tmp_path, GOOD)
    assert main(["study", "run", str(path), "--time-limit", "6x"]) == 2
    assert "unknown unit 'x'" in _one_error_line(capsys)
    assert main(["study", "run", str(path), "--trials", "0"]) == 2
    assert "--trials must be >= 1" in _one_error_line(capsys)
    assert not (tmp_path / "out").exists() and not (tmp_path / "store").exists()


def test_stop_at_counts_to_the_next_such_time():
    import datetime as dt

    from autocompress.study import seconds_until

    evening = dt.datetime(2030, 1, 1, 23, 0)
    assert seconds_until("06:30", evening) == 7.5 * 3600
    assert seconds_until("23:30", evening) == 1800
    assert seconds_until("22:00", evening) == 23 * 3600


@pytest.mark.parametrize("path", sorted((REPO / "studies").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_studies_validate(path, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["study", "check", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["valid"] and info["argv"][0] == "search"
    assert info["time_limit_s"] and info["time_limit_s"] <= 8 * 3600
    assert Path(info["out"]).is_relative_to(REPO)  # resolved against studies/, not the working directory
    assert main(["study", "status", str(path)]) == 0
    capsys.readouterr()
    assert not any(tmp_path.iterdir())


def test_shipped_studies_exist():
    names = {p.name for p in (REPO / "studies").glob("*.yaml")}
    assert {"minilm-rotten-tomatoes.yaml", "bert-base-sst2.yaml"} <= names
