"""`autocompress plan show` and bad plans: one line, exit code 2."""

import pytest

from autocompress.cli import main
from tiny_assets import make_model_folder

BAD = {
    "more heads than exist": ("layers:\n  1: {heads: 20}\n", "20 but the model has 4 heads"),
    "rank 0": ("defaults: {rank: 0}\n", "rank must be an integer >= 1"),
    "unknown layer index": ("layers:\n  7: {heads: 2}\n", "the model has 2 layers"),
    "unknown key": ("defaults: {headz: 2}\n", "headz"),
    "dropped layer with knobs": ("layers:\n  0: {keep: false, heads: 2}\n", "dropped"),
}


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOCOMPRESS_HOME", str(tmp_path / "home"))
    return str(make_model_folder(tmp_path / "m", layers=2, heads=4))


def _write(tmp_path, body, schema="autocompress.plan/v1"):
    path = tmp_path / "plan.yaml"
    path.write_text(f"schema: {schema}\nname: t\n{body}")
    return str(path)


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_plans_fail_with_one_line(case, tiny, tmp_path, capsys):
    body, expected = BAD[case]
    capsys.readouterr()
    assert main(["plan", "show", _write(tmp_path, body), "--model", tiny]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err


def test_wrong_schema_tag(tiny, tmp_path, capsys):
    assert main(["plan", "show", _write(tmp_path, "", schema="autocompress.plan/v9"), "--model", tiny]) == 2
    assert "autocompress.plan/v1" in capsys.readouterr().err


def test_plan_show_prints_a_layer_table(tiny, tmp_path, capsys):
    assert main(["plan", "show", _write(tmp_path, "layers:\n  1: {heads: 2, ffn: 0.5, dtype: int8}\n"),
                 "--model", tiny]) == 0
    out = capsys.readouterr().out
    assert "2/4" in out and "32/64" in out and "all=int8" in out


def test_apply_refuses_an_out_dir_that_is_a_file(tiny, tmp_path, capsys):
    out = tmp_path / "file"
    out.write_text("x")
    assert main(["apply", "--plan", _write(tmp_path, ""), "--model", tiny, "--out", str(out)]) == 2
    assert "not a folder" in capsys.readouterr().err
