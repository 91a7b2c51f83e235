"""What an old tool left on the computer, whatever the tool: its OctoPrint instances and cameras.

Readers only read (the old files stay untouched, so going back is possible). Every line they cannot
use becomes a note naming the file, its line and what to do, never an exception: one odd line must
not keep the rest of the farm from moving in.
"""

from __future__ import annotations

import pwd
import re
import shlex
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path, PurePosixPath

import yaml

from octobrixd.instances.instance import CONFIG_YAML
from octobrixd.system import nofollow
from octobrixd.system.nofollow import UnsafePathError
from octobrixd.system.paths import Layout

UNIT_DIR = PurePosixPath("etc/systemd/system")


class Source(StrEnum):
    OCTOPRINT_DEPLOY = "octoprint_deploy"
    KIAUH = "kiauh"
    OCTOPRINT = "octoprint"


@dataclass(frozen=True)
class OldPrinter:
    name: str  # its name in the old tool (octoprint_deploy's instance, KIAUH's suffix)
    unit: str  # its systemd unit, e.g. "ender.service"
    basedir: Path  # on this system (under --root: inside the tree)
    port: int | None = None
    venv: Path | None = None
    user: str | None = None
    serial: str | None = None
    usb_port: str | None = None
    # Why no serial or usb_port could be taken, for the message (None when one was).
    unbound: str | None = None


@dataclass(frozen=True)
class OldCamera:
    name: str
    unit: str
    port: int | None
    printer: str | None  # the old printer it belongs to
    serial: str | None = None
    usb_port: str | None = None
    resolution: str | None = None
    fps: int | None = None


@dataclass(frozen=True)
class Found:
    source: Source
    printers: tuple[OldPrinter, ...] = ()
    cameras: tuple[OldCamera, ...] = ()
    notes: tuple[str, ...] = field(default=())


def home_of(layout: Layout, user: str) -> Path:
    """A user's home on the system (the password database), or /home/USER under --root."""
    if layout.live:
        try:
            return Path(pwd.getpwnam(user).pw_dir)
        except KeyError:
            pass
    return layout.path(PurePosixPath("root") if user == "root" else PurePosixPath("home") / user)


def homes(layout: Layout) -> list[tuple[str, Path]]:
    """(user, home) of every home folder: /root and /home/*."""
    out = [("root", layout.path("root"))] if layout.path("root").is_dir() else []
    base = layout.path("home")
    if base.is_dir():
        out += [(p.name, p) for p in sorted(base.iterdir()) if p.is_dir() and not p.is_symlink()]
    return out


def read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None


def safe_component(name: str) -> bool:
    """Whether an old name can be part of a file name without leaving its folder."""
    return bool(name) and "/" not in name and "\0" not in name and name not in (".", "..")


@dataclass(frozen=True)
class UnitFacts:
    user: str | None
    program: str | None  # ExecStart's program, e.g. /home/pi/OctoPrint/bin/octoprint
    basedir: str | None
    port: int | None
    environment: dict[str, str]


_ENV_REF = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def parse_unit(text: str) -> UnitFacts:
    """The few facts of an OctoPrint unit file: its user, program, basedir and port."""
    env: dict[str, str] = {}
    user = None
    exec_line = None
    for raw in text.splitlines():
        line = raw.strip()
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key = key.strip()
        if key == "Environment":
            try:
                words = shlex.split(value)
            except ValueError:
                continue
            for word in words:
                name, eq, val = word.partition("=")
                if eq:
                    env[name] = val
        elif key == "User":
            user = value.strip() or None
        elif key == "ExecStart":
            exec_line = value.strip().lstrip("-@+!:")
    argv: list[str] = []
    if exec_line:
        try:
            argv = [_ENV_REF.sub(lambda m: env.get(m[1] or m[2], ""), w) for w in shlex.split(exec_line)]
        except ValueError:
            argv = []
    options = _options(argv[1:])
    port_text = options.get("port") or env.get("PORT")
    port = int(port_text) if port_text and port_text.isdigit() else None
    return UnitFacts(user, argv[0] if argv else None, options.get("basedir") or env.get("BASEDIR"), port, env)


def _options(argv: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for index, word in enumerate(argv):
        if not word.startswith("--"):
            continue
        key, eq, value = word[2:].partition("=")
        if not eq and index + 1 < len(argv) and not argv[index + 1].startswith("-"):
            value = argv[index + 1]
        out.setdefault(key, value)
    return out


def venv_of(program: str | None, layout: Layout) -> Path | None:
    """The venv of an OctoPrint program path (…/bin/octoprint), inside the tree."""
    if not program or not program.startswith("/"):
        return None
    path = PurePosixPath(program)
    if path.parent.name != "bin":
        return None
    return layout.path(path.parent.parent.relative_to("/"))


def inside(layout: Layout, absolute: str) -> Path:
    """An absolute path the old tool wrote, inside the tree (--root) or as it is."""
    return layout.path(PurePosixPath(absolute).relative_to("/")) if absolute.startswith("/") else layout.path(absolute)


def serial_port_of(basedir: Path) -> str | None:
    """The serial port the old OctoPrint was set to (config.yaml serial.port), if readable."""
    try:
        # Another user's folder: a link or a FIFO in it is not read (nofollow).
        body = yaml.safe_load(nofollow.read_text(basedir.parent, f"{basedir.name}/{CONFIG_YAML}")) or {}
    except (OSError, ValueError, UnsafePathError, yaml.YAMLError):
        return None
    serial = body.get("serial") if isinstance(body, dict) else None
    port = serial.get("port") if isinstance(serial, dict) else None
    return port if isinstance(port, str) else None


def unbound_reason(basedir: Path) -> str:
    port = serial_port_of(basedir)
    if port is None:
        return "its OctoPrint names no serial port"
    if port.endswith("klippy.serial"):
        return f"its OctoPrint talks to Klipper through {port}, not to a USB board"
    return f"its OctoPrint used {port}, which does not say which board it is"


def by_serial_port(
    name: str, unit: str, basedir: Path, facts: UnitFacts, *, venv: Path | None, user: str
) -> OldPrinter:
    """An OctoPrint known by its unit and basedir only (KIAUH's, a plain one): no udev rule of its own."""
    return OldPrinter(
        name=name,
        unit=unit,
        basedir=basedir,
        port=facts.port,
        venv=venv,
        user=facts.user or user,
        unbound=unbound_reason(basedir),
    )
