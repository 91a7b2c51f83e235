"""octoprint_deploy's farm: /etc/octoprint_deploy (its shared venv), /etc/octoprint_instances, the
udev rules in /etc/udev/rules.d/99-octoprint.rules, /etc/octoprint_cameras with /etc/cam_*.env, one
basedir ~USER/.NAME and one unit /etc/systemd/system/NAME.service per instance.

Its scripts append these files with `echo ... >>`: a value is written as it was typed, so a quote in
a serial number or a slash in a name ends up in them as it is. Such lines become notes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from octobrixd.importers.sources import (
    UNIT_DIR,
    Found,
    OldCamera,
    OldPrinter,
    Source,
    home_of,
    inside,
    parse_unit,
    read_text,
    safe_component,
    venv_of,
)
from octobrixd.system.paths import Layout

SETTINGS = PurePosixPath("etc/octoprint_deploy")
INSTANCES = PurePosixPath("etc/octoprint_instances")
CAMERAS = PurePosixPath("etc/octoprint_cameras")
RULES = PurePosixPath("etc/udev/rules.d/99-octoprint.rules")
LINE_HINT = "octoprint_deploy writes `{kind}:NAME port:N udev:true|false`; fix or remove that line, then import again"
_FIELD = re.compile(r"^(\w+):(.*)$")
# One `KEY=="value"` / `KEY+="value"` of a rule; values are between plain double quotes.
_RULE_TOKEN = re.compile(r'\s*([A-Za-z_]+(?:\{[A-Za-z0-9_]+\})?)\s*(==|!=|\+=|:=|=)\s*"([^"]*)"\s*(?:,|$)')
_CAMERA_NAME = re.compile(r"^cam(\d*)_(.+)$")


def parse_settings(text: str) -> dict[str, str]:
    """`key: value` lines (prepare.sh writes `octoexec: PATH`, sometimes without the space)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip():
            out.setdefault(key.strip(), value.strip())
    return out


@dataclass(frozen=True)
class Listed:
    name: str
    port: int | None
    udev: bool


def parse_list(text: str, kind: str, source: str) -> tuple[list[Listed], list[str]]:
    """/etc/octoprint_instances (kind "instance") or /etc/octoprint_cameras (kind "camera")."""
    listed: list[Listed] = []
    notes: list[str] = []
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields: dict[str, str] = {}
        for word in line.split():
            found = _FIELD.match(word)
            if found:
                fields.setdefault(found[1], found[2])
        where = f"{source}:{number}"
        name = fields.get(kind, "")
        if not name:
            notes.append(f"{where}: no {kind}:NAME in {line.strip()!r}, left out (hint: {LINE_HINT.format(kind=kind)})")
            continue
        if not safe_component(name):
            notes.append(
                f"{where}: {kind} name {name!r} cannot be a file name, left out "
                f"(hint: octoprint_deploy cannot have made it; rename it in that line and its files, then import again)"
            )
            continue
        if name in seen:
            notes.append(f"{where}: {kind} {name} is listed twice; the first line counts")
            continue
        seen.add(name)
        port_text = fields.get("port", "")
        port = int(port_text) if port_text.isdigit() else None
        if port is None:
            notes.append(f"{where}: {kind} {name} has no port:N (port:{port_text!r}); octobrix picks a free one")
        listed.append(Listed(name, port, fields.get("udev", "").lower() == "true"))
    return listed, notes


@dataclass(frozen=True)
class Match:
    serial: str | None = None
    usb_port: str | None = None
    problem: str | None = None


def parse_rules(text: str, source: str) -> dict[str, Match]:
    """SYMLINK name (octo_NAME, camN_NAME) -> how its rule matches the device."""
    out: dict[str, Match] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        tokens: dict[str, str] = {}
        position = 0
        while position < len(line):
            token = _RULE_TOKEN.match(line, position)
            if token is None:
                break
            tokens.setdefault(token[1], token[3])
            position = token.end()
        links = re.findall(r'SYMLINK\+?=\s*"?([A-Za-z0-9_.\-]+)', line)
        if not links:
            continue
        link = links[0]
        if position < len(line.rstrip()):
            out[link] = Match(
                problem=f"{source}:{number}: its rule cannot be read from character {position + 1} on "
                "(a quote inside a value?)"
            )
            continue
        if "ATTRS{serial}" in tokens:
            out[link] = Match(serial=tokens["ATTRS{serial}"])
        elif "KERNELS" in tokens:
            out[link] = Match(usb_port=tokens["KERNELS"])
        else:
            out[link] = Match(problem=f"{source}:{number}: its rule matches neither ATTRS{{serial}} nor KERNELS")
    return out


