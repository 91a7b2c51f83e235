"""The narrow requests that add a found device to the config or take an entry out, and the checks
every one of them passes before anything is written. Shared by octobrixd (requests from the web
service) and `octobrixctl add`, so both refuse the same things with the same words.

parse_request and plan_* are pure (bytes or config text in, edits out); perform() is the thin layer
that reads and writes /etc/octobrix.toml through config_edit.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from octobrixd.adding.channel import MAX_REQUEST_BYTES
from octobrixd.adding.found import Found, device_id
from octobrixd.config import edit as config_edit
from octobrixd.config.model import Config, load_config
from octobrixd.config.values import check_name
from octobrixd.devices.inventory import Device
from octobrixd.errors import ConfigError, OctobrixError
from octobrixd.names import DeviceKind

log = logging.getLogger(__name__)

_ID_RE = re.compile(r"^[0-9a-f]{16}\Z")
FOUND_HINT = "plug it in and wait until the overview (or `octobrixctl discover`) lists it, then add it from there"


class Op(StrEnum):
    ADD = "add"
    REMOVE = "remove"


@dataclass(frozen=True)
class AddRequest:
    device: str  # a Found.id, as octobrixd itself discovered the device
    name: str
    port: int | None = None  # None: the proposed one
    printer: str | None = None  # a camera: the printer whose OctoPrint shows it


@dataclass(frozen=True)
class RemoveRequest:
    kind: DeviceKind
    name: str


Request = AddRequest | RemoveRequest
_FIELDS = {Op.ADD: {"op", "device", "name", "port", "printer"}, Op.REMOVE: {"op", "kind", "name"}}


def refused(message: str, hint: str) -> OctobrixError:
    return OctobrixError(message, hint=hint)


def _name(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise refused(f"{key}: a name is needed", hint='give one, e.g. "ender"')
    try:
        return check_name(value)
    except ValueError as error:
        raise refused(f"{key}: {error}", hint="choose a name of lowercase letters, digits and dashes") from None


def parse_request(data: bytes) -> Request:
    """One JSON object; anything else, any unknown field, any odd value is refused."""
    if len(data) > MAX_REQUEST_BYTES:
        raise refused("the request is too long", hint="send only the device, the name and the port")
    try:
        body = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise refused("the request is not JSON", hint="send one JSON object") from None
    if not isinstance(body, dict):
        raise refused("the request is not a JSON object", hint="send one JSON object")
    try:
        op = Op(str(body.get("op")))
    except ValueError:
        raise refused(f"op: {body.get('op')!r} is not add or remove", hint='use "add" or "remove"') from None
    unknown = sorted(set(body) - _FIELDS[op])
    if unknown:
        raise refused(f"{unknown[0]}: not part of a {op} request", hint=f"send only {', '.join(sorted(_FIELDS[op]))}")
    if op is Op.REMOVE:
        try:
            kind = DeviceKind(str(body.get("kind")))
        except ValueError:
            raise refused(
                f"kind: {body.get('kind')!r} is not printer or camera", hint='use "printer" or "camera"'
            ) from None
        return RemoveRequest(kind, _name(body.get("name"), "name"))
    device = body.get("device")
    if not isinstance(device, str) or not _ID_RE.match(device):
        raise refused("device: not a device id octobrixd gave out", hint=FOUND_HINT)
    port = body.get("port")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 1024 <= port <= 65535):
        raise refused(f"port: {port!r} is not a port from 1024 to 65535", hint="leave it out to take the proposed one")
    printer = body.get("printer")
    return AddRequest(
        device, _name(body.get("name"), "name"), port, None if printer is None else _name(printer, "printer")
    )


# ---------------------------------------------------------------------------------------------
# Checks and edits (pure)


def _section(kind: DeviceKind) -> str:
    return "printers" if kind is DeviceKind.PRINTER else "cameras"


def _next_free(config: Config, start: int) -> int:
    used = {port for _, port in config.all_ports()}
    port = start
    while port in used:
        port += 1
    return port


def plan_add(
    request: AddRequest, found: Sequence[Found], devices: Iterable[Device], config: Config
) -> tuple[str, list[config_edit.Edit]]:
    """The entry's key path and the edits that add it; refused with why and what to do."""
    # Checked here too: `octobrixctl add` builds its request without parse_request.
    _name(request.name, "name")
    item = next((f for f in found if f.id == request.device), None)
    if item is None:
        bound = next((d for d in devices if device_id(d) == request.device and d.bound_to), None)
        if bound is not None:
            owner = f"{_section(bound.kind)}.{bound.bound_to[0]}"
            raise refused(
                f"{bound.node} ({bound.label}) is already bound by {owner}",
                hint=f"it is in the farm as {bound.bound_to[0]}; to give it another name, remove {owner} first",
            )
        raise refused("octobrixd has not seen that device plugged in (or it was unplugged since)", hint=FOUND_HINT)
    if item.cannot_bind:
        raise refused(
            f"{item.node} cannot be bound: {item.cannot_bind}",
            hint=item.cannot_bind_hint or "`octobrixctl discover` shows how each device identifies itself",
        )
    section = _section(item.kind)
    key = f"{section}.{request.name}"
    if request.name in config.printers or request.name in config.cameras:
        taken = "printers" if request.name in config.printers else "cameras"
        raise refused(f"{key}: the name {request.name} is taken by {taken}.{request.name}", hint="choose another name")
    port = request.port if request.port is not None else item.proposed_port
    users = [path for path, used in config.all_ports() if used == port]
    if users:
        free = _next_free(config, port)
        raise refused(f"{key}.port: {port} is already used by {users[0]}", hint=f"pick another port, e.g. {free}")
    identity = f" ({item.vid_pid})" if item.vid_pid else f", {item.where}"
    comment = f" {item.label}{identity}, added by octobrix"
    if item.note:
        comment += f"; {item.note}"
    edits: list[config_edit.Edit] = [
        lambda text: config_edit.add_entry(text, section, request.name, item.entry(port), comment=comment)
    ]
    if request.printer is not None:
        if item.kind is not DeviceKind.CAMERA:
            raise refused("printer: only a camera is shown by a printer", hint="leave printer out for a printer board")
        shower = config.printers.get(request.printer)
        if shower is None:
            raise refused(f"printer: there is no printer {request.printer}", hint="choose one of the farm's printers")
        if shower.camera is not None:
            raise refused(
                f"printers.{request.printer}.camera: it already shows camera {shower.camera}",
                hint="choose another printer, or none",
            )
        edits.append(
            lambda text: config_edit.set_value(text, "printers", request.printer or "", "camera", request.name)
        )
    return key, edits


