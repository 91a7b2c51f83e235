"""Fixtures shared by the unit tests: the real octobrixctl, run as a user would run it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STARTER_CONFIG = REPO / "packaging" / "octobrix.toml"

Ctl = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def ctl() -> Ctl:
    """Run `octobrixctl ARGS` in a subprocess; returns the finished process (exit code not checked)."""

    def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "octobrixd.cli", *map(str, args)],
            capture_output=True,
            text=True,
            check=False,
            cwd=REPO,
        )

    return run


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str], Path]:
    def write(text: str) -> Path:
        path = tmp_path / "octobrix.toml"
        path.write_text(text, encoding="utf-8")
        return path

    return write
