"""systemctl and systemd-sysusers: the one boundary where systemd failures become typed errors."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from octobrixd.errors import CommandError, OctobrixError
from octobrixd.system.command import run

log = logging.getLogger(__name__)


class SystemdError(OctobrixError):
    """systemctl refused or failed; the message names the units and carries systemd's words."""


def _systemctl(args: Sequence[str], units: Sequence[str] = ()) -> None:
    try:
        run(["systemctl", *args, *units])
    except CommandError as exc:
        first = exc.stderr.strip().splitlines()[0] if exc.stderr.strip() else f"exit {exc.returncode}"
        raise SystemdError(
            f"systemctl {' '.join(args)} {' '.join(units)} failed: {first}",
            hint="see `systemctl status "
            + (units[0] if units else "")
            + "` and `journalctl -xeu "
            + (units[0] if units else "")
            + "`",
        ) from exc


def show(units: Sequence[str], properties: Sequence[str]) -> dict[str, dict[str, str]]:
    """properties of every unit (by its Id) from a single `systemctl show`; {} for no units."""
    if not units:
        return {}
    try:
        result = run(["systemctl", "show", "--property=" + ",".join(properties), "--", *units])
    except CommandError as error:
        raise SystemdError(
            f"cannot ask systemd about the instances: {error}", hint="is this a system running systemd?"
        ) from error
    found: dict[str, dict[str, str]] = {}
    for block in result.stdout.strip().split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        if "Id" in props:
            found[props["Id"]] = props
    return found


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
    """Those of units that run now (active, activating or reloading)."""
    if not units:
        return []
    result = run(["systemctl", "is-active", *units], check=False)
    states = result.stdout.split()
    return [unit for unit, state in zip(units, states, strict=False) if state in ("active", "activating", "reloading")]


def disable(units: Sequence[str]) -> None:
    if units:
        _systemctl(["disable"], units)


def is_active(unit: str) -> bool:
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
