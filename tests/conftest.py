"""Fixtures shared by the unit tests: the real octobrixctl, run as a user would run it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.umock import umockdev_missing

REPO = Path(__file__).resolve().parent.parent
STARTER_CONFIG = REPO / "packaging" / "octobrix.toml"

Ctl = Callable[..., subprocess.CompletedProcess[str]]


def require_programs(*programs: str, deps: str) -> None:
    """Fail (never skip) when a host program a test runs is missing: tests/run installs every one
    with tests/deps/*.sh, so a missing one is a broken setup; deps names the script that installs it."""
    missing = [program for program in programs if shutil.which(program) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: run tests/deps/{deps} as root (tests/run does)", pytrace=False)


@pytest.fixture(scope="session")
def umockdev() -> None:
    """umockdev and its bindings for this Python, or the test fails saying how to get them."""
    require_programs("umockdev-wrapper", deps="devices.sh")
    missing = umockdev_missing()
    if missing is not None:
        pytest.fail(missing, pytrace=False)


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


# --- where the suite's time goes (issue #31): wall time per test file, setup and teardown included ---

_FILE_SECONDS: dict[str, float] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    path = report.nodeid.split("::", 1)[0]
    _FILE_SECONDS[path] = _FILE_SECONDS.get(path, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _FILE_SECONDS:
        return
    ranked = sorted(_FILE_SECONDS.items(), key=lambda item: item[1], reverse=True)
    shown = [(path, seconds) for path, seconds in ranked if seconds >= 5.0]
    rest = sum(seconds for _path, seconds in ranked) - sum(seconds for _path, seconds in shown)
    terminalreporter.section("seconds per test file (5 s and more)")
    for path, seconds in shown:
        terminalreporter.write_line(f"{seconds:8.1f}  {path}")
    terminalreporter.write_line(f"{rest:8.1f}  the other {len(ranked) - len(shown)} files")
