"""Security defaults: safetensors only, no model code from a folder or the hub unless asked."""

from __future__ import annotations

import json

import pytest
import torch

from autocompress.cli import main
from autocompress.errors import UserError
from autocompress.models import load_model, resolve_model
from tiny_assets import make_model_folder

CUSTOM_CODE = """import os
import pathlib
pathlib.Path(os.environ["AUTOCOMPRESS_CODE_RAN"]).write_text("yes")
from transformers import BertForSequenceClassification


class CustomClassifier(BertForSequenceClassification):  # a subclass: loading registers it, not BERT's own class
    pass
"""
FOLDER = "autocompress_remote_code_check"


def test_pickled_weights_are_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("AUTOCOMPRESS_HOME", str(tmp_path / "home"))
    folder = make_model_folder(tmp_path / "m")
    state = {k: v for k, v in __import__("safetensors.torch").torch.load_file(folder / "model.safetensors").items()}
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    capsys.readouterr()
    assert main(["teacher", "--model", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "only from safetensors" in err[0], err


@pytest.fixture
def marker(tmp_path, monkeypatch):
    """The file the folder's code writes when it runs; transformers' copy of the code is removed after."""
    import shutil

    from transformers.dynamic_module_utils import HF_MODULES_CACHE

    path = tmp_path / "CODE_RAN"
    monkeypatch.setenv("AUTOCOMPRESS_CODE_RAN", str(path))
    yield path
    shutil.rmtree(f"{HF_MODULES_CACHE}/transformers_modules/{FOLDER}", ignore_errors=True)


def _folder_with_code(tmp_path):
    folder = make_model_folder(tmp_path / FOLDER)
    (folder / "custom.py").write_text(CUSTOM_CODE)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForSequenceClassification": "custom.CustomClassifier"}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_model_code_in_a_folder_does_not_run_by_default(tmp_path, marker):
    folder = _folder_with_code(tmp_path)
    source = resolve_model(str(folder))
    try:
        load_model(source.path, 2)
    except UserError:
        pass  # refusing is fine too; running the code is not
    assert not marker.exists()


def test_model_code_runs_only_with_the_flag(tmp_path, marker):
    folder = _folder_with_code(tmp_path)
    model = load_model(resolve_model(str(folder)).path, 2, trust_remote_code=True)
    assert type(model).__name__ == "CustomClassifier"
    assert marker.exists(), "with the flag, the folder's code runs"


@pytest.mark.parametrize("command", ["teacher", "search", "apply", "baseline"])
def test_trust_remote_code_is_an_explicit_flag_defaulting_off(command):
    from autocompress.cli import build_parser

    argv = [command, "--plan", "p.yaml", "--out", "o"] if command == "apply" else [command]
    assert build_parser().parse_args(argv).trust_remote_code is False
    assert build_parser().parse_args(argv + ["--trust-remote-code"]).trust_remote_code is True
