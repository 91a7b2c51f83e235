"""A hostile printer (issue #29): an OctoPrint plugin that, loaded as its printer's user, plants traps
for root in everything that user can write, and the checks that root fell into none of them.

At each start (on_after_startup) it plants, and writes what it managed to BASEDIR/hostile-report.json:
- in every site-packages it can write: a `.pth` and a `sitecustomize.py` that import a trap module,
  which appends to MARKER (under /var/lib, root's) only when it runs as uid 0;
- links in place of its basedir's `uploads` (to the other printer's basedir), `data` (to ROOT_ONLY_FILE, a
  root-only file) and `logs` (to ROOT_ONLY_DIR);
- a link in place of its state directory's `venv` (to the venv it runs, so nothing breaks if it
  works): the new layout must refuse it;
- a FIFO in place of its own dist-info's INSTALLER (root reading it would hang; OctoPrint never
  reads it), and a link to ROOT_ONLY_FILE in place of its own `loot.txt` (listed in RECORD: a copy of the
  installed plugin made by root must not follow it).
At shutdown it puts its basedir's folders back, so its OctoPrint starts again (and plants again).
"""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

from tests.lab.harness.container import Container
from tests.lab.harness.plugin_wheel import plugin_wheel

PLUGIN_KEY = "hostile"
PLUGIN_DIST = "OctoPrint-Hostile"
VERSION = "0.1.0"
WHEEL_NAME = f"OctoPrint_Hostile-{VERSION}-py3-none-any.whl"
MARKER = "/var/lib/octobrix-pwned"  # only root can write there
ROOT_ONLY_DIR = "/etc/octobrix-lab-secret"  # root's, 0700 (visible to octobrix-backup.service)
ROOT_ONLY_FILE = f"{ROOT_ONLY_DIR}/shadow"  # root's, 0600
REPORT = "hostile-report.json"  # in the printer's basedir

# No backslash in here: it is written as it is into the wheel.
PLUGIN_SOURCE = """\
import glob
import json
import os
import sys
import time

import octoprint.plugin
from octoprint.settings import settings

MARKER = "@MARKER@"
ROOT_ONLY_FILE = "@ROOT_ONLY_FILE@"
ROOT_ONLY_DIR = "@ROOT_ONLY_DIR@"
ASIDE = ".lab-aside"
NL = chr(10)
TRAP = NL.join([
    "import os, sys",
    "if os.getuid() == 0:",
    "    with open(" + repr(MARKER) + ", 'a') as marker:",
    "        marker.write('root ran ' + sys.executable + ' through ' + __file__ + chr(10))",
    "",
])


def basedir():
    found = getattr(settings(), "_basedir", None)
    return found or os.path.dirname(settings().getBaseFolder("logs"))


def why(error):
    return "refused: " + (error.strerror or str(error))


def sites(state):
    found = glob.glob(os.path.join(state, "venvs", "*", "lib", "python3*", "site-packages"))
    found += [p for p in sys.path if p.endswith("site-packages") and os.path.realpath(p).startswith(state)]
    unique = {}
    for path in found:
        unique.setdefault(os.path.realpath(path), path)
    return sorted(unique)


def write(path, text):
    with open(path, "w") as handle:
        handle.write(text)


def plant():
    base = basedir()
    state = os.path.dirname(base)
    beta = os.path.join(os.path.dirname(state), "beta", "basedir")
    report = {"uid": os.getuid(), "basedir": base, "time": time.time(), "sites": {}, "links": {}, "fifos": {}}
    for site in sites(state):
        done = []
        for name, text in (
            ("octobrix_lab_trap.py", TRAP),
            ("octobrix-lab-trap.pth", "import octobrix_lab_trap" + NL),
            ("sitecustomize.py", "import octobrix_lab_trap" + NL),
        ):
            try:
                write(os.path.join(site, name), text)
                done.append(name)
            except OSError as error:
                done.append(name + " " + why(error))
        report["sites"][site] = done
        for info in glob.glob(os.path.join(site, "OctoPrint_Hostile-*.dist-info")):
            installer = os.path.join(info, "INSTALLER")
            try:
                if os.path.lexists(installer):
                    os.unlink(installer)
                os.mkfifo(installer)
                report["fifos"][installer] = "planted"
            except OSError as error:
                report["fifos"][installer] = why(error)
        loot = os.path.join(site, "octoprint_hostile", "loot.txt")
        try:
            if os.path.lexists(loot):
                os.unlink(loot)
            os.symlink(ROOT_ONLY_FILE, loot)
            report["links"][loot] = "planted"
        except OSError as error:
            report["links"][loot] = why(error)
    for name, target in (("uploads", beta), ("data", ROOT_ONLY_FILE), ("logs", ROOT_ONLY_DIR)):
        path = os.path.join(base, name)
        try:
            if os.path.islink(path):
                os.unlink(path)
            elif os.path.lexists(path):
                os.rename(path, path + ASIDE)
            os.symlink(target, path)
            report["links"][path] = "planted"
        except OSError as error:
            report["links"][path] = why(error)
    venv = os.path.join(state, "venv")
    try:
        os.symlink(os.path.realpath(venv), venv + ".lab-new")
        os.replace(venv + ".lab-new", venv)
        report["links"][venv] = "planted"
    except OSError as error:
        report["links"][venv] = why(error)
    write(os.path.join(base, "@REPORT@"), json.dumps(report, indent=1))
    return report


def unplant():
    base = basedir()
    for name in ("uploads", "data", "logs"):
        path = os.path.join(base, name)
        if os.path.islink(path) and os.path.isdir(path + ASIDE):
            os.unlink(path)
            os.rename(path + ASIDE, path)


class Hostile(octoprint.plugin.StartupPlugin, octoprint.plugin.ShutdownPlugin):
    def on_after_startup(self):
        self._logger.info("planted: %s", plant())

    def on_shutdown(self):
        unplant()


__plugin_name__ = "Hostile"
__plugin_version__ = "@VERSION@"
__plugin_pythoncompat__ = ">=3,<4"
__plugin_implementation__ = Hostile()
"""


