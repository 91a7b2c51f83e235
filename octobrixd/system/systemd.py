"""systemctl and systemd-sysusers: the one boundary where systemd failures become typed errors."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from octobrixd.errors import CommandError, OctobrixError
from octobrixd.system.command import run

log = logging.getLogger(__name__)


class UnitState(StrEnum):
    """systemd's ActiveState of a unit."""

    ACTIVE = "active"
    RELOADING = "reloading"
    REFRESHING = "refreshing"
    ACTIVATING = "activating"
    DEACTIVATING = "deactivating"
    INACTIVE = "inactive"
    FAILED = "failed"
    MAINTENANCE = "maintenance"

    @classmethod
    def of(cls, text: str) -> UnitState | None:
        """The state systemd printed; None for nothing, or a word this systemd does not know yet."""
        try:
            return cls(text)
        except ValueError:
            return None


# From the start of its start to the end of its stop the unit's processes may run: a unit that is
# starting, reloading or stopping has them as much as an active one.
RUNNING_STATES = frozenset(
    {UnitState.ACTIVATING, UnitState.ACTIVE, UnitState.RELOADING, UnitState.REFRESHING, UnitState.DEACTIVATING}
)


def is_running(state: UnitState | None) -> bool:
    """Whether a unit in this state runs (its processes may be there): the one answer octobrix gives."""
    return state in RUNNING_STATES


# What systemd prints for a numeric property without a value ((uint64_t) -1).
UNSET = "18446744073709551615"
# What octobrix asks of every unit, in one `systemctl show` for all of them.
PROPERTIES = (
    "Id",
    "LoadState",
    "ActiveState",
    "SubState",
    "MainPID",
    "ActiveEnterTimestampMonotonic",
    "MemoryCurrent",
    "CPUUsageNSec",
    "ControlGroup",
    # How the last run ended, for a failed instance (recovery.cause).
    "Result",
    "ExecMainCode",
    "ExecMainStatus",
    "NRestarts",
)


def _number(props: Mapping[str, str], key: str) -> int | None:
    value = props.get(key, "")
    return int(value) if value.isdigit() and value != UNSET else None


@dataclass(frozen=True)
class UnitProperties:
    """What systemd says of one unit, typed once. The defaults are what it says of nothing."""

    id: str = ""
    load_state: str = ""  # LoadState: "loaded", "not-found" (no such unit file)...
    state: UnitState | None = None  # ActiveState; None: systemd did not say
    sub_state: str = ""  # SubState: "running", "auto-restart", "dead"...
    main_pid: int | None = None  # MainPID; None for systemd's 0 (no main process)
    active_since_usec: int | None = None  # ActiveEnterTimestampMonotonic; None for 0 (never active)
    memory_bytes: int | None = None  # MemoryCurrent; None: unset (no memory accounting)
    cpu_nsec: int | None = None  # CPUUsageNSec; None: unset
    control_group: str = ""
    result: str = ""  # Result of the last run: "success", "exit-code", "signal", "oom-kill"...
    exec_main_code: int | None = None  # ExecMainCode: 1 exited, 2 killed, 3 dumped core (CLD_*)
    exec_main_status: int | None = None  # ExecMainStatus: the exit status, or the signal
    restarts: int | None = None  # NRestarts: systemd's automatic restarts since the unit was started

    @classmethod
    def parse(cls, props: Mapping[str, str]) -> UnitProperties:
        """From `systemctl show`'s key=value pairs of one unit (missing keys take the defaults)."""
        return cls(
            id=props.get("Id", ""),
            load_state=props.get("LoadState", ""),
            state=UnitState.of(props.get("ActiveState", "")),
            sub_state=props.get("SubState", ""),
            main_pid=_number(props, "MainPID") or None,
            active_since_usec=_number(props, "ActiveEnterTimestampMonotonic") or None,
            memory_bytes=_number(props, "MemoryCurrent"),
            cpu_nsec=_number(props, "CPUUsageNSec"),
            control_group=props.get("ControlGroup", ""),
            result=props.get("Result", ""),
            exec_main_code=_number(props, "ExecMainCode"),
            exec_main_status=_number(props, "ExecMainStatus"),
            restarts=_number(props, "NRestarts"),
        )

    @property
    def installed(self) -> bool:
        return self.load_state != "not-found"

    @property
    def running(self) -> bool:
        return is_running(self.state)

    @property
    def failed(self) -> bool:
        return self.state is UnitState.FAILED


