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
from octobrixd.config.streamers import Streamer
from octobrixd.config.values import (
    DEFAULT_OCTOPRINT,
    Baudrate,
    CameraRef,
    Controls,
    DeviceName,
    ListenAddress,
    MemorySize,
    OctoPrintRequirement,
    PixelFormat,
    Plugin,
    Port,
    PublicHost,
    Resolution,
    Serial,
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
    octoprint: OctoPrintRequirement = DEFAULT_OCTOPRINT
    # For farms without internet: install OctoPrint and plugins from this folder of wheels only.
    wheels: Annotated[str, AfterValidator(check_wheels)] | None = None
    listen: ListenAddress = "::"
    streamer: Streamer = Streamer.USTREAMER
    # The name browsers reach this computer by, for the webcam URLs in OctoPrint; load_config
    # fills in the machine's host name when the file leaves it out.
    public_host: PublicHost | None = None
    # OctoPrint's own backup of every printer by octobrix-backup.timer: a systemd calendar time or
    # "off"; and how many backups of each printer the timer keeps.
    backup_schedule: Annotated[str, AfterValidator(check_schedule)] = DEFAULT_SCHEDULE
    backup_keep: StrictInt = Field(default=DEFAULT_KEEP, ge=1, le=1000)


def _check_payload(value: int) -> int:
    if value != 0 and not 128 <= value <= 3072:
        raise ValueError(
            f"{value} is not a payload the patched uvcvideo accepts: 0 (off, the stock driver) or "
            "128–3072 bytes; 1024 fits about four 1080p/15 fps MJPEG cameras on one USB 2 bus"
        )
    return value


class UvcVideo(_Model):
    # Bytes per USB 2 microframe a compressed (MJPEG) stream may reserve. Unset: the patched
    # module's own default (1024); 0: the stock driver's behaviour.
    max_compressed_payload: Annotated[int, Strict(), AfterValidator(_check_payload)] | None = None
    # true: the patched module computes what uncompressed (YUYV) streams reserve from width x
    # height x bits per pixel x fps, as the kernel's FIX_BANDWIDTH quirk does, for every camera and
    # without replacing any camera's own quirks. Unset: the module's default (off, stock behaviour).
    uncompressed_bandwidth_fix: StrictBool | None = None


class _Matched(_Model):
    serial: Serial | None = None
    usb_port: UsbPort | None = None

    def match_keys(self) -> list[str]:
        return [key for key in ("serial", "usb_port") if getattr(self, key) is not None]


class Printer(_Matched):
    virtual: StrictBool = False
    port: Port
    baudrate: Baudrate | None = None
    camera: CameraRef | None = None
    octoprint: OctoPrintRequirement | None = None
    plugins: tuple[Plugin, ...] = ()
    # Resource controls for this printer's OctoPrint (systemd MemoryMax=, CPUWeight=, Nice=).
    memory_limit: MemorySize | None = None
    cpu_weight: StrictInt = Field(default=100, ge=1, le=10000)
    nice: StrictInt = Field(default=5, ge=-20, le=19)

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
    # Built-in, CSI and loopback cameras have no USB serial or port: their V4L2 name binds them.
    device_name: DeviceName | None = None
    resolution: Resolution = "1280x720"
    fps: StrictInt = Field(default=15, ge=1, le=120)
    format: PixelFormat = PixelFormat.MJPEG
    port: Port
    streamer: Streamer | None = None
    # V4L2 controls set before streaming starts, in the order written (automatic modes off first).
    controls: Controls = {}

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
    # One port for the whole farm (nginx): every printer at /NAME/, behind the farm login.
    enabled: StrictBool = True
    port: StrictInt = Field(default=80, ge=1, le=65535)
    # Prometheus's /metrics on the front door, behind the metrics token or the farm login.
    metrics: StrictBool = False


# Paths the front door serves itself; a printer so named would be shadowed by them.
FRONTDOOR_RESERVED = frozenset({"api", "cam", "static", "login", "logout", "metrics"})


class Config(_Model):
    octobrix: Settings = Settings()
    frontdoor: FrontDoor = FrontDoor()
    uvcvideo: UvcVideo = UvcVideo()
    printers: dict[str, Printer] = {}
    cameras: dict[str, Camera] = {}
    source: str = "/etc/octobrix.toml"

    def octoprint_requirement(self, name: str) -> str:
        return self.printers[name].octoprint or self.octobrix.octoprint

    def streamer_of(self, name: str) -> Streamer:
        return self.cameras[name].streamer or self.octobrix.streamer

    def all_ports(self) -> Iterator[tuple[str, int]]:
        for name, printer in self.printers.items():
            yield f"printers.{name}.port", printer.port
        for name, camera in self.cameras.items():
            yield f"cameras.{name}.port", camera.port
        if self.frontdoor.enabled:
            yield "frontdoor.port", self.frontdoor.port


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


_CROSS_KEYS = ("serial", "usb_port", "device_name")


def _entry_of(section: str, name: str, raw: Mapping[str, Any], model: type[_Matched]) -> _Entry:
    """The fields of raw that pass their own checks (each validated alone)."""
    good: dict[str, Any] = {}
    for key in ("port", "camera", *_CROSS_KEYS):
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
    return _Entry(section, name, good.get("port"), match, good.get("camera"))


def _cross_check(entries: list[_Entry], frontdoor: FrontDoor, problems: _Problems) -> None:
    owners: dict[int, str] = {}
    for entry in entries:
        if entry.port is None:
            continue
        if entry.port in owners:
            problems.add(
                (entry.section, entry.name, "port"),
                f"{entry.port} is also used by {owners[entry.port]} — pick another port",
            )
        else:
            owners[entry.port] = f"{entry.section}.{entry.name}"
    if frontdoor.enabled and frontdoor.port in owners:
        problems.add(
            ("frontdoor", "port"), f"{frontdoor.port} is also used by {owners[frontdoor.port]} — pick another port"
        )

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
