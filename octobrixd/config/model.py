"""/etc/octobrix.toml: load, validate, and report every problem with its key path and line.

Validation happens in three layers so that one run reports everything wrong at once:
TOML syntax (tomllib's own position), then each table on its own (pydantic, frozen models,
unknown keys rejected), then rules across tables (ports, devices, references).
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict, TypeAdapter, ValidationError, model_validator
from pydantic_core import ErrorDetails

from octobrixd.config.positions import KeyLocator
from octobrixd.config.schedule import DEFAULT_KEEP, DEFAULT_SCHEDULE, check_schedule
from octobrixd.config.schedule import OFF as SCHEDULE_OFF
from octobrixd.config.streamers import Streamer
from octobrixd.config.values import (
    DEFAULT_OCTOPRINT,
    PORT_MAX,
    Baudrate,
    CameraRef,
    Controls,
    DeviceName,
    FilePath,
    ListenAddress,
    MemorySize,
    OctoPrintRequirement,
    PixelFormat,
    Plugin,
    Port,
    PublicHost,
    Resolution,
    Serial,
    Shape,
    StrictBool,
    StrictInt,
    UsbPort,
    check_name,
    check_wheels,
)
from octobrixd.errors import ConfigError
from octobrixd.names import device_link


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Settings(_Model):
    """What the whole farm shares."""

    octoprint: OctoPrintRequirement = Field(
        default=DEFAULT_OCTOPRINT, description="the OctoPrint every printer gets, as a pinned pip requirement"
    )
    wheels: Annotated[str, AfterValidator(check_wheels), Shape("an absolute folder path")] | None = Field(
        default=None,
        description=f"for a farm without internet: a folder of wheels (`pip wheel {DEFAULT_OCTOPRINT} -w DIR` on "
        "another computer) that OctoPrint and plugins are installed from, instead of PyPI; unset: from PyPI",
    )
    listen: ListenAddress = Field(
        default="::",
        description='the address OctoPrint and the streams listen on: `"::"` every address (IPv4 and IPv6), '
        '`"127.0.0.1"` this computer only',
    )
    streamer: Streamer = Field(
        default=Streamer.USTREAMER, description="webcam streamer for cameras that don't choose their own"
    )
    # load_config fills in the machine's host name when the file leaves it out.
    public_host: PublicHost | None = Field(
        default=None,
        description='the name or address your browser reaches this computer by, e.g. `"farm.local"` or '
        '`"192.168.1.20"`: with the front door off, the webcam stream URL in each OctoPrint uses it (set it when '
        "the plain host name does not open from other computers); with the front door on, the stream URL is a "
        "path and needs no host. `status` prints the addresses with it, and `export` gives it to farm managers; "
        "unset: this computer's host name",
    )
    backup_schedule: Annotated[
        str, AfterValidator(check_schedule), Shape(f'a systemd calendar time, or "{SCHEDULE_OFF}"')
    ] = Field(
        default=DEFAULT_SCHEDULE,
        description="when `octobrix-backup.timer` backs up every printer (OctoPrint's own backup): a systemd "
        'calendar time (`"daily"`, `"Sun 03:30"`, `"*-*-* 02:00"`; `systemd-analyze calendar "…"` checks one), '
        f'or `"{SCHEDULE_OFF}"`: no scheduled backups',
    )
    backup_keep: StrictInt = Field(
        default=DEFAULT_KEEP,
        ge=1,
        le=1000,
        description="how many backups of each printer the timer keeps; older ones in "
        "`/var/backups/octobrix/NAME/` are removed, also those made by hand",
    )


PAYLOAD_MIN, PAYLOAD_MAX = 128, 3072


def _check_payload(value: int) -> int:
    if value != 0 and not PAYLOAD_MIN <= value <= PAYLOAD_MAX:
        raise ValueError(
            f"{value} is not a payload the patched uvcvideo accepts: 0 (off, the stock driver) or "
            f"{PAYLOAD_MIN}–{PAYLOAD_MAX} bytes; 1024 fits about four 1080p/15 fps MJPEG cameras on one USB 2 bus"
        )
    return value


class UvcVideo(_Model):
    """Settings of octobrix's patched uvcvideo driver (`sudo octobrixctl kmod install`), for several
    cameras on one USB bus."""

    max_compressed_payload: (
        Annotated[int, Strict(), AfterValidator(_check_payload), Shape(f"0 (off) or {PAYLOAD_MIN}–{PAYLOAD_MAX} bytes")]
        | None
    ) = Field(
        default=None,
        description="with octobrix's patched uvcvideo driver: the most USB bandwidth, in bytes per 125 µs "
        "microframe, each MJPEG camera reserves. 1024 fits about four 1080p/15 fps cameras on one USB 2 bus, "
        "768 six, 512 nine (at lower resolution or frame rate); `0` turns the patch off (the stock driver's "
        "behaviour); unset: the module's own default (1024)",
    )
    uncompressed_bandwidth_fix: StrictBool | None = Field(
        default=None,
        description="with the patched uvcvideo: `true` makes every YUYV (uncompressed) camera reserve what its "
        "size and frame rate need (width x height x bits per pixel x fps), computed as the kernel's `quirks=128` "
        "(FIX_BANDWIDTH) does, instead of the largest packet it asks for; each camera keeps its own quirks. Two "
        "640x480@30 YUYV cameras then fit on one USB 2 bus where the stock driver fits one; unset: the module's "
        "default (off, the stock driver's behaviour)",
    )


class _Matched(_Model):
    serial: Serial | None = Field(
        default=None,
        description='the USB serial number of the printer\'s board or the camera, e.g. `"CZPX1919X004XC24974"`; '
        'a placeholder that many boards report (`"0001"`, `"123456789"`, all zeros) cannot tell boards apart: '
        "`discover` proposes `usb_port` for such a board and `check` warns",
    )
    usb_port: UsbPort | None = Field(
        default=None,
        description='the USB port it is plugged into, e.g. `"1-1.2"` (on bus 1), for devices without a unique '
        "serial number; follows the cable, not the board. A board with two serial ports gets its link on the "
        "first one. The bandwidth advisor judges a camera that is not plugged in by its bus",
    )

    def match_keys(self) -> list[str]:
        return [key for key in ("serial", "usb_port") if getattr(self, key) is not None]


# A printer's front door port when its entry names none: its OctoPrint's port + this (5001: 15001).
DOOR_PORT_OFFSET = 10000


def default_door_port(port: int) -> int:
    return port + DOOR_PORT_OFFSET if port + DOOR_PORT_OFFSET <= PORT_MAX else port - DOOR_PORT_OFFSET


class Printer(_Matched):
    """One printer, with its own OctoPrint. Each printer is matched by exactly one of `serial`,
    `usb_port` or `virtual`."""

    virtual: StrictBool = Field(
        default=False, description="`true`: OctoPrint's built-in virtual printer, needs no hardware"
    )
    port: Port = Field(description="OctoPrint's web port, e.g. `5001`")
    door_port: Port | None = Field(
        default=None,
        description="this printer's own port on the front door, its own browser origin "
        "(`http://HOST:DOOR_PORT/`), so that no page of another printer can act on it; "
        f"unset: `port` + {DOOR_PORT_OFFSET} (`port` − {DOOR_PORT_OFFSET} when that would pass 65535)",
    )
    baudrate: Baudrate | None = Field(
        default=None,
        description="serial speed, e.g. `115200` or `250000`; not for a virtual printer; unset: OctoPrint's default",
    )
    camera: CameraRef | None = Field(
        default=None,
        description="the name of a `[cameras.NAME]` entry to show in this printer's OctoPrint; unset: its "
        "OctoPrint's webcam is off",
    )
    octoprint: OctoPrintRequirement | None = Field(
        default=None,
        description='this printer\'s own OctoPrint version, e.g. `"octoprint==1.10.3"`; OctoPrint 2.x too '
        '(`"octoprint==2.0.0rc3"`), whose own settings keys octobrix then writes; `octobrixctl upgrade` and '
        "`rollback` set it for you (your comments stay); unset: `[octobrix] octoprint`",
    )
    plugins: tuple[Plugin, ...] = Field(
        default=(),
        description='OctoPrint plugins to install, pinned: `["OctoPrint-MFATOTP==1.1.1"]` from PyPI, or the '
        "archive URL plugins.octoprint.org lists",
    )
    memory_limit: MemorySize | None = Field(
        default=None,
        description='the most memory this printer\'s OctoPrint may use (systemd `MemoryMax=`), e.g. `"768M"`; '
        "unset: unlimited",
    )
    cpu_weight: StrictInt = Field(
        default=100,
        ge=1,
        le=10000,
        description="its share of the CPU against the others (systemd `CPUWeight=`; webcams get `20`)",
    )
    nice: StrictInt = Field(
        default=5,
        ge=-20,
        le=19,
        description="its scheduling priority (systemd `Nice=`): the lower, the sooner it runs",
    )

    @model_validator(mode="after")
    def _exactly_one_match(self) -> Self:
        keys = self.match_keys() + (["virtual"] if self.virtual else [])
        if len(keys) != 1:
            said = " and ".join(keys) if keys else "none"
            raise ValueError(f"must be matched by exactly one of serial, usb_port or virtual = true (has {said})")
        if self.virtual and self.baudrate is not None:
            raise ValueError("baudrate has no meaning for a virtual printer; remove it")
        return self


class Camera(_Matched):
    """One camera, with its own streamer. Each camera is matched by exactly one of `serial`,
    `usb_port` or `device_name`."""

    device_name: DeviceName | None = Field(
        default=None,
        description='the camera\'s V4L2 name, as `v4l2-ctl --info -d /dev/videoN` shows it for "Card type" '
        '(e.g. `"Integrated Camera: Integrated C"`), for built-in, CSI and loopback cameras without a USB serial '
        "or port (`discover` and the found list propose it for a camera that is not on USB); any video device "
        "with that name gets the entry",
    )
    resolution: Resolution = Field(default="1280x720", description="the stream's width x height")
    fps: StrictInt = Field(default=15, ge=1, le=120, description="frames per second")
    format: PixelFormat = Field(
        default=PixelFormat.MJPEG,
        description='`"mjpeg"` (the camera compresses; cheap on the CPU) or `"yuyv"` (raw, compressed by the computer)',
    )
    port: Port = Field(description="the stream's web port, e.g. `8081`")
    streamer: Streamer | None = Field(
        default=None, description="the streamer for this camera; unset: `[octobrix] streamer`"
    )
    controls: Controls = Field(
        default={},
        description="camera settings applied before each start of the stream, in the order written: "
        "`controls = { focus_automatic_continuous = 0, focus_absolute = 30 }`. "
        f"`v4l2-ctl --list-ctrls -d {device_link('NAME')}` lists what a camera has. Turn an automatic mode off "
        "before its manual value",
    )

    def match_keys(self) -> list[str]:
        return [*super().match_keys(), *(["device_name"] if self.device_name is not None else [])]

    @model_validator(mode="after")
    def _exactly_one_match(self) -> Self:
        keys = self.match_keys()
        if len(keys) != 1:
            said = " and ".join(keys) if keys else "none"
            raise ValueError(f"must be matched by exactly one of serial, usb_port or device_name (has {said})")
        return self

    @property
    def width(self) -> int:
        return int(self.resolution.split("x")[0])

    @property
    def height(self) -> int:
        return int(self.resolution.split("x")[1])


class FrontDoor(_Model):
    """The front door: one port for the whole farm (nginx), every printer at `/NAME/`, behind the
    farm login."""

    enabled: StrictBool = Field(
        default=True,
        description="`false`: no front door; each printer only at its own port, the webcam URLs absolute again "
        "(`public_host`)",
    )
    port: StrictInt = Field(
        default=80,
        ge=1,
        le=65535,
        description='the one port of the whole farm (nginx), on the addresses of `[octobrix] listen` (`"::"`: '
        "every IPv4 and IPv6 address)",
    )
    direct_ports: StrictBool = Field(
        default=True,
        description="`false`: every OctoPrint and every camera's streamer listen on this computer only "
        "(127.0.0.1), so the front door is the one way in; `true`: also on their own ports, on the addresses of "
        "`[octobrix] listen`, for tools that want them",
    )
    metrics: StrictBool = Field(
        default=False,
        description="`true`: Prometheus metrics at `/metrics`, for the metrics token or the farm login; "
        "`false`: `/metrics` answers 404",
    )
    https: StrictBool = Field(
        default=False,
        description="`true`: the farm and every printer's origin over HTTPS only (plain HTTP is sent there), "
        "cookies `Secure`; with `certificate` and `certificate_key`, or a certificate octobrix makes and renews "
        "(`octobrixctl credentials` shows its fingerprint, for the browser's warning)",
    )
    https_port: StrictInt = Field(
        default=443, ge=1, le=65535, description="with `https`: the farm's HTTPS port; `port` then only sends there"
    )
    certificate: FilePath | None = Field(
        default=None,
        description="with `https`: your certificate (PEM, the full chain), e.g. from your own CA or Let's Encrypt; "
        "unset: one octobrix makes",
    )
    certificate_key: FilePath | None = Field(
        default=None, description="with `certificate`: its private key (PEM), readable by root only"
    )

    @model_validator(mode="after")
    def _certificate_and_key(self) -> Self:
        if (self.certificate is None) != (self.certificate_key is None):
            raise ValueError("certificate and certificate_key go together: set both, or neither (octobrix makes one)")
        return self


# Paths the front door serves itself; a printer so named would be shadowed by them.
FRONTDOOR_RESERVED = frozenset({"api", "cam", "static", "login", "logout", "metrics"})


class Config(_Model):
    """The whole of /etc/octobrix.toml: a field that is a table (or a table of named tables) is a
    section of the file; `source` is not a key of the file."""

    octobrix: Settings = Field(default=Settings(), description="what the whole farm shares")
    frontdoor: FrontDoor = Field(default=FrontDoor(), description="the farm's one port")
    uvcvideo: UvcVideo = Field(default=UvcVideo(), description="the patched uvcvideo driver's settings")
    printers: dict[str, Printer] = Field(default={}, description="the printers, by name")
    cameras: dict[str, Camera] = Field(default={}, description="the cameras, by name")
    source: str = Field(
        default="/etc/octobrix.toml", description="where the config was read from (not a key of the file)"
    )

    def octoprint_requirement(self, name: str) -> str:
        return self.printers[name].octoprint or self.octobrix.octoprint

    def streamer_of(self, name: str) -> Streamer:
        return self.cameras[name].streamer or self.octobrix.streamer

    def services_listen(self) -> str:
        """Where the OctoPrints and the streamers listen: `[octobrix] listen`, or this computer only
        when the front door is to be the one way in (`[frontdoor] direct_ports = false`)."""
        if self.frontdoor.enabled and not self.frontdoor.direct_ports:
            return "127.0.0.1"
        return self.octobrix.listen

    def streams_listen(self) -> str:
        """Where the cameras' streamers listen: with the front door on, this computer only, behind it
        (a streamer checks no login: only the front door's does); without it, `[octobrix] listen`."""
        return "127.0.0.1" if self.frontdoor.enabled else self.octobrix.listen

    def door_port(self, name: str) -> int:
        """Printer NAME's own port on the front door (its browser origin)."""
        printer = self.printers[name]
        return printer.door_port if printer.door_port is not None else default_door_port(printer.port)

    def all_ports(self) -> Iterator[tuple[str, int]]:
        for name, printer in self.printers.items():
            yield f"printers.{name}.port", printer.port
            if self.frontdoor.enabled:
                yield f"printers.{name}.door_port", self.door_port(name)
        for name, camera in self.cameras.items():
            yield f"cameras.{name}.port", camera.port
        if self.frontdoor.enabled:
            yield "frontdoor.port", self.frontdoor.port
            if self.frontdoor.https:
                yield "frontdoor.https_port", self.frontdoor.https_port


_TOP_LEVEL: dict[str, type[_Model]] = {"octobrix": Settings, "frontdoor": FrontDoor, "uvcvideo": UvcVideo}
_SECTIONS: dict[str, type[_Matched]] = {"printers": Printer, "cameras": Camera}


class _Problems:
    """Collects problems, each rendered as FILE:LINE: key.path: message."""

    def __init__(self, source: str, locator: KeyLocator) -> None:
        self.source = source
        self.locator = locator
        self.items: list[tuple[int, str]] = []

    def add(self, path: tuple[str | int, ...], message: str) -> None:
        line = self.locator.line_of(tuple(str(p) for p in path))
        key = ".".join(str(p) for p in path) if path else "(top level)"
        self.items.append((line, f"{self.source}:{line}: {key}: {message}"))

    def messages(self) -> list[str]:
        return [text for _, text in sorted(self.items, key=lambda item: item[0])]


def _describe(error: ErrorDetails, model: type[BaseModel]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        known = ", ".join(model.model_fields)
        return f"unknown key — check the spelling; known keys here: {known}"
    if kind == "missing":
        return "is required — add it"
    if kind in ("value_error", "assertion_error"):
        return str(error["ctx"]["error"]) if "ctx" in error else error["msg"]
    if kind == "enum":
        return f"{error['input']!r} is not one of {error['ctx']['expected']}"
    if kind in ("greater_than_equal", "less_than_equal"):
        return f"{error['input']!r} is out of range ({error['msg'].lower()})"
    expected = {
        "int_type": "a whole number",
        "bool_type": "true or false",
        "string_type": "a quoted string",
        "tuple_type": 'a list like ["…"]',
        "dict_type": "a table",
        "model_type": "a table",
    }.get(kind)
    if expected:
        return f"{error['input']!r} should be {expected}"
    return str(error["msg"])


def _validate_table(model: type[_Model], raw: Any, path: tuple[str, ...], problems: _Problems) -> _Model | None:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        for error in exc.errors():
            problems.add(path + tuple(str(p) for p in error["loc"]), _describe(error, model))
        return None


@dataclass(frozen=True)
class _Entry:
    """What the rules across tables need of one printer or camera, also of one that failed its own
    checks: its fields that did pass, so that a wrong port never hides a missing camera."""

    section: str
    name: str
    port: int | None
    match: tuple[tuple[str, str], ...]
    camera: str | None = None
    door_port: int | None = None
    door_port_given: bool = False


_CROSS_KEYS = ("serial", "usb_port", "device_name")


def _entry_of(section: str, name: str, raw: Mapping[str, Any], model: type[_Matched]) -> _Entry:
    """The fields of raw that pass their own checks (each validated alone)."""
    good: dict[str, Any] = {}
    for key in ("port", "door_port", "camera", *_CROSS_KEYS):
        field = model.model_fields.get(key)
        if key not in raw or field is None:
            continue
        # The field's own type with its checks (Strict, validators), as the model applies them.
        checked: Any = Annotated[field.annotation, *field.metadata] if field.metadata else field.annotation
        try:
            good[key] = TypeAdapter(checked).validate_python(raw[key])
        except ValidationError:
            continue
    match = tuple((key, str(good[key])) for key in _CROSS_KEYS if good.get(key) is not None)
    door_port = good.get("door_port")
    if section == "printers" and door_port is None and good.get("port") is not None and "door_port" not in raw:
        door_port = default_door_port(good["port"])
    return _Entry(section, name, good.get("port"), match, good.get("camera"), door_port, "door_port" in raw)


def _cross_check(entries: list[_Entry], frontdoor: FrontDoor, problems: _Problems) -> None:
    owners: dict[int, str] = {}
    for entry in entries:
        ports = [("port", entry.port)]
        if frontdoor.enabled and entry.section == "printers":
            ports.append(("door_port", entry.door_port))
        clashed = False
        for key, port in ports:
            if port is None:
                continue
            if port in owners:
                if key == "door_port" and not entry.door_port_given:
                    if clashed:
                        continue  # the same clash, said once: its port's
                    said = f"its front door port ({port}, derived from its port) is also used by {owners[port]}"
                    problems.add((entry.section, entry.name, "port"), f"{said} — set door_port, or pick another port")
                    continue
                problems.add(
                    (entry.section, entry.name, key),
                    f"{port} is also used by {owners[port]} — pick another port",
                )
                clashed = True
            else:
                owners[port] = f"{entry.section}.{entry.name}" + (f".{key}" if key != "port" else "")
    if frontdoor.enabled and frontdoor.port in owners:
        problems.add(
            ("frontdoor", "port"), f"{frontdoor.port} is also used by {owners[frontdoor.port]} — pick another port"
        )
    if frontdoor.enabled and frontdoor.https:
        if frontdoor.https_port == frontdoor.port:
            problems.add(("frontdoor", "https_port"), f"{frontdoor.https_port} is also frontdoor.port — pick another")
        elif frontdoor.https_port in owners:
            owner = owners[frontdoor.https_port]
            problems.add(("frontdoor", "https_port"), f"{frontdoor.https_port} is also used by {owner} — pick another")

    printers = {e.name for e in entries if e.section == "printers"}
    cameras = {e.name for e in entries if e.section == "cameras"}
    for name in sorted(printers & cameras):
        problems.add(
            ("cameras", name),
            f"the name {name!r} is also a printer; both would be {device_link(name)} — rename one",
        )

    for name in sorted(printers & FRONTDOOR_RESERVED if frontdoor.enabled else ()):
        problems.add(
            ("printers", name),
            f"the name {name!r} is a path of the front door (http://HOST/{name}/ is not this printer's) — rename it",
        )

    bound: dict[tuple[str, str], str] = {}
    for entry in entries:
        for key, value in entry.match:
            # Printers and cameras are told apart by subsystem, so each section has its own space.
            ident = (entry.section, f"{key}={value}")
            if ident in bound:
                same = (
                    "if two boards share a serial number, bind both by usb_port"
                    if entry.section == "printers"
                    else "if two cameras share a serial number (several Logitech C270s report 200901010001), "
                    "bind each by usb_port: `octobrixctl discover` shows their ports"
                )
                problems.add(
                    (entry.section, entry.name, key),
                    f"{value!r} already binds {entry.section}.{bound[ident]}; two entries cannot match "
                    f"the same device — {same}",
                )
            else:
                bound[ident] = entry.name

    for entry in entries:
        if entry.camera is not None and entry.camera not in cameras:
            known = ", ".join(sorted(cameras)) or "none are configured"
            problems.add(
                ("printers", entry.name, "camera"),
                f"no camera named {entry.camera!r} (cameras: {known}) — add [cameras.{entry.camera}] or fix the name",
            )


def parse_config(text: str, source: str = "/etc/octobrix.toml") -> Config:
    """Parse and validate config text; raise ConfigError listing every problem found."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        position = re.search(r"\s*\(at line (\d+), column (\d+)\)", str(exc))
        if position:
            reason = str(exc)[: position.start()] + str(exc)[position.end() :]
            where = f"{source}:{position[1]}"
            reason = f"{reason} (column {position[2]})"
        elif "end of document" in str(exc):
            where, reason = f"{source}:{len(text.splitlines()) or 1}", str(exc)
        else:
            where, reason = source, str(exc)
        raise ConfigError(
            [f"{where}: not valid TOML: {reason}"],
            hint="fix the syntax at that line (strings need quotes, tables look like [printers.NAME])",
        ) from None

    problems = _Problems(source, KeyLocator(text))
    fields: dict[str, Any] = {"source": source}
    cross: list[_Entry] = []

    for key, value in raw.items():
        if key in _TOP_LEVEL:
            model = _TOP_LEVEL[key]
            fields[key] = _validate_table(model, value, (key,), problems)
        elif key in _SECTIONS:
            if not isinstance(value, Mapping):
                problems.add((key,), f"should be tables like [{key}.NAME]")
                continue
            entries: dict[str, _Model] = {}
            for name, entry_raw in value.items():
                try:
                    check_name(name)
                    name_ok = True
                except ValueError as exc:
                    problems.add((key, name), str(exc))
                    name_ok = False
                if not isinstance(entry_raw, Mapping):
                    problems.add((key, name), f"should be a table: [{key}.{name}]")
                    continue
                # A bad name does not hide the table's own mistakes: they are checked too.
                entry = _validate_table(_SECTIONS[key], entry_raw, (key, name), problems)
                if entry is not None and name_ok:
                    entries[name] = entry
                cross.append(_entry_of(key, name, entry_raw, _SECTIONS[key]))
            fields[key] = entries
        else:
            known = ", ".join([*_TOP_LEVEL, *_SECTIONS])
            problems.add((key,), f"unknown section — known sections: {known}")

    # Rules across tables run on whatever validated, so one run reports everything.
    config = Config.model_validate({k: v for k, v in fields.items() if v is not None})
    sections = list(_SECTIONS)
    _cross_check(sorted(cross, key=lambda entry: sections.index(entry.section)), config.frontdoor, problems)
    if problems.items:
        raise ConfigError(problems.messages(), hint="fix these, then run `octobrixctl check` again")
    return config


def load_config(path: Path) -> Config:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            [f"{path}: no such file"],
            hint="pass --config FILE, or start from the config octobrix ships (packaging/octobrix.toml)",
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read: {exc}"]) from None
    check_ownership(path)
    # The absolute path goes into generated files' headers and error lines, so they lead back to it.
    return with_machine_defaults(parse_config(text, str(path.absolute())), socket.gethostname())


def check_ownership(path: Path) -> None:
    """As root, refuse a config other users can change: it decides what root installs and runs."""
    if os.geteuid() != 0:
        return
    info = path.stat()
    if info.st_uid != 0 or info.st_mode & 0o022:
        raise ConfigError(
            [
                f"{path}: other users can change this file (owner uid {info.st_uid}, mode {info.st_mode & 0o777:04o}), "
                "and octobrix acts on it as root"
            ],
            hint=f"sudo chown root:root {path} && sudo chmod 644 {path}",
        )


def with_machine_defaults(config: Config, host_name: str) -> Config:
    """Fill in what defaults to a fact about this machine, kept out of parse_config so it stays pure."""
    if config.octobrix.public_host is not None:
        return config
    return config.model_copy(update={"octobrix": config.octobrix.model_copy(update={"public_host": host_name})})
