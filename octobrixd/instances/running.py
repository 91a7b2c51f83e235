"""The OctoPrint an instance runs now: the port it serves on and whether its printer prints.

Read from systemd, /proc and the instance's drop-in, never from the config: after a change held back
for a print, the config (and soon the drop-in) names the new port while the old OctoPrint prints on.
apply, octobrixd, the backups and the upgrades ask before they restart anything; status asks for the
port of a held-back instance.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable

from octobrixd.instances import api as octoprint_api
from octobrixd.instances.credentials import read_credentials
from octobrixd.names import dropin, octoprint_unit
from octobrixd.system import paths, systemd
from octobrixd.system.paths import Layout

_DROPIN_PORT_RE = re.compile(r"^Environment=OCTOBRIX_PORT=(\d+)$", re.MULTILINE)


def running_port(layout: Layout, pid: int | None) -> int | None:
    """The port the OctoPrint whose main process is PID was started on (`--port N` in its command line).

    Not the drop-in's: after a change held back for a print, the drop-in already names the new
    port, or is gone with a printer removed from the config, while the old OctoPrint still prints.
    """
    if not pid:
        return None
    try:
        argv = layout.path(f"proc/{pid}/cmdline").read_bytes().decode("utf-8", "replace").split("\0")
    except OSError:
        return None
    for flag, value in itertools.pairwise(argv):
        if flag == "--port" and value.isdigit():
            return int(value)
    return None


def dropin_port(layout: Layout, name: str) -> int | None:
    """The port printer NAME's drop-in gives its OctoPrint (what a start now would serve on)."""
    try:
        text = layout.path(paths.UNIT_DIR / dropin(octoprint_unit(name))).read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    found = _DROPIN_PORT_RE.search(text)
    return int(found[1]) if found else None


def _port_of(layout: Layout, name: str, pid: int) -> int | None:
    if not pid:
        return None
    return running_port(layout, pid) or dropin_port(layout, name)


def serving_port(layout: Layout, name: str) -> int | None:
    """The port printer NAME's OctoPrint runs on; None while it is stopped (or under --root)."""
    return _port_of(layout, name, systemd.main_pid(octoprint_unit(name)) if layout.live else 0)


def printing_now(layout: Layout) -> Callable[[str], bool]:
    """Whether printer NAME is printing, asked of the OctoPrint that runs, on the port it runs on."""

    def busy(name: str) -> bool:
        credentials = read_credentials(layout, name)
        pid = systemd.main_pid(octoprint_unit(name))
        if credentials is None or not pid:
            # Not set up, or not running: nothing to interrupt.
            return False
        port = _port_of(layout, name, pid)
        if port is None:
            return False
        return octoprint_api.is_busy(port, credentials.api_key)

    return busy