def plugin_source() -> str:
    values = {
        "MARKER": MARKER,
        "ROOT_ONLY_FILE": ROOT_ONLY_FILE,
        "ROOT_ONLY_DIR": ROOT_ONLY_DIR,
        "REPORT": REPORT,
        "VERSION": VERSION,
    }
    text = PLUGIN_SOURCE
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    return text


def build_wheel(folder: Path) -> Path:
    sources = {"__init__.py": plugin_source(), "loot.txt": "nothing yet\n"}
    return plugin_wheel(folder, dist=PLUGIN_DIST, key=PLUGIN_KEY, version=VERSION, sources=sources, summary="lab trap")


def plant_secret(box: Container, secret: str) -> None:
    """ROOT_ONLY_FILE: a file only root can read, with known content (an /etc/shadow of the test's own)."""
    box.run(["install", "-d", "-m", "700", ROOT_ONLY_DIR], check=True)
    box.write_file(ROOT_ONLY_FILE, secret + "\n", mode=0o600)


def tree_state(box: Container, top: str) -> dict[str, str]:
    """Every name below top (logs/ left out: OctoPrint writes there all the time): its type, and a
    hash of each regular file's content or each link's target."""
    done = box.run(
        ["find", top, "-path", f"{top}/logs", "-prune", "-o", "-printf", "%y %P %l\\n"], check=True, timeout=120
    )
    states: dict[str, str] = {}
    for line in done.stdout.splitlines():
        kind, _, rest = line.partition(" ")
        name, _, target = rest.partition(" ")
        states[name] = f"{kind} {target}"
    digests = box.run(
        ["sh", "-c", f"cd {top} && find . -path ./logs -prune -o -type f -print0 | xargs -0r sha256sum"], timeout=120
    )
    for line in digests.stdout.splitlines():
        digest, _, name = line.partition("  ")
        key = name.removeprefix("./")
        states[key] = states.get(key, "?") + " " + digest[:16]
    return states


def _members(data: bytes) -> list[tuple[str, bytes]]:
    """What is inside a zip or tar (nested ones too), else nothing."""
    found: list[tuple[str, bytes]] = []
    if data[:4] == b"PK\x03\x04":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for entry in archive.infolist():
                inner = archive.read(entry)
                found += [(entry.filename, inner), *((f"{entry.filename}!{n}", d) for n, d in _members(inner))]
        return found
    if len(data) > 512 and data[257:262] == b"ustar":
        with tarfile.open(fileobj=io.BytesIO(data)) as archive:
            for member in archive.getmembers():
                handle = archive.extractfile(member) if member.isfile() else None
                if handle is not None:
                    inner = handle.read()
                    found += [(member.name, inner), *((f"{member.name}!{n}", d) for n, d in _members(inner))]
    return found


def files_holding(box: Container, secret: str, tops: list[str]) -> list[str]:
    """Every file below tops (links not followed) holding secret, inside zips and tars too."""
    needle = secret.encode()
    found = box.run(["grep", "-rlaF", secret, *tops], check=False, timeout=300).stdout.split()
    archives = box.run(
        ["find", *tops, "-type", "f", "(", "-name", "*.zip", "-o", "-name", "*.tar", "-o", "-name", "*.bundle", ")"],
        check=False,
        timeout=120,
    ).stdout.split()
    for guest in archives:
        for name, data in _members(box.path(guest).read_bytes()):
            if needle in data:
                found.append(f"{guest}!{name}")
    return found
