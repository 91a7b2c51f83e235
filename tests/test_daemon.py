"""octobrixd under --root with a real sd_notify socket: ready, reload, bad edits keep the last good config."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from octobrixd.config.model import parse_config
from octobrixd.daemon import Daemon, MainLoop, Notifier
from octobrixd.devices.hotplug import Action, DeviceEvent
from octobrixd.errors import CommandError
from octobrixd.names import DeviceKind
from octobrixd.system import systemd
from octobrixd.system.paths import Layout
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


# What the daemon meets when /var/lib/octobrix is not its to read (a hand-made chmod, a stray mount):
def daemon_running(code: str, tmp_path: Path, *extra: str) -> tuple[subprocess.Popen[str], NotifySocket, Path]:
    """octobrixd run by CODE (which changes one thing in it first) on GOOD under --root, with a notify socket."""
    config = tmp_path / "octobrix.toml"
    config.write_text(GOOD)
    notify = NotifySocket(tmp_path / "notify.sock")
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "--config", str(config), "--root", str(tmp_path / "root"), *extra],
        env=dict(os.environ, NOTIFY_SOCKET=str(notify.path)),
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
    )
    return proc, notify, config


# as root under --root no real permission is denied, so the manifest read is made to raise it.
RAISING_DAEMON = """
import sys
import octobrixd.daemon as daemon

def denied(layout):
    raise PermissionError(13, "Permission denied", "/var/lib/octobrix/.manifest.json")

daemon.read_manifest = denied
sys.exit(daemon.main(sys.argv[1:]))
"""


def test_an_exception_in_a_background_job_is_logged_and_reported_and_the_daemon_goes_on(tmp_path: Path) -> None:
    proc, notify, _config = daemon_running(RAISING_DAEMON, tmp_path)
    try:
        # No hang: READY=1 comes (within the socket's 15 s), and STATUS= says what went wrong.
        notify.wait_for("READY")
        status = notify.wait_for("STATUS", "PermissionError")["STATUS"]
        assert "reconcile failed: PermissionError: [Errno 13] Permission denied" in status
        assert "/var/lib/octobrix/.manifest.json" in status and "journalctl -u octobrixd" in status
        # It goes on: a reload runs the job again (and it fails again, as visibly).
        proc.send_signal(signal.SIGHUP)
        assert "PermissionError" in notify.wait_for("STATUS", "reconcile failed")["STATUS"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        _out, err = proc.communicate()
    assert "ERROR reconcile failed: PermissionError: [Errno 13] Permission denied" in err
    assert "Traceback (most recent call last)" in err and ", in denied\n" in err


# The user saves a broken edit while octobrixd applies the one before: the file changes in the
# middle of the first apply, and no SIGHUP follows (systemd merges the reload that edit asks for into
# the one still running, as tests/lab/test_daemon_vm.py met it in the VM).
EDITED_DURING_APPLY = """
import sys
from pathlib import Path
import octobrixd.daemon as daemon

real_apply_plan = daemon.apply_plan

def apply_plan(plan, layout, previous, **options):
    done = real_apply_plan(plan, layout, previous, **options)
    config = Path(sys.argv[2])
    if "printer2" not in config.read_text():
        config.write_text(config.read_text() + sys.argv[-1])
    return done

