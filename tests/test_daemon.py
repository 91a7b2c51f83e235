"""octobrixd under --root with a real sd_notify socket: ready, reload, bad edits keep the last good config."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO

GOOD = "[printers.demo]\nvirtual = true\nport = 5000\n"


class NotifySocket:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(15)

    def next(self) -> dict[str, str]:
        data = self.sock.recv(4096).decode("ascii")
        return dict(line.split("=", 1) for line in data.splitlines())

    def wait_for(self, key: str, containing: str = "") -> dict[str, str]:
        while True:
            message = self.next()
            if key in message and containing in message[key]:
                return message


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], NotifySocket, Path, Path]]:
    config = tmp_path / "octobrix.toml"
    config.write_text(GOOD)
    root = tmp_path / "root"
    notify = NotifySocket(tmp_path / "notify.sock")
    env = dict(os.environ, NOTIFY_SOCKET=str(notify.path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "octobrixd.daemon", "--config", str(config), "--root", str(root)],
        env=env,
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc, notify, config, root
    finally:
        proc.kill()
        proc.wait()


def test_ready_after_first_apply(daemon: tuple[subprocess.Popen[str], NotifySocket, Path, Path]) -> None:
    _proc, notify, _config, root = daemon
    notify.wait_for("READY")
    # Under --root nothing asks systemd, so the instance's state is not known.
    assert notify.wait_for("STATUS", "printer")["STATUS"] == "1 printer: 1 state unknown; 0 cameras"
    assert (root / "etc/systemd/system/octoprint@demo.service.d/50-octobrix.conf").exists()


def test_broken_edit_keeps_last_good_config_and_next_fix_applies(
    daemon: tuple[subprocess.Popen[str], NotifySocket, Path, Path],
) -> None:
    proc, notify, config, root = daemon
    notify.wait_for("READY")
    config.write_text(GOOD + "[printers.two]\nport = 5000\n")
    proc.send_signal(signal.SIGHUP)
    status = notify.wait_for("STATUS", "config error")["STATUS"]
    assert status.startswith("1 printer: 1 state unknown; 0 cameras; config error, keeping the last good config: ")
    assert "printers.two" in status
    assert status.isascii()
    assert (root / "etc/systemd/system/octoprint@demo.service.d/50-octobrix.conf").exists()
    assert not (root / "etc/systemd/system/octoprint@two.service.d").exists()

    config.write_text(GOOD + "[printers.two]\nvirtual = true\nport = 5001\n")
    proc.send_signal(signal.SIGHUP)
    assert notify.wait_for("STATUS", "2 printers")["STATUS"] == "2 printers: 2 state unknown; 0 cameras"
    assert (root / "etc/systemd/system/octoprint@two.service.d/50-octobrix.conf").exists()


def test_stops_cleanly_on_sigterm(daemon: tuple[subprocess.Popen[str], NotifySocket, Path, Path]) -> None:
    proc, notify, _config, _root = daemon
    notify.wait_for("READY")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert notify.wait_for("STOPPING")["STOPPING"] == "1"