def _unset_camera(printer: str) -> config_edit.Edit:
    return lambda text: config_edit.remove_value(text, "printers", printer, "camera")


def plan_remove(
    request: RemoveRequest, config: Config, busy: Callable[[str], bool]
) -> tuple[str, list[config_edit.Edit]]:
    section = _section(request.kind)
    key = f"{section}.{request.name}"
    entries = config.printers if request.kind is DeviceKind.PRINTER else config.cameras
    if request.name not in entries:
        raise refused(f"{key}: there is no such entry in the config", hint="`octobrixctl status` lists the farm")
    if request.kind is DeviceKind.PRINTER and busy(request.name):
        raise refused(
            f"{key}: {request.name} is printing, so it is not taken out now",
            hint="remove it once the print has ended (or cancel the print in its OctoPrint first)",
        )
    edits: list[config_edit.Edit] = [lambda text: config_edit.remove_entry(text, section, request.name)]
    for printer, entry in config.printers.items():
        if request.kind is DeviceKind.CAMERA and entry.camera == request.name:
            edits.append(_unset_camera(printer))
    return key, edits


# ---------------------------------------------------------------------------------------------
# The thin layer


def _preview(config_path: Path, edits: Sequence[config_edit.Edit]) -> str:
    """The lines the edits would add and take out, checked like the real edit; nothing written."""
    text = config_path.read_text(encoding="utf-8")
    new_text = config_edit.edited(text, edits)
    config_edit.checked(new_text, str(config_path))
    diff = difflib.unified_diff(text.splitlines(), new_text.splitlines(), str(config_path), "(after)", lineterm="", n=1)
    return "\n".join(diff)


def perform(
    request: Request,
    config_path: Path,
    *,
    found: Sequence[Found] = (),
    devices: Iterable[Device] = (),
    busy: Callable[[str], bool] = lambda _name: False,
    dry_run: bool = False,
) -> str:
    """Check the request against the config as it is on disk now, then write it; one line on success
    (with dry_run: the change it would make, written nowhere)."""
    config = load_config(config_path)
    if isinstance(request, AddRequest):
        key, edits = plan_add(request, found, devices, config)
    else:
        key, edits = plan_remove(request, config, busy)
    try:
        if dry_run:
            return _preview(config_path, edits)
        config_edit.edit_config_file(config_path, *edits)
    except ConfigError as error:
        raise refused(error.problems[0], hint=error.hint or "`octobrixctl check` explains") from None
    if isinstance(request, AddRequest):
        log.info("added [%s] to %s", key, config_path)
        return f"added [{key}] to {config_path}; octobrixd is setting it up"
    log.info("took [%s] out of %s", key, config_path)
    return f"took [{key}] out of {config_path}; its data under /var/lib/octobrix is kept"


def answer(handle: Callable[[], str]) -> dict[str, Any]:
    """The reply to a request: ok with the line, or refused with why and what to do."""
    try:
        return {"ok": True, "message": handle()}
    except OctobrixError as error:
        return {"ok": False, "error": str(error), "hint": error.hint}
