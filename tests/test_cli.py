"""The command line: listings, and bad input as one line with exit code 2."""

import subprocess
import sys

import pandas as pd
import pytest

from autocompress.cli import main


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOCOMPRESS_HOME", str(tmp_path / "home"))


def _one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("autocompress: error: ")
    return err[0]


def test_assets_list_names_both_entries(capsys):
    assert main(["assets", "list"]) == 0
    out = capsys.readouterr().out
    assert "minilm-l6" in out and "rotten-tomatoes" in out
    assert "not cached" in out


def test_unknown_model_lists_catalog(capsys):
    assert main(["teacher", "--model", "bert-huge"]) == 2
    assert "minilm-l6" in _one_error_line(capsys)


def test_unknown_dataset_lists_catalog(capsys, tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    assert main(["teacher", "--model", str(model), "--dataset", "imbd"]) == 2
    assert "no *.safetensors" in _one_error_line(capsys)  # the model is checked first


def test_offline_hub_id_says_how_to_proceed(capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["teacher", "--model", "nobody-here/no-such-model"]) == 2
    line = _one_error_line(capsys)
    assert "hub" in line and "local folder" in line


def test_missing_columns_are_named(capsys, tmp_path):
    csv = tmp_path / "d.csv"
    pd.DataFrame({"sentence": ["a b", "c d"] * 10, "y": [0, 1] * 10}).to_csv(csv, index=False)
    from tiny_assets import make_model_folder

    model = make_model_folder(tmp_path / "tiny")
    capsys.readouterr()
    assert main(["teacher", "--model", str(model), "--dataset", str(csv)]) == 2
    line = _one_error_line(capsys)
    assert "sentence, y" in line


def test_bad_arguments_are_one_line_exit_2():
    proc = subprocess.run([sys.executable, "-m", "autocompress.cli", "teacher", "--seed", "x"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "invalid int value" in proc.stderr


def test_the_default_task_context_is_built_from_the_clis_defaults(monkeypatch):
    from autocompress.cli import build_parser
    from autocompress.context import TASK_OPTIONS, TaskContext
    from autocompress.spec import TaskSpec

    seen = []
    monkeypatch.setattr(TaskContext, "from_spec", classmethod(lambda cls, spec, progress=True: seen.append(spec)))
    TaskContext.default(seed=3)
    [spec] = seen
    assert (spec.model, spec.dataset, spec.seed, spec.teacher_epochs) == ("minilm-l6", "rotten-tomatoes", 3, 2.0)
    with pytest.raises(TypeError, match="not task options: budget"):
        TaskContext.default(budget="40ms")
    # one source of defaults: the CLI's task options are the spec's fields, with its defaults
    for command in ("teacher", "search", "apply"):
        args = build_parser().parse_args([command] + (["--plan", "p.yaml", "--out", "o"] if command == "apply" else []))
        assert set(TASK_OPTIONS) <= set(vars(args)) and TaskSpec.from_args(args) == TaskSpec()
