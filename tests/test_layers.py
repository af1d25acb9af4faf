"""The package's structure: imports point one way (the ``layers`` contract in pyproject.toml,
checked by import-linter) and no module uses another module's private names."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "autocompress"


def test_imports_follow_the_layers_contract():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if exe is None:
        pytest.fail("lint-imports is not installed (pip install -e '.[test]')")
    done = subprocess.run([exe, "--config", str(PACKAGE.parent / "pyproject.toml")], cwd=PACKAGE.parent,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]


def _private_imports(source: str) -> list[str]:
    """``from <own module> import _name`` in ``source`` (relative or ``autocompress.`` imports)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("autocompress")):
            found += [f"line {node.lineno}: {a.name}" for a in node.names
                      if a.name.startswith("_") and not a.name.startswith("__")]
    return found


def test_no_module_imports_another_modules_private_names():
    offenders = {str(f.relative_to(PACKAGE.parent)): hits for f in sorted(PACKAGE.rglob("*.py"))
                 if (hits := _private_imports(f.read_text()))}
    assert not offenders, offenders
    assert _private_imports("from .report import _member\nfrom .x import ok, _hidden\nfrom os import _exit\n") \
        == ["line 1: _member", "line 2: _hidden"]  # the check itself finds what it should


def test_no_module_is_over_400_lines():
    """Small modules, one concern each (a new technique, runtime or task is a file of its own)."""
    sizes = {str(f.relative_to(PACKAGE.parent)): len(f.read_text().splitlines()) for f in sorted(PACKAGE.rglob("*.py"))}
    assert sizes and not {f: n for f, n in sizes.items() if n > 400}
