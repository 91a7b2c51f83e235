"""apply's system steps are one list: what apply_plan runs is what `apply --dry-run` says it runs."""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from octobrixd.apply import plan as apply_module
from octobrixd.apply.plan import apply_plan, make_plan
from octobrixd.config.model import parse_config
from octobrixd.farm.manifest import read_manifest
from octobrixd.frontdoor import apply as frontdoor_apply
from octobrixd.frontdoor import secrets
from octobrixd.frontdoor.secrets import Synced
from octobrixd.system import systemd, udev
from octobrixd.system.paths import Layout

FARM = """
[printers.printer1]
serial = "PRN0001"
port = 5001

[cameras.cam1]
serial = "CAM1"
port = 8081
"""
SYNC = "(the front door's secrets synced)"


class System:
    """A live system as octobrix's commands meet it: every command is recorded, none is run."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.ran: list[str] = []
        for module in (systemd, udev, frontdoor_apply):
            monkeypatch.setattr(module, "run", self.run)
        # udev runs, and neither USB serial driver is loaded yet (a first install).
        control = root / "run/udev/control"
        control.parent.mkdir(parents=True)
        control.touch()
        monkeypatch.setattr(udev, "CONTROL_SOCKET", control)
        devices = root / "proc/devices"
        devices.parent.mkdir(parents=True)
        devices.write_text("Character devices:\n  1 mem\n  4 tty\n")
        monkeypatch.setattr(udev, "PROC_DEVICES", devices)
        (root / "lib/modules" / os.uname().release).mkdir(parents=True)
        monkeypatch.setattr(udev, "MODULES_DIR", root / "lib/modules")
        monkeypatch.setattr(secrets, "sync", self.sync)
        # No instance users here: files are written as the test's own user.
        monkeypatch.setattr(apply_module, "_ids", lambda _layout, _owner: (-1, -1))

    def run(self, argv: Sequence[str], **_kwargs: Any) -> subprocess.CompletedProcess[str]:
        self.ran.append(shlex.join(argv).replace(str(self.root), ""))
        return subprocess.CompletedProcess(list(argv), 0, "", "")

    def sync(self, _layout: Layout, _printers: Sequence[str]) -> Synced:
        self.ran.append(SYNC)
        return Synced(nginx_changed=False, web_changed=False)


def test_apply_runs_exactly_the_commands_the_dry_run_lists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layout = Layout(tmp_path)
    previous = read_manifest(layout)
    plan = make_plan(parse_config(FARM, "/etc/octobrix.toml"), layout, previous)
    system = System(tmp_path, monkeypatch)
    monkeypatch.setattr(Layout, "live", property(lambda _self: True))

    apply_plan(plan, layout, previous, busy=lambda _name: False)

    listed = [SYNC if command.startswith("sync the front door's secrets") else command for command in plan.commands()]
    assert system.ran == listed
    # What the dry run once left out: the serial drivers' modprobe and the front door's secrets.
    assert "modprobe -a usbserial cdc_acm" in plan.commands()
    assert any(command.startswith("sync the front door's secrets") for command in plan.commands())
    assert system.ran[:2] == ["systemd-sysusers /etc/sysusers.d/octobrix.conf", "modprobe -a usbserial cdc_acm"]
    assert system.ran[-3:] == ["nginx -t -q", "systemctl reload-or-restart nginx.service",
                               "systemctl try-restart octobrix-web.service"]  # fmt: skip


def test_a_second_apply_runs_what_it_lists_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A port change: the instance restarts (daemon-reload, try-restart), udev is left alone."""
    layout = Layout(tmp_path)
    previous = read_manifest(layout)
    apply_plan(make_plan(parse_config(FARM, "/etc/octobrix.toml"), layout, previous), layout, previous)
    previous = read_manifest(layout)
    plan = make_plan(parse_config(FARM.replace("5001", "5009"), "/etc/octobrix.toml"), layout, previous)
    system = System(tmp_path, monkeypatch)
    monkeypatch.setattr(Layout, "live", property(lambda _self: True))

    apply_plan(plan, layout, previous, busy=lambda _name: False)

    assert "systemctl try-restart octoprint@printer1.service" in system.ran
    assert system.ran == [SYNC if c.startswith("sync the front door's secrets") else c for c in plan.commands()]


def test_an_apply_that_only_starts_a_failed_printer_still_syncs_the_front_door(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The secrets can change with no file of the plan (a restored printer's keys): every live apply
    syncs them, listed before the failed unit is started again."""
    layout = Layout(tmp_path)
    config = parse_config(FARM, "/etc/octobrix.toml")
    previous = read_manifest(layout)
    apply_plan(make_plan(config, layout, previous), layout, previous)
    previous = read_manifest(layout)
    plan = make_plan(config, layout, previous, failed=["octoprint@printer1.service"])
    assert plan.recover == ("octoprint@printer1.service",) and not plan.files
    system = System(tmp_path, monkeypatch)
    monkeypatch.setattr(Layout, "live", property(lambda _self: True))

    apply_plan(plan, layout, previous, busy=lambda _name: False)

    assert system.ran == [SYNC, "systemctl reset-failed octoprint@printer1.service",
                          "systemctl start octoprint@printer1.service"]  # fmt: skip
    assert system.ran == [SYNC if c.startswith("sync the front door's secrets") else c for c in plan.commands()]