def parse_env(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip():
            out[key.strip()] = value.strip().strip('"')
    return out


def present(layout: Layout) -> bool:
    return layout.path(INSTANCES).is_file()


def discover(layout: Layout) -> Found:
    notes: list[str] = []
    settings = parse_settings(read_text(layout.path(SETTINGS)) or "")
    if not settings:
        notes.append(f"/{SETTINGS} is missing or empty: the user and venv come from each instance's unit")
    octoexec = settings.get("octoexec")
    shared_venv = venv_of(octoexec, layout)
    exec_user = octoexec.split("/")[2] if octoexec and octoexec.startswith("/home/") else None
    instances_text = read_text(layout.path(INSTANCES))
    if instances_text is None:
        missing = f"/{INSTANCES} is missing: octoprint_deploy has no instances here"
        return Found(Source.OCTOPRINT_DEPLOY, notes=(missing,))
    instances, more = parse_list(instances_text, "instance", f"/{INSTANCES}")
    notes += more
    rules = parse_rules(read_text(layout.path(RULES)) or "", f"/{RULES}")
    printers = []
    for listed in instances:
        unit_name = f"{listed.name}.service"
        unit_text = read_text(layout.path(UNIT_DIR / unit_name))
        facts = parse_unit(unit_text or "")
        if unit_text is None:
            notes.append(f"{listed.name}: no unit /{UNIT_DIR / unit_name}; nothing of it to stop")
        user = facts.user or exec_user
        if facts.basedir:
            basedir = inside(layout, facts.basedir)
        elif user is not None:
            basedir = home_of(layout, user) / f".{listed.name}"
        else:
            notes.append(
                f"{listed.name}: neither its unit nor /{SETTINGS} names its user, so its basedir is unknown; left out"
            )
            continue
        match = rules.get(f"octo_{listed.name}")
        unbound = None
        if match is None:
            unbound = "no udev rule for it in /" + str(RULES) if not listed.udev else "its udev rule is missing"
        elif match.problem is not None:
            unbound = match.problem
        printers.append(
            OldPrinter(
                name=listed.name,
                unit=unit_name,
                basedir=basedir,
                port=listed.port or facts.port,
                venv=venv_of(facts.program, layout) or shared_venv,
                user=user,
                serial=match.serial if match else None,
                usb_port=match.usb_port if match else None,
                unbound=unbound,
            )
        )
    cameras = []
    known = {p.name for p in printers}
    camera_list, more = parse_list(read_text(layout.path(CAMERAS)) or "", "camera", f"/{CAMERAS}")
    notes += more
    for listed in camera_list:
        env = parse_env(read_text(layout.path(PurePosixPath("etc") / f"{listed.name}.env")) or "")
        match = rules.get(listed.name)
        named = _CAMERA_NAME.match(listed.name)
        printer = named[2] if named and not named[1] and named[2] in known else None
        if match is None or match.problem is not None:
            device = env.get("DEVICE", "?")
            why = match.problem if match else f"no udev rule for it in /{RULES} (its DEVICE is {device})"
            notes.append(
                f"camera {listed.name}: {why}; left out (hint: add it as [cameras.NAME] with the entry "
                "`octobrixctl discover --toml` shows)"
            )
            continue
        fps = env.get("FRAMERATE", "")
        port_text = env.get("PORT", "")
        cameras.append(
            OldCamera(
                name=listed.name,
                unit=f"{listed.name}.service",
                port=listed.port or (int(port_text) if port_text.isdigit() else None),
                printer=printer,
                serial=match.serial,
                usb_port=match.usb_port,
                resolution=env.get("RES") or None,
                fps=int(fps) if fps.isdigit() else None,
            )
        )
    return Found(Source.OCTOPRINT_DEPLOY, tuple(printers), tuple(cameras), tuple(notes))
