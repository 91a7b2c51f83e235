"""KIAUH's OctoPrint instances, found by their units as KIAUH itself finds them.

What KIAUH writes (read in github.com/dw-0/kiauh: the bash scripts/install_octoprint.sh of 2021,
scripts/octoprint.sh of 2022-2025, and the Python kiauh/extensions/octoprint/ of KIAUH 6):
- one unit per instance, /etc/systemd/system/octoprint-SUFFIX.service (a dash; SUFFIX is the Klipper
  instance's, letters and digits, KIAUH matches `octoprint(-[0-9a-zA-Z]+)?.service`), with User= the
  user who ran KIAUH and `ExecStart=VENV/bin/octoprint --basedir BASEDIR --config BASEDIR/config.yaml
  --port=N serve` (ports from 5000 up);
- the basedir ~/.octoprint_SUFFIX (2021: ~/.octoprint-N), whose config.yaml points the serial port at
  Klipper's pty ~/printer_SUFFIX_data/comms/klippy.serial (for a named suffix: ~/SUFFIX_data/...);
- the venv: ~/OctoPrint_SUFFIX/venv (2022-2025, one copy per instance), ~/OctoPrint_SUFFIX (KIAUH 6),
  or ~/OctoPrint/venv shared by all (2021); so it is taken from ExecStart, not guessed;
- no udev rule (Klipper owns the board), only /etc/sudoers.d/octoprint-shutdown.
A single KIAUH OctoPrint is octoprint.service with ~/.octoprint: the plain reader's (plain.py).

Its OctoPrints talk to Klipper's klippy.serial, not to a USB board, so octobrix cannot bind them by
themselves: they come over with their data and a message saying what to set."""

from __future__ import annotations

import re

from octobrixd.importers.sources import (
    UNIT_DIR,
    Found,
    OldPrinter,
    Source,
    by_serial_port,
    home_of,
    inside,
    parse_unit,
    read_text,
    venv_of,
)
from octobrixd.system.paths import Layout

UNIT_RE = re.compile(r"^octoprint-([0-9A-Za-z]+)\.service$")
BASEDIR_PREFIX = ".octoprint_"
VENV_PREFIX = "OctoPrint_"


def present(layout: Layout) -> bool:
    return bool(discover(layout).printers)


def discover(layout: Layout) -> Found:
    printers: list[OldPrinter] = []
    notes: list[str] = []
    unit_dir = layout.path(UNIT_DIR)
    for path in sorted(unit_dir.glob("octoprint-*.service")) if unit_dir.is_dir() else ():
        match = UNIT_RE.match(path.name)
        if match is None or path.is_dir():
            continue  # not a name KIAUH gives
        suffix = match[1]
        where = f"/{UNIT_DIR / path.name}"
        facts = parse_unit(read_text(path) or "")
        home = home_of(layout, facts.user) if facts.user else None
        if facts.basedir:
            basedir = inside(layout, facts.basedir)
        elif home is not None:
            basedir = home / f"{BASEDIR_PREFIX}{suffix}"
        else:
            notes.append(f"{where}: names neither --basedir nor User=, so its basedir is unknown; left out "
                         "(hint: KIAUH writes both; set them as it does and import again)")  # fmt: skip
            continue
        if basedir.is_symlink():
            notes.append(f"{where}: its basedir {basedir} is a link; left out (links are not followed)")
            continue
        venv = venv_of(facts.program, layout) or (home / f"{VENV_PREFIX}{suffix}" if home else None)
        user = facts.user or basedir.parent.name
        printers.append(by_serial_port(suffix, path.name, basedir, facts, venv=venv, user=user))
    return Found(Source.KIAUH, tuple(printers), (), tuple(notes))
