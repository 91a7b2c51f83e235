"""From what was found to what `import` does: octobrix names, ports, config entries, pins, plugins.

Read-only: it looks at the old venvs' dist-info and sizes up the basedirs, and changes nothing.
Every rename, moved port and printer that cannot be bound is a message, never silent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from octobrixd.config.edit import Edit, add_entry
from octobrixd.config.model import FRONTDOOR_RESERVED, Camera, Config, Printer
from octobrixd.config.values import NAME_MAX, NAME_RE
from octobrixd.importers.copy import Survey, survey
from octobrixd.importers.sources import Found, OldCamera, OldPrinter
from octobrixd.instances.venv_contents import read_venv, user_plugins
from octobrixd.system import paths
from octobrixd.system.paths import Layout

STATE_FILE = paths.STATE_DIR / ".imports.json"
FIRST_PRINTER_PORT = 5000
FIRST_CAMERA_PORT = 8080
LOWEST_PORT = 1024


@dataclass(frozen=True)
class PrinterMove:
    old: OldPrinter
    name: str
    entry: Mapping[str, Any]
    octoprint: str | None  # the version found in the old venv
    plugins: tuple[str, ...]  # the Plugin Manager's plugins found there, "Name version"
    size: Survey


@dataclass(frozen=True)
class CameraMove:
    old: OldCamera
    name: str
    entry: Mapping[str, Any]


@dataclass(frozen=True)
class ImportPlan:
    found: Found
    printers: tuple[PrinterMove, ...]
    cameras: tuple[CameraMove, ...]
    messages: tuple[str, ...]
    done: tuple[str, ...]  # what an earlier import already moved in

    @property
    def empty(self) -> bool:
        return not self.printers and not self.cameras

    def edits(self) -> list[Edit]:
        label = self.found.source.value
        edits: list[Edit] = [
            partial(add_entry, section="cameras", name=m.name, values=m.entry,
                    comment=f"imported from {label}'s camera {m.old.name}")
            for m in self.cameras
        ]  # fmt: skip
        edits += [
            partial(add_entry, section="printers", name=m.name, values=m.entry,
                    comment=f"imported from {label}'s {m.old.name} ({m.old.basedir})")
            for m in self.printers
        ]  # fmt: skip
        return edits

    def old_units(self) -> list[str]:
        return [*(m.old.unit for m in self.printers), *(m.old.unit for m in self.cameras)]


def read_state(layout: Layout) -> dict[str, Any]:
    try:
        body = json.loads(layout.path(STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"version": 1, "printers": {}, "cameras": {}}
    if not isinstance(body, dict):
        return {"version": 1, "printers": {}, "cameras": {}}
    for key in ("printers", "cameras"):
        if not isinstance(body.get(key), dict):
            body[key] = {}
    return body


def camera_key(found: Found, camera: OldCamera) -> str:
    return f"{found.source.value}:{camera.name}"


_INVALID = re.compile(r"[^a-z0-9-]+")


def octobrix_name(old: str, taken: Iterable[str], reserved: Iterable[str] = ()) -> str:
    """A valid octobrix name for old (lowercase letters, digits, dashes; at most 23), not yet taken."""
    base = _INVALID.sub("-", old.lower()).strip("-")
    base = re.sub("-{2,}", "-", base)[:NAME_MAX].strip("-") or "printer"
    blocked = set(taken) | set(reserved)
    name = base
    number = 2
    while name in blocked or not NAME_RE.match(name):
        suffix = f"-{number}"
        name = base[: NAME_MAX - len(suffix)].strip("-") + suffix
        number += 1
    return name


def free_port(wanted: int | None, used: set[int], first: int) -> int:
    port = wanted if wanted is not None and wanted >= LOWEST_PORT else first
    while port in used:
        port += 1
    return port


def _first_error(error: ValidationError) -> str:
    problem = error.errors()[0]
    where = ".".join(str(p) for p in problem["loc"])
    return f"{where}: {problem['msg'].removeprefix('Value error, ')}" if where else problem["msg"]


def _printer_entry(
    old: OldPrinter, port: int, pin: str | None, camera: str | None
) -> tuple[dict[str, Any], str | None]:
    """The config entry, and why it is a virtual printer if it had to be one."""
    tail: dict[str, Any] = {"port": port}
    if pin is not None:
        tail["octoprint"] = pin
    if camera is not None:
        tail["camera"] = camera
    why = old.unbound
    if why is None:
        bound = {"serial": old.serial} if old.serial is not None else {"usb_port": old.usb_port}
        try:
            Printer.model_validate({**bound, "port": port})
        except ValidationError as error:
            why = f"its udev rule's {_first_error(error)}"
        else:
            return {**bound, **tail}, None
    return {"virtual": True, **tail}, why


def _camera_entry(old: OldCamera, port: int) -> tuple[dict[str, Any] | None, list[str]]:
    said: list[str] = []
    bound: dict[str, Any] = {"serial": old.serial} if old.serial is not None else {"usb_port": old.usb_port}
    try:
        Camera.model_validate({**bound, "port": port})
    except ValidationError as error:
        return None, [f"camera {old.name}: its udev rule's {_first_error(error)}; left out"]
    entry = {**bound, "port": port}
    for key, value in (("resolution", old.resolution), ("fps", old.fps)):
        if value is None:
            continue
        try:
            Camera.model_validate({**entry, key: value})
        except ValidationError as error:
            said.append(f"camera {old.name}: {key} {value!r} from its env file is not usable ({_first_error(error)}); "
                        "octobrix's default is set")  # fmt: skip
            continue
        entry[key] = value
    return entry, said


@dataclass
class _Taken:
    """Names and ports the config and this plan already use."""

    names: set[str]
    ports: set[int]
    reserved: frozenset[str]


def _plan_cameras(
    found: Found, state: dict[str, Any], taken: _Taken, messages: list[str], done: list[str]
) -> tuple[list[CameraMove], dict[str, str]]:
    cameras: list[CameraMove] = []
    camera_of: dict[str, str] = {}
    for old in found.cameras:
        key = camera_key(found, old)
        if key in state["cameras"]:
            done.append(f"camera {old.name} (now {state['cameras'][key]})")
            continue
        name = octobrix_name(old.name, taken.names, taken.reserved)
        port = free_port(old.port, taken.ports, FIRST_CAMERA_PORT)
        entry, said = _camera_entry(old, port)
        messages += said
        if entry is None:
            continue
        taken.names.add(name)
        taken.ports.add(port)
        if name != old.name:
            messages.append(f"{found.source}'s camera {old.name} becomes camera {name} ({_why_renamed(old.name)})")
        if old.port is not None and port != old.port:
            messages.append(f"camera {name}: port {old.port} is taken in the config, it gets {port}")
        if old.printer is not None:
            camera_of[old.printer] = name
        cameras.append(CameraMove(old, name, entry))
    return cameras, camera_of


def _pin(
    config: Config, name: str, old: OldPrinter, messages: list[str]
) -> tuple[str | None, str | None, tuple[str, ...]]:
    """(version found, pin for the entry, the user's plugins) from the old venv's dist-info."""
    dists = read_venv(old.venv) if old.venv is not None else {}
    installed = dists.get("octoprint")
    if installed is None:
        messages.append(
            f"printer {name}: no OctoPrint found in {old.venv or 'its unit'}; it gets the farm's "
            f"{config.octobrix.octoprint} (set printers.{name}.octoprint if its settings are from a newer one)"
        )
        return None, None, ()
    requirement = f"octoprint=={installed.version}"
    plugins = tuple(f"{d.name} {d.version}" for d in user_plugins(dists, (requirement,)))
    return installed.version, None if requirement == config.octobrix.octoprint else requirement, plugins


def make_import_plan(found: Found, config: Config, layout: Layout) -> ImportPlan:
    state = read_state(layout)
    messages = list(found.notes)
    done: list[str] = []
    reserved = FRONTDOOR_RESERVED if config.frontdoor.enabled else frozenset()
    taken = _Taken({*config.printers, *config.cameras}, {port for _key, port in config.all_ports()}, reserved)
    cameras, camera_of = _plan_cameras(found, state, taken, messages, done)
    printers: list[PrinterMove] = []
    for old in found.printers:
        if str(old.basedir) in state["printers"]:
            done.append(f"{old.name} (now printer {state['printers'][str(old.basedir)]['name']})")
            continue
        if old.basedir.is_symlink():
            messages.append(f"{old.name}: its basedir {old.basedir} is a link; left out (links are not followed)")
            continue
        if not old.basedir.is_dir():
            messages.append(f"{old.name}: its basedir {old.basedir} is not there; left out")
            continue
        name = octobrix_name(old.name, taken.names, taken.reserved)
        taken.names.add(name)
        port = free_port(old.port, taken.ports, FIRST_PRINTER_PORT)
        taken.ports.add(port)
        if name != old.name:
            messages.append(f"{found.source}'s {old.name} becomes printer {name} ({_why_renamed(old.name)})")
        if old.port is not None and port != old.port:
            messages.append(f"printer {name}: port {old.port} is taken in the config, it gets {port}")
        version, pin, plugins = _pin(config, name, old, messages)
        entry, why = _printer_entry(old, port, pin, camera_of.get(old.name))
        if why is not None:
            messages.append(
                f"printer {name}: {why}; imported as a virtual printer with all its data "
                f"(hint: set serial or usb_port in [printers.{name}] instead of virtual, "
                "`octobrixctl discover --toml` shows the board's)"
            )
        printers.append(PrinterMove(old, name, entry, version, plugins, survey(old.basedir)))
    return ImportPlan(found, tuple(printers), tuple(cameras), tuple(messages), tuple(done))


def _why_renamed(old: str) -> str:
    if NAME_RE.match(old) and len(old) <= NAME_MAX:
        return "that name is taken in the config or by the front door"
    return f"octobrix names are lowercase letters, digits and dashes, at most {NAME_MAX} characters"


def state_after(layout: Layout, plan: ImportPlan, when: str) -> dict[str, Any]:
    state = read_state(layout)
    for move in plan.printers:
        state["printers"][str(move.old.basedir)] = {
            "name": move.name, "source": plan.found.source.value, "unit": move.old.unit, "when": when,
        }  # fmt: skip
    for camera in plan.cameras:
        state["cameras"][camera_key(plan.found, camera.old)] = camera.name
    return state


def state_path(layout: Layout) -> Path:
    return layout.path(STATE_FILE)
