"""udevadm: reload rules and replay events so links follow the rules without a replug."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from octobrixd.errors import CommandError, OctobrixError
from octobrixd.names import SUBSYSTEMS
from octobrixd.system.command import run

log = logging.getLogger(__name__)

# udevd's control socket: absent where udev does not run (containers, chroots).
CONTROL_SOCKET = Path("/run/udev/control")


class UdevError(OctobrixError):
    """udevadm failed."""


def reload_and_trigger() -> bool:
    """Reload rules and replay tty/video events. False (and nothing done) where udev is not running."""
    if not CONTROL_SOCKET.exists():
        log.warning(
            "udev is not running here (a container?): the rules are written, but no /dev/octobrix links "
            "will appear until they run on a system with udev"
        )
        return False
    try:
        run(["udevadm", "control", "--reload"])
        matches = [f"--subsystem-match={subsystem}" for subsystem in SUBSYSTEMS]
        run(["udevadm", "trigger", "--action=change", "--settle", *matches])
    except CommandError as exc:
        raise UdevError(
            f"udev did not take the new rules: {exc}",
            hint="is systemd-udevd running? see `journalctl -u systemd-udevd`",
        ) from exc
    return True


# The device groups octoprint@.service allows (DeviceAllow=char-ttyUSB, char-ttyACM) and the
# modules that register them: systemd resolves the names only if they are registered at start.
SERIAL_DRIVERS = {"ttyUSB": "usbserial", "ttyACM": "cdc_acm"}
PROC_DEVICES = Path("/proc/devices")
MODULES_DIR = Path("/lib/modules")


def load_serial_drivers() -> None:
    """Load the USB serial drivers if their device groups are not registered yet (first install,
    before the boot-time modules-load.d entry has ever run)."""
    try:
        registered = {line.split()[-1] for line in PROC_DEVICES.read_text().splitlines() if line.strip()}
    except OSError:
        return
    missing = [module for group, module in SERIAL_DRIVERS.items() if group not in registered]
    if not missing or not (MODULES_DIR / os.uname().release).is_dir():
        # No modules for this kernel here (a container): nothing to load, nothing to warn about.
        return
    result = run(["modprobe", "-a", *missing], check=False)
    if result.returncode != 0:
        log.warning(
            "could not load %s (%s): printers plugged in later may be refused to their OctoPrint until a reboot",
            " ".join(missing),
            result.stderr.strip() or f"exit {result.returncode}",
        )
