"""KIAUH's OctoPrint instances: basedir ~/.octoprint_SUFFIX, venv ~/OctoPrint_SUFFIX, unit
/etc/systemd/system/octoprint_SUFFIX.service (its ExecStart has --basedir and --port=N). KIAUH's
OctoPrints talk to Klipper's klippy.serial, not to a USB board, so octobrix cannot bind them by
themselves: they come over with their data and a message saying what to set."""

from __future__ import annotations

from octobrixd.importers.found import (
    UNIT_DIR,
    Found,
    Source,
    by_serial_port,
    homes,
    inside,
    parse_unit,
    read_text,
    venv_of,
)
from octobrixd.paths import Layout

BASEDIR_PREFIX = ".octoprint_"
VENV_PREFIX = "OctoPrint_"
UNIT_PREFIX = "octoprint_"


def present(layout: Layout) -> bool:
    return bool(discover(layout).printers)


def discover(layout: Layout) -> Found:
    printers = []
    notes = []
    for user, home in homes(layout):
        for basedir in sorted(home.glob(f"{BASEDIR_PREFIX}*")):
            suffix = basedir.name.removeprefix(BASEDIR_PREFIX)
            if not basedir.is_dir() or basedir.is_symlink() or not suffix:
                continue
            unit = f"{UNIT_PREFIX}{suffix}.service"
            unit_text = read_text(layout.path(UNIT_DIR / unit))
            if unit_text is None:
                notes.append(f"{basedir}: no unit /{UNIT_DIR / unit}, so KIAUH did not make it; left out")
                continue
            facts = parse_unit(unit_text)
            if facts.basedir and inside(layout, facts.basedir) != basedir:
                notes.append(f"/{UNIT_DIR / unit} runs another basedir ({facts.basedir}); {basedir} left out")
                continue
            venv = venv_of(facts.program, layout) or home / f"{VENV_PREFIX}{suffix}"
            printers.append(by_serial_port(suffix, unit, basedir, facts, venv=venv, user=user))
    return Found(Source.KIAUH, tuple(printers), (), tuple(notes))
