"""ruff and mypy run with the test suite, so CI enforces the style and types (STYLE.md rule 2)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "langchain_vq", "tests", "benchmarks", "examples"],
        ["ruff", "format", "--check", "langchain_vq", "tests", "examples"],
        [sys.executable, "-m", "mypy", "langchain_vq"],
    ],
    ids=["ruff-check", "ruff-format", "mypy"],
)
def test_static_check_passes(command: list[str]) -> None:
    if command[0] == "ruff" and shutil.which("ruff") is None:
        pytest.fail("ruff is not installed; it is part of the test extra: pip install -e '.[test]'")
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
