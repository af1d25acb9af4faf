"""The bad-input matrix of ``autocompress search``: each case is one line on stderr, exit code 2,
and nothing half-written (no output folder, no partial cache entry)."""

from __future__ import annotations

import pandas as pd
import pytest

from autocompress.cli import main
from tiny_assets import make_model_folder, synthetic_frame


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad-inputs")
    data = tmp / "reviews.csv"
    synthetic_frame(120).to_csv(data, index=False)
    pd.DataFrame({"sentence": ["good film", "bad film"] * 10, "y": [0, 1] * 10}).to_csv(tmp / "other.csv", index=False)
    pd.DataFrame({"review": ["", "  "] * 10, "polarity": ["fresh", "rotten"] * 10}).to_csv(tmp / "empty.csv", index=False)
    pd.DataFrame({"review": ["good film"] * 20, "polarity": ["fresh"] * 20}).to_csv(tmp / "one.csv", index=False)
    (tmp / "broken.yaml").write_text("schema: autocompress.space/v1\nlayers:\n  heads: [1.0\n")
    (tmp / "a-file").write_text("not a folder")
    return {"tmp": tmp, "model": make_model_folder(tmp / "tiny-bert"), "data": data}


def _argv(a, **over):
    opts = {"--model": str(a["model"]), "--dataset": str(a["data"]), "--text-column": "review",
            "--label-column": "polarity", "--budget": "40ms", "--trials": "2", "--predictor-grid": "tiny"}
    opts.update(over)
    return ["search", *[x for k, v in opts.items() for x in (k, v)]]


CASES = {
    "unparsable budget": ({"--budget": "40xs"}, "unknown unit 'xs'"),
    "unknown model": ({"--model": "bert-huge"}, "minilm-l6"),
    "unknown dataset": ({"--dataset": "imbd"}, "imbd"),
    "missing columns": ({"--dataset": "{tmp}/other.csv"}, "sentence, y"),
    "empty data": ({"--dataset": "{tmp}/empty.csv"}, "no labelled rows"),
    "one-class data": ({"--dataset": "{tmp}/one.csv"}, "one class"),
    "broken space YAML": ({"--space": "{tmp}/broken.yaml"}, "not valid YAML"),
    "storage that cannot be opened": ({"--storage": "sqlite:///{tmp}/no/such/folder/study.db"}, "cannot open storage"),
    "unknown storage scheme": ({"--storage": "nosuchdb://x"}, "cannot open storage"),
    "out dir that is a file": ({"--out": "{tmp}/a-file"}, "is not a folder"),
    "negative budget as its own word": ({"--budget": "-5ms"}, "cannot parse latency budget"),
    "zero threads": ({"--threads": "0"}, "--threads must be >= 1"),
    "sequence longer than the model": ({"--seq-len": "100000"}, "--seq-len 100000 is longer than the model takes"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(assets, case, capsys, tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("AUTOCOMPRESS_HOME", str(home))
    over, message = CASES[case]
    over = {k: v.format(tmp=assets["tmp"]) for k, v in over.items()}
    over.setdefault("--out", str(tmp_path / "run"))
    assert main(_argv(assets, **over)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("autocompress: error: "), err
    assert message in err[0], err[0]
    if case != "out dir that is a file":
        assert not (tmp_path / "run").exists()
    else:
        assert (assets["tmp"] / "a-file").read_text() == "not a folder"
    partial = [p for p in home.rglob("*") if p.name.endswith(".partial")] if home.exists() else []
    assert not partial
