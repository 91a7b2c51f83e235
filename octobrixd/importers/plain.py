"""A plain OctoPrint (OctoPi's, or set up by hand): basedir ~/.octoprint, unit octoprint.service,
its venv wherever the unit's ExecStart says (OctoPi: ~/oprint)."""

from __future__ import annotations

from octobrixd.importers.sources import (
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
from octobrixd.instances.instance import venv_octoprint
from octobrixd.system.paths import Layout

UNIT = "octoprint.service"
NAME = "octoprint"
VENV_GUESSES = ("oprint", "OctoPrint")


def present(layout: Layout) -> bool:
    return bool(discover(layout).printers)


def discover(layout: Layout) -> Found:
    facts = parse_unit(read_text(layout.path(UNIT_DIR / UNIT)) or "")
    notes = []
    candidates = [(user, home / ".octoprint", home) for user, home in homes(layout)]
    if facts.basedir:
        wanted = inside(layout, facts.basedir)
        candidates = [c for c in candidates if c[1] == wanted] or [(facts.user or "", wanted, wanted.parent)]
    elif facts.user:
        candidates = [c for c in candidates if c[0] == facts.user] or candidates
    found = [(user, base, home) for user, base, home in candidates if base.is_dir() and not base.is_symlink()]
    if len(found) > 1:
        notes.append(
            "several ~/.octoprint folders (" + ", ".join(str(b) for _u, b, _h in found) + f") and /{UNIT_DIR / UNIT} "
            "names none of them: only the first is imported"
        )
    printers = []
    for user, basedir, home in found[:1]:
        venv = venv_of(facts.program, layout)
        if venv is None:
            venv = next((home / g for g in VENV_GUESSES if venv_octoprint(home / g).exists()), None)
        printers.append(by_serial_port(NAME, UNIT, basedir, facts, venv=venv, user=user))
    return Found(Source.OCTOPRINT, tuple(printers), (), tuple(notes))
