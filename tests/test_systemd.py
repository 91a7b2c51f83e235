"""systemd's words, typed once: unit states, `systemctl show`'s properties, and systemctl's failures."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from octobrixd.errors import CommandError
from octobrixd.system import systemd
from octobrixd.system.systemd import SystemdError, UnitProperties, UnitState, is_running, parse_show

SHOWN = """Id=octoprint@demo.service
LoadState=loaded
ActiveState=active
SubState=running
MainPID=4242
ActiveEnterTimestampMonotonic=6400000000
MemoryCurrent=94371840
CPUUsageNSec=36000000000
ControlGroup=/system.slice/system-octoprint.slice/octoprint@demo.service
Result=success
ExecMainCode=0
ExecMainStatus=0
NRestarts=0

Id=octoprint@prusa.service
LoadState=loaded
ActiveState=failed
SubState=failed
MainPID=0
ActiveEnterTimestampMonotonic=0
MemoryCurrent=18446744073709551615
CPUUsageNSec=18446744073709551615
ControlGroup=
Result=exit-code
ExecMainCode=1
ExecMainStatus=3
NRestarts=5

Id=octoprint@gone.service
LoadState=not-found
ActiveState=inactive
SubState=dead
"""


def test_show_is_parsed_once_into_typed_properties() -> None:
    units = parse_show(SHOWN)
    assert list(units) == ["octoprint@demo.service", "octoprint@prusa.service", "octoprint@gone.service"]
    demo, prusa, gone = units.values()
    assert demo == UnitProperties(
        id="octoprint@demo.service",
        load_state="loaded",
        state=UnitState.ACTIVE,
        sub_state="running",
        main_pid=4242,
        active_since_usec=6_400_000_000,
        memory_bytes=90 * 1_048_576,
        cpu_nsec=36 * 10**9,
        control_group="/system.slice/system-octoprint.slice/octoprint@demo.service",
        result="success",
        exec_main_code=0,
        exec_main_status=0,
        restarts=0,
    )
    assert demo.running and demo.installed and not demo.failed
    # systemd's "no value" (2^64 - 1) and its 0 for "no process" / "never active" are None.
    assert (prusa.main_pid, prusa.active_since_usec, prusa.memory_bytes, prusa.cpu_nsec) == (None,) * 4
    assert (prusa.state, prusa.exec_main_code, prusa.exec_main_status, prusa.restarts) == (UnitState.FAILED, 1, 3, 5)
    assert prusa.failed and not prusa.running
    assert not gone.installed and gone.state is UnitState.INACTIVE


def test_a_state_systemd_did_not_say_or_this_octobrix_does_not_know_is_none() -> None:
    assert UnitProperties.parse({}).state is None
    assert UnitProperties.parse({"ActiveState": "something-new"}).state is None
    assert not is_running(None)


@pytest.mark.parametrize(
    ("state", "running"),
    [
        (UnitState.ACTIVE, True),
        (UnitState.RELOADING, True),
        (UnitState.REFRESHING, True),
        (UnitState.ACTIVATING, True),
        (UnitState.DEACTIVATING, True),
        (UnitState.INACTIVE, False),
        (UnitState.FAILED, False),
        (UnitState.MAINTENANCE, False),
    ],
)
def test_running_is_from_the_start_of_its_start_to_the_end_of_its_stop(state: UnitState, running: bool) -> None:
    assert is_running(state) is running
    assert UnitState.of(str(state)) is state


def test_active_lists_the_units_that_run(monkeypatch: pytest.MonkeyPatch) -> None:
    said = "active\nactivating\ndeactivating\nfailed\ninactive\n"

    class Done:
        stdout = said

    monkeypatch.setattr(systemd, "run", lambda *_a, **_k: Done())
    units = ["a.service", "b.service", "c.service", "d.service", "e.service"]
    assert systemd.active(units) == ["a.service", "b.service", "c.service"]


def refusing(argv: Sequence[str], **_kwargs: Any) -> None:
    raise CommandError(list(argv), 1, "Access denied\n")


def test_a_refused_systemctl_without_units_still_says_where_to_look(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(systemd, "run", refusing)
    with pytest.raises(SystemdError) as caught:
        systemd.daemon_reload()
    assert caught.value.message == "systemctl daemon-reload failed: Access denied"
    hint = caught.value.hint or ""
    assert "journalctl -xe" in hint and "systemctl status" in hint
    assert "``" not in hint and "status `" not in hint, "no command with an empty unit name"


def test_a_refused_systemctl_names_its_first_unit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(systemd, "run", refusing)
    with pytest.raises(SystemdError) as caught:
        systemd.enable_and_start(["octoprint@demo.service", "ustreamer@cam1.service"])
    assert caught.value.hint == (
        "see `systemctl status octoprint@demo.service` and `journalctl -xeu octoprint@demo.service`"
    )