daemon.apply_plan = apply_plan
sys.exit(daemon.main(sys.argv[1:-1]))
"""


def test_an_edit_saved_while_the_last_one_applies_is_applied_without_a_signal(tmp_path: Path) -> None:
    clash = "\n[printers.printer2]\nvirtual = true\nport = 5000\n"
    proc, notify, config = daemon_running(EDITED_DURING_APPLY, tmp_path, clash)
    try:
        notify.wait_for("READY")
        status = notify.wait_for("STATUS", "config error")["STATUS"]
        assert "printers.printer2.port" in status or "5000 is also used" in status, status
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
        _out, err = proc.communicate()
    assert f"{config} changed while it was applied: applying it again" in err


def test_an_exception_in_a_connect_call_is_logged_with_its_traceback_and_shown_in_status(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    daemon = Daemon(tmp_path / "octobrix.toml", Layout(tmp_path / "root"), Notifier())
    woken = threading.Event()
    daemon.refresh_status = woken.set

    def connect(name: str) -> None:
        raise PermissionError(13, "Permission denied", f"/var/lib/octobrix/.secrets/{name}.json")

    daemon.submit(daemon.api_calls, "connecting printer bench", connect, "bench")
    assert woken.wait(10)
    assert daemon.summary() == (
        "connecting printer bench failed: PermissionError: [Errno 13] Permission denied: "
        "'/var/lib/octobrix/.secrets/bench.json'"
    )
    record = next(r for r in caplog.records if r.getMessage().startswith("connecting printer bench failed"))
    assert record.levelname == "ERROR" and record.exc_info is not None
    # The next call of the same kind that succeeds clears it.
    woken.clear()
    daemon.submit(daemon.api_calls, "connecting printer bench", lambda _name: None, "bench")
    assert woken.wait(10)
    assert daemon.summary() == "no valid config yet"
    daemon.api_calls.shutdown(wait=True)


def test_a_camera_health_check_that_raises_is_shown_in_status_and_the_looks_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon = Daemon(tmp_path / "octobrix.toml", Layout(tmp_path / "root"), Notifier())
    daemon.config = parse_config('[cameras.cam1]\nserial = "SN1"\nport = 8081\n', "/etc/octobrix.toml")
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT,
                                                                   signal.SIGUSR1)}  # fmt: skip
    try:
        loop = MainLoop(daemon)
        loop.health_every = 30.0  # a scratch root is not live: the daemon would not look at all

        def broken(_config: object) -> bool:
            raise PermissionError(13, "Permission denied", "/run/octobrix/camera-health.json")

        monkeypatch.setattr(daemon.health, "check", broken)
        loop.health_job.request()
        loop.health_job.thread.join(10)  # type: ignore[union-attr]
        loop._on_cameras_checked()  # a JobFailed out of here would end the main loop
        assert "camera-health failed: PermissionError: [Errno 13] Permission denied" in daemon.summary()
        assert loop.health_at is not None, "the next look is still due"

        monkeypatch.setattr(daemon.health, "check", lambda _config: False)
        loop.health_at = None
        loop.health_job.request()
        loop.health_job.thread.join(10)  # type: ignore[union-attr]
        loop._on_cameras_checked()
        assert "camera-health" not in daemon.summary(), "a look that works clears it"
    finally:
        signal.set_wakeup_fd(-1)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


class Systemctl:
    """systemctl as recorded argv: the unit is in STATE; set-property answers REFUSAL when one is set."""

    def __init__(self, state: str, refusal: str = "") -> None:
        self.state = state
        self.refusal = refusal
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str], **options: Any) -> subprocess.CompletedProcess[str]:
        self.calls.append(list(argv))
        if argv[1] == "is-active":
            return subprocess.CompletedProcess(list(argv), 0 if self.state == "active" else 3, f"{self.state}\n", "")
        if argv[1] == "set-property" and self.refusal:
            raise CommandError(list(argv), 1, self.refusal + "\n")
        return subprocess.CompletedProcess(list(argv), 0, "", "")


def plug_bench(systemctl: Systemctl, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Daemon:
    """octobrixd on a live system (systemctl recorded) sees printer bench plugged in, and connects it."""
    monkeypatch.setattr(systemd, "run", systemctl)
    daemon = Daemon(tmp_path / "octobrix.toml", Layout(), Notifier())
    daemon.config = parse_config('[printers.bench]\nserial = "PRN1"\nport = 5000\n', "/etc/octobrix.toml")
    done = threading.Event()
    daemon.refresh_status = done.set
    monkeypatch.setattr(daemon.connections, "connect", lambda _config, name: systemctl.calls.append(["connect", name]))
    daemon.on_device(DeviceEvent(Action.ADD, "tty", "/dev/ttyACM0", "bench", DeviceKind.PRINTER, usb=True))
    daemon.api_calls.shutdown(wait=True)
    return daemon


SET_PROPERTY = [
    "systemctl",
    "set-property",
    "--runtime",
    "octoprint@bench.service",
    "DeviceAllow=",
    "DeviceAllow=/dev/octobrix/bench rw",
]


def test_a_printer_plugged_in_is_let_into_its_running_octoprint_before_it_connects(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Its unit allows only /dev/octobrix/bench, resolved when it started (maybe with no printer there):
    # systemd resolves the link again, never restarting OctoPrint.
    systemctl = Systemctl("active")
    daemon = plug_bench(systemctl, monkeypatch, tmp_path)
    is_active = ["systemctl", "is-active", "octoprint@bench.service"]
    assert systemctl.calls == [is_active, SET_PROPERTY, ["connect", "bench"]]
    assert not any("restart" in " ".join(call) for call in systemctl.calls)
    assert daemon.summary().startswith("1 printer")


def test_a_printer_whose_octoprint_is_stopped_is_not_touched_its_start_resolves_the_device(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    systemctl = Systemctl("inactive")
    plug_bench(systemctl, monkeypatch, tmp_path)
    assert systemctl.calls == [["systemctl", "is-active", "octoprint@bench.service"], ["connect", "bench"]]


def test_a_refused_set_property_still_connects_and_is_shown_in_status(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    systemctl = Systemctl("active", refusal="Failed to set unit properties: Access denied")
    daemon = plug_bench(systemctl, monkeypatch, tmp_path)
    assert systemctl.calls[-1] == ["connect", "bench"], "the device may have come back as the same node"
    assert (
        "connecting printer bench failed: SystemdError: could not let octoprint@bench.service open its device again "
        "(Failed to set unit properties: Access denied)"
    ) in daemon.summary()