NOTHING = UnitProperties()


class SystemdError(OctobrixError):
    """systemctl refused or failed; the message names the units and carries systemd's words."""


def failure_hint(units: Sequence[str]) -> str:
    """Where systemd says more: the first unit's status and journal, or the journal's latest lines."""
    if units:
        return f"see `systemctl status {units[0]}` and `journalctl -xeu {units[0]}`"
    return "see `systemctl status` and `journalctl -xe` (the latest lines say what systemd refused)"


def _systemctl(args: Sequence[str], units: Sequence[str] = ()) -> None:
    try:
        run(["systemctl", *args, *units])
    except CommandError as exc:
        first = exc.stderr.strip().splitlines()[0] if exc.stderr.strip() else f"exit {exc.returncode}"
        raise SystemdError(
            f"{' '.join(['systemctl', *args, *units])} failed: {first}", hint=failure_hint(units)
        ) from exc


def parse_show(text: str) -> dict[str, UnitProperties]:
    """`systemctl show`'s key=value blocks (one per unit, a blank line between) by unit Id."""
    found: dict[str, UnitProperties] = {}
    for block in text.strip().split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if "Id" in props:
            found[props["Id"]] = UnitProperties.parse(props)
    return found


def show(units: Sequence[str]) -> dict[str, UnitProperties]:
    """The properties of every unit (by its Id) from a single `systemctl show`; {} for no units."""
    if not units:
        return {}
    try:
        result = run(["systemctl", "show", "--property=" + ",".join(PROPERTIES), "--", *units])
    except CommandError as error:
        raise SystemdError(
            f"cannot ask systemd about the instances: {error}", hint="is this a system running systemd?"
        ) from error
    return parse_show(result.stdout)


def main_pid(unit: str) -> int:
    """The unit's main process; 0 while it has none (stopped)."""
    value = run(["systemctl", "show", "--property=MainPID", "--value", "--", unit]).stdout.strip()
    return int(value) if value.isdigit() else 0


def daemon_reload() -> None:
    _systemctl(["daemon-reload"])


def enable_and_start(units: Sequence[str]) -> None:
    if units:
        _systemctl(["enable", "--now"], units)


def restart_if_running(units: Sequence[str]) -> None:
    # try-restart: an instance the user stopped on purpose stays stopped after a config change.
    if units:
        _systemctl(["try-restart"], units)


def disable_and_stop(units: Sequence[str]) -> None:
    if units:
        _systemctl(["disable", "--now"], units)


def active(units: Sequence[str]) -> list[str]:
    """Those of units that run now (is_running: starting, up, or still stopping)."""
    if not units:
        return []
    result = run(["systemctl", "is-active", *units], check=False)
    states = result.stdout.split()
    return [unit for unit, state in zip(units, states, strict=False) if is_running(UnitState.of(state))]


