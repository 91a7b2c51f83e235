"""udevadm: reload rules and replay events so links follow the rules without a replug."""

from __future__ import annotations

from octobrixd.errors import CommandError, OctobrixError
from octobrixd.proc import run

# Only the subsystems octobrix writes rules for: replaying every device on the machine is slow
# and wakes up unrelated rules.
SUBSYSTEMS = ("tty", "video4linux")


class UdevError(OctobrixError):
    """udevadm failed."""


def reload_and_trigger() -> None:
    try:
        run(["udevadm", "control", "--reload"])
        matches = [f"--subsystem-match={subsystem}" for subsystem in SUBSYSTEMS]
        run(["udevadm", "trigger", "--action=change", "--settle", *matches])
    except CommandError as exc:
        raise UdevError(
            f"udev did not take the new rules: {exc}",
            hint="is systemd-udevd running? see `journalctl -u systemd-udevd`",
        ) from exc
