"""Fixtures shared by the unit tests: the real octobrixctl, run as a user would run it."""

from __future__ import annotations

import http.client
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import file_seconds, xdist_signals
from tests.umock import umockdev_missing

REPO = Path(__file__).resolve().parent.parent
STARTER_CONFIG = REPO / "packaging" / "octobrix.toml"


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP to a server on a unix socket (the web service's, as nginx reaches it)."""

    def __init__(self, path: Path, timeout: float = 30) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(str(self.unix_path))


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


def pytest_configure(config: pytest.Config) -> None:
    file_seconds.register(config)  # seconds per test file at the end of the run (issue #31)
    xdist_signals.register(config)  # SIGTERM and SIGHUP reach xdist's workers
