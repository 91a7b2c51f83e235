"""How octobrixd sees a plugged printer's connection through, against a stand-in for OctoPrint's
connection API on loopback (the real OctoPrint does this in tests/lab/test_daemon_vm.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from octobrixd.config.model import parse_config
from octobrixd.daemon import Daemon, Notifier
from octobrixd.instances import connect as connect_module
from octobrixd.instances.seeding import load_or_create_credentials
from octobrixd.system.paths import Layout
from tests.httpstub import QuietHandler, serving


class FakeOctoPrint:
    """States to report, one per GET, the last repeated; records every command posted.

    Like OctoPrint 1.11, it ignores a connect while it still holds a connection object (any state
    but Offline/Closed), which is the case in "Error" and when it is stuck opening a port."""

    def __init__(self, states: list[str], after_connect: list[str]) -> None:
        self.states = list(states)
        self.after_connect = after_connect
        self.commands: list[dict[str, Any]] = []
        self.api_versions: list[str | None] = []  # the X-OctoPrint-Api-Version of each command

    def state(self) -> str:
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]

    @property
    def connects(self) -> list[dict[str, Any]]:
        return [c for c in self.commands if c["command"] == "connect"]

    def post(self, command: dict[str, Any]) -> None:
        self.commands.append(command)
        if command["command"] == "disconnect":
            self.states = ["Offline"]
        elif self.states[0].startswith(("Offline", "Closed")):
            self.states = list(self.after_connect)


@pytest.fixture
def octoprint() -> Iterator[tuple[FakeOctoPrint, int]]:
    fake = FakeOctoPrint(["Offline"], ["Operational"])

    class Handler(QuietHandler):
        def do_GET(self) -> None:
            self.reply(200, json.dumps({"current": {"state": fake.state()}}).encode())

        def do_POST(self) -> None:
            fake.api_versions.append(self.headers.get("X-OctoPrint-Api-Version"))
            fake.post(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.reply(200, b"{}")

    with serving(Handler) as port:
        yield fake, port


def make_daemon(tmp_path: Path, port: int, plugged: bool = True, pin: str = "") -> tuple[Daemon, Any]:
    text = f'[printers.p1]\nserial = "PRN0001"\nport = {port}\nbaudrate = 250000\n'
    config = parse_config(text + (f'octoprint = "{pin}"\n' if pin else ""), "/x.toml")
    layout = Layout(tmp_path)
    load_or_create_credentials(layout, "p1")
    if plugged:
        link = layout.device_link("p1")
        link.parent.mkdir(parents=True)
        link.symlink_to("/dev/null")
    return Daemon(tmp_path / "x.toml", layout, Notifier()), config


def fake_venv_with(root: Path, octoprint_version: str) -> None:
    """p1's venv as far as octobrix looks to learn its OctoPrint version: the dist-info folder's name."""
    site = root / "var/lib/octobrix/p1/venvs/v1/lib/python3.11/site-packages"
    (site / f"octoprint-{octoprint_version}.dist-info").mkdir(parents=True)
    (root / "var/lib/octobrix/p1/venv").symlink_to("venvs/v1")


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connect_module, "CONNECT_PATIENCE_SECONDS", 8.0)
    monkeypatch.setattr(connect_module, "SETTLE_SECONDS", 0.3)
    monkeypatch.setattr("time.sleep", lambda _s: None)


def test_an_offline_instance_is_asked_once_and_connects(octoprint: tuple[FakeOctoPrint, int], tmp_path: Path) -> None:
    fake, port = octoprint
    daemon, config = make_daemon(tmp_path, port)
    daemon.connections.connect(config, "p1")
    assert fake.connects == [
        {"command": "connect", "port": "/dev/octobrix/p1", "autoconnect": True, "baudrate": 250000}
    ]


V1_CONNECT = {"command": "connect", "port": "/dev/octobrix/p1", "autoconnect": True, "baudrate": 250000}
V2_CONNECT = {
    "command": "connect",
    "connector": "serial",
    "parameters": {"port": "/dev/octobrix/p1", "baudrate": 250000},
}


@pytest.mark.parametrize(
    ("venv", "asked"),
    [
        (("octoprint==2.0.0rc3", None), (V2_CONNECT, "2.0.0")),
        (("octoprint>=1.11", "2.0.0rc3"), (V2_CONNECT, "2.0.0")),
        (("octoprint==1.11.8", None), (V1_CONNECT, None)),
        (("octoprint==2.0.0rc3", "1.11.8"), (V1_CONNECT, None)),
    ],
    ids=["pinned-to-2.0", "2.0-installed", "pinned-to-1.11", "1.11-runs-until-the-new-pin-is-built"],
)
def test_each_octoprint_is_asked_in_its_own_connection_api(
    octoprint: tuple[FakeOctoPrint, int],
    tmp_path: Path,
    venv: tuple[str, str | None],
    asked: tuple[dict[str, Any], str | None],
) -> None:
    """OctoPrint 2.0 names the connector and takes its parameters as such, under API version 2.0.0;
    the version is the one in the venv (what answers now), the pin's while there is none.
    venv: (the pin, the OctoPrint in the venv); asked: (the connect posted, its API version)."""
    (pin, installed), (command, api_version) = venv, asked
    fake, port = octoprint
    daemon, config = make_daemon(tmp_path, port, pin=pin)
    if installed is not None:
        fake_venv_with(tmp_path, installed)
    daemon.connections.connect(config, "p1")
    assert fake.connects == [command]
    assert fake.api_versions == [api_version]


def test_a_connecting_or_printing_instance_is_never_asked(octoprint: tuple[FakeOctoPrint, int], tmp_path: Path) -> None:
    fake, port = octoprint
    fake.states = ["Opening serial connection", "Connecting", "Printing"]
    daemon, config = make_daemon(tmp_path, port)
    daemon.connections.connect(config, "p1")
    assert fake.connects == []


def test_an_error_after_a_quick_replug_is_retried_then_given_up(
    octoprint: tuple[FakeOctoPrint, int], tmp_path: Path
) -> None:
    fake, port = octoprint
    fake.states = ["Offline after error"]
    fake.after_connect = ["Opening serial connection", "Error: port busy"]
    daemon, config = make_daemon(tmp_path, port)
    daemon.connections.connect(config, "p1")
    assert len(fake.connects) == connect_module.CONNECT_ATTEMPTS


def test_an_unplugged_printer_is_not_asked_for(octoprint: tuple[FakeOctoPrint, int], tmp_path: Path) -> None:
    fake, port = octoprint
    daemon, config = make_daemon(tmp_path, port, plugged=False)
    daemon.connections.connect(config, "p1")
    assert fake.connects == []


def test_an_instance_stuck_opening_a_vanished_port_is_reset_then_connected(
    octoprint: tuple[FakeOctoPrint, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, port = octoprint
    fake.states = ["Opening serial connection"]
    clock = iter(range(0, 10_000, 5))
    monkeypatch.setattr("time.monotonic", lambda: float(next(clock)))
    monkeypatch.setattr(connect_module, "CONNECT_PATIENCE_SECONDS", 500.0)
    daemon, config = make_daemon(tmp_path, port)
    daemon.connections.connect(config, "p1")
    assert [c["command"] for c in fake.commands] == ["disconnect", "connect"]
    assert fake.state() == "Operational"


def test_an_instance_in_error_is_reset_before_it_is_asked(octoprint: tuple[FakeOctoPrint, int], tmp_path: Path) -> None:
    fake, port = octoprint
    fake.states = ["Error: Connection error, see Terminal tab"]
    daemon, config = make_daemon(tmp_path, port)
    daemon.connections.connect(config, "p1")
    assert [c["command"] for c in fake.commands] == ["disconnect", "connect"]
    assert fake.state() == "Operational"


def test_a_connection_that_drops_right_after_a_replug_is_asked_again(
    octoprint: tuple[FakeOctoPrint, int], tmp_path: Path
) -> None:
    fake, port = octoprint
    # OctoPrint still says Operational from before the cable was pulled, then notices.
    fake.states = ["Operational", "Offline after error"]
    daemon, config = make_daemon(tmp_path, port)
    daemon.connections.connect(config, "p1")
    assert len(fake.connects) == 1