def allow_device_again(unit: str, device_allow: str) -> bool:
    """Have a running unit's device filter resolve DEVICE_ALLOW ("PATH rw", PATH a link under /dev)
    again now, so a device plugged in after the unit started is allowed without restarting it.
    Returns whether it asked (False: the unit does not run, and a start resolves the path anyway).

    What systemd does (read in its source, v252 as Debian 12 has it, and the same since):
    - `systemctl set-property UNIT "DeviceAllow=" "DeviceAllow=PATH rw"`: systemctl sends an empty
      value as an empty a(ss) array (bus-unit-util.c); PID1's bus_cgroup_set_property() (dbus-cgroup.c)
      empties the unit's whole list on an empty array and appends the entries that follow, so the list
      is exactly PATH. Each call invalidates the unit's device controller
      (unit_invalidate_cgroup(u, CGROUP_MASK_DEVICES)), even when the list is unchanged, and writes
      "DeviceAllow=" plus the list into a drop-in (--runtime: under /run/systemd/system.control/,
      gone at reboot; it says what the printer's own drop-in says).
    - Realizing it again (cgroup.c's cgroup_apply_devices() -> bpf_devices_allow_list_device()) stat()s
      a /dev/ path, following the link, and allows the major:minor found now. A path missing then is
      skipped with "Couldn't stat device" in the journal; DevicePolicy=closed's pseudo devices stay.
    A udev RUN+= could call the same, but udev runs it inside event processing, with a time limit and
    nothing but the journal to see a failure; octobrixd sees the same event after udev made the link,
    asks before connecting OctoPrint to the printer, reports a failure in its STATUS=, and replays the
    plugged-in printers when it starts.
    """
    if not active([unit]):
        return False
    args = ["set-property", "--runtime", unit, "DeviceAllow=", f"DeviceAllow={device_allow}"]
    try:
        run(["systemctl", *args])
    except CommandError as exc:
        first = exc.stderr.strip().splitlines()[0] if exc.stderr.strip() else f"exit {exc.returncode}"
        raise SystemdError(f"could not let {unit} open its device again ({first})", hint=failure_hint([unit])) from exc
    return True


def disable(units: Sequence[str]) -> None:
    if units:
        _systemctl(["disable"], units)


def is_active(unit: str) -> bool:
    """Whether the unit is up (systemctl is-active: active or reloading), not starting or stopping."""
    try:
        return run(["systemctl", "is-active", "--quiet", unit], check=False).returncode == 0
    except OctobrixError:
        return False


def start(units: Sequence[str], *, wait: bool = False) -> None:
    # --no-block unless asked to wait: the daemon's main loop must not wait on a unit's start-up.
    if units:
        _systemctl(["start"] if wait else ["start", "--no-block"], units)


def stop(units: Sequence[str], *, wait: bool = False) -> None:
    if units:
        _systemctl(["stop"] if wait else ["stop", "--no-block"], units)


def reset_failed(units: Sequence[str]) -> None:
    # Also clears the unit's start-rate counter, so the start that follows is not refused.
    if units:
        _systemctl(["reset-failed"], units)


def journal_tail(unit: str, lines: int) -> list[str]:
    """The last lines a unit logged, as `journalctl -u UNIT` shows them; [] where the journal is
    not readable (no root, no journal)."""
    try:
        result = run(["journalctl", "--no-pager", "--quiet", "-o", "short", "-n", str(lines), "-u", unit])
    except OctobrixError as exc:
        log.debug("cannot read the journal of %s: %s", unit, exc)
        return []
    return [line for line in result.stdout.splitlines() if line.strip()]


def create_users(sysusers_file: Path) -> None:
    try:
        run(["systemd-sysusers", str(sysusers_file)])
    except CommandError as exc:
        raise SystemdError(
            f"could not create the instance users: {exc.stderr.strip() or exc}",
            hint=f"check {sysusers_file} and run `systemd-sysusers {sysusers_file}` by hand",
        ) from exc


def reload_or_start(units: Sequence[str]) -> None:
    # A running nginx re-reads its config and keeps every open connection; a stopped one starts.
    if units:
        _systemctl(["reload-or-restart"], units)


def try_reload(units: Sequence[str]) -> None:
    # A running octobrixd re-reads the config (SIGHUP); a stopped one stays stopped.
    if units:
        _systemctl(["try-reload-or-restart"], units)
