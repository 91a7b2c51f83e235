"""`octobrixctl doctor`: the checks a support forum would ask about, each with what to do.

A check is a small function from a DoctorContext to a list of Finding (octobrixd/findings.py); CHECKS lists them
in the order they print. Later checks (cameras, the uvcvideo module...) append themselves.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from pathlib import Path

from octobrixd.cameras import bandwidth
from octobrixd.cameras import streams as cameras
from octobrixd.cameras.bandwidth import advise_system
from octobrixd.cameras.streams import Snapshot, StreamerState
from octobrixd.cliargs import add_config_argument, add_root_argument
from octobrixd.config.model import Camera, Config, Printer, load_config
from octobrixd.config.streamers import Streamer
from octobrixd.devices.inventory import Device, Inventory, binds, scan
from octobrixd.errors import ConfigError
from octobrixd.farm import backup_state
from octobrixd.findings import Finding
from octobrixd.instances import recovery
from octobrixd.instances.venv_drift import venv_results
from octobrixd.names import DeviceKind, device_link, octoprint_unit, streamer_unit
from octobrixd.system import paths, systemd
from octobrixd.system.paths import Layout
from octobrixd.system.processes import processes


class DoctorContext:
    """What the checks look at, each read once and only when a check needs it."""

    def __init__(
        self,
        layout: Layout,
        config_path: Path,
        *,
        scan_devices: Callable[[Config | None], Inventory] | None = None,
        query_units: UnitQuery | None = None,
        fetch_snapshot: Callable[[str], Snapshot] = cameras.fetch_snapshot,
        streamer_state: Callable[[int], StreamerState | None] = cameras.ustreamer_state,
        journal: Callable[[str, int], list[str]] = systemd.journal_tail,
    ) -> None:
        self.layout = layout
        self.config_path = config_path
        self._scan_devices = scan_devices or self._scan_udev
        self._query_units = query_units or self._systemctl_show
        # Services can be asked about on the live system, or through a test's stand-in.
        self.services_known = layout.live or query_units is not None
        # The streams are asked over HTTP; tests pass stand-ins.
        self.fetch_snapshot = fetch_snapshot
        self.streamer_state = streamer_state
        self.journal = journal
        self.config: Config | None = None
        self.config_error: ConfigError | None = None
        try:
            self.config = load_config(config_path)
        except ConfigError as exc:
            self.config_error = exc

    def _scan_udev(self, config: Config | None) -> Inventory:
        import pyudev  # noqa: PLC0415 — only the device checks need libudev

        # Formats are not needed here, and querying them would open every camera.
        return scan(pyudev.Context(), config=config, layout=self.layout, query_formats=None)

    @cached_property
    def inventory(self) -> Inventory:
        return self._scan_devices(self.config)

    def _systemctl_show(self, units: Sequence[str]) -> Mapping[str, systemd.UnitProperties]:
        if not self.layout.live:
            return {}  # a scratch tree has no services to ask about
        from octobrixd.farm.status import query_units  # noqa: PLC0415 — systemctl only for the stream checks

        return query_units(units)

    def unit_states(self, units: Sequence[str]) -> Mapping[str, systemd.UnitProperties]:
        return self._query_units(units)

    @cached_property
    def process_names(self) -> set[str]:
        try:
            return {process.command for process in processes(self.layout.path("proc"))}
        except OSError:
            return set()

    def link_target(self, name: str) -> str | None:
        """Where /dev/octobrix/NAME points, as a path on the target system; None if absent."""
        link = self.layout.device_link(name)
        try:
            target = link.readlink()
        except OSError:
            return None
        resolved = Path(os.path.normpath(link.parent / target))
        try:
            return "/" + str(resolved.relative_to(self.layout.root)).removeprefix(".")
        except ValueError:
            return str(resolved)


Check = Callable[[DoctorContext], list[Finding]]
UnitQuery = Callable[[Sequence[str]], Mapping[str, systemd.UnitProperties]]


def _entries(config: Config) -> list[tuple[DeviceKind, str, Printer | Camera]]:
    found: list[tuple[DeviceKind, str, Printer | Camera]] = [
        (DeviceKind.PRINTER, name, printer) for name, printer in config.printers.items() if not printer.virtual
    ]
    found += [(DeviceKind.CAMERA, name, camera) for name, camera in config.cameras.items()]
    return found


# Several attached cameras with one V4L2 name: a device_name rule cannot tell them apart.
NAME_SHARED_HINT = (
    "give them different names where their drivers allow (v4l2loopback: the card_label module option), "
    "or bind this camera by serial or usb_port if it is on USB (`octobrixctl discover --toml`)"
)


def _match_text(entry: Printer | Camera) -> str:
    if isinstance(entry, Camera) and entry.device_name is not None:
        return f"V4L2 name {entry.device_name!r}"
    if entry.serial is not None:
        return f"serial number {entry.serial}"
    return f"USB port {entry.usb_port}"


def check_config(ctx: DoctorContext) -> list[Finding]:
    if ctx.config is not None:
        printers, cameras = len(ctx.config.printers), len(ctx.config.cameras)
        return [Finding("config", True, f"{ctx.config_path} is valid ({printers} printers, {cameras} cameras)")]
    if not ctx.config_path.exists():
        return [
            Finding(
                "config",
                False,
                f"{ctx.config_path} does not exist; the checks that need it were skipped",
                "create it: `octobrixctl discover --toml` prints entries for the attached devices",
            )
        ]
    problems = "\n".join(ctx.config_error.problems if ctx.config_error else [])
    return [
        Finding(
            "config",
            False,
            f"{ctx.config_path} is not valid; the checks that need it were skipped:\n{problems}",
            "fix each line named above, then run `octobrixctl check` until it passes",
        )
    ]


def check_devices(ctx: DoctorContext) -> list[Finding]:
    """Every configured device is attached, matched by exactly one entry, and has its link."""
    if ctx.config is None:
        return []
    results = []
    for kind, name, entry in _entries(ctx.config):
        label = f"{kind} {name}"
        pool = ctx.inventory.printers if kind is DeviceKind.PRINTER else ctx.inventory.cameras
        matches = [d for d in pool if binds(entry, d.usb, d.video.name if d.video is not None else None)]
        if not matches and isinstance(entry, Camera) and entry.device_name is not None:
            # Built-in (CSI, platform) and loopback cameras have no USB parent: sysfs names them.
            results.append(_check_named_camera(ctx, label, name, entry.device_name))
            continue
        if not matches:
            what = "USB serial port" if kind is DeviceKind.PRINTER else "camera"
            results.append(
                Finding(
                    label,
                    False,
                    f"not plugged in: no {what} with {_match_text(entry)} is attached",
                    "plug it in and check its cable and power; `octobrixctl discover` lists what is attached "
                    "and how each device identifies itself",
                )
            )
            continue
        if len(matches) > 1:
            nodes = ", ".join(d.node for d in matches)
            results.append(
                Finding(
                    label,
                    False,
                    f"{_match_text(entry)} matches {len(matches)} attached devices ({nodes}); "
                    f"{device_link(name)} would point at whichever udev handled last",
                    NAME_SHARED_HINT
                    if isinstance(entry, Camera) and entry.device_name is not None
                    else "bind each of these boards by usb_port instead: `octobrixctl discover --toml` prints the "
                    "entries",
                )
            )
            continue
        device = matches[0]
        if len(device.bound_to) > 1:
            others = ", ".join(f"{kind.section}.{n}" for n in device.bound_to)
            results.append(
                Finding(
                    label,
                    False,
                    f"{device.node} is matched by {others}: two instances would fight over it",
                    "keep one entry for this device and delete or re-point the others",
                )
            )
            continue
        results.append(_check_link(ctx, label, name, device))
    return results


def _check_link(ctx: DoctorContext, label: str, name: str, device: Device) -> Finding:
    link = device_link(name)
    target = ctx.link_target(name)
    if target == device.node:
        return Finding(label, True, f"{device.node} ({device.label}) is {link}")
    if target is None:
        detail = f"{device.node} ({device.label}) is attached but {link} does not exist"
    else:
        detail = f"{link} points to {target}, but the device is {device.node}"
    return Finding(
        label,
        False,
        detail,
        "run `sudo octobrixctl apply` (installs the udev rules and re-triggers udev); "
        f"if the rules are current, unplug and replug {device.node}",
    )


def video_nodes_named(layout: Layout, device_name: str) -> list[str]:
    """Capture nodes (index 0) whose V4L2 name is device_name, read from sysfs."""
    found = []
    for entry in sorted((layout.sys / "class" / "video4linux").glob("video*")):
        try:
            name = (entry / "name").read_text(encoding="utf-8", errors="replace").strip()
            index = (entry / "index").read_text(encoding="utf-8").strip() if (entry / "index").exists() else "0"
        except OSError:
            continue
        if name == device_name and index == "0":
            found.append(f"/dev/{entry.name}")
    return found


def _check_named_camera(ctx: DoctorContext, label: str, name: str, device_name: str) -> Finding:
    nodes = video_nodes_named(ctx.layout, device_name)
    if not nodes:
        return Finding(
            label,
            False,
            f"not present: no video device is named {device_name!r}",
            "connect or enable it (for a CSI camera: its overlay in the boot config); `v4l2-ctl --list-devices` "
            "shows the names of the cameras there are",
        )
    if len(nodes) > 1:
        return Finding(
            label,
            False,
            f"{len(nodes)} video devices are named {device_name!r} ({', '.join(nodes)}): "
            f"{device_link(name)} would point at whichever udev handled last",
            NAME_SHARED_HINT,
        )
    target = ctx.link_target(name)
    if target == nodes[0]:
        return Finding(label, True, f"{nodes[0]} ({device_name}) is {device_link(name)}")
    return Finding(
        label,
        False,
        f"{nodes[0]} ({device_name}) is present but {device_link(name)} "
        + ("does not exist" if target is None else f"points to {target}"),
        "run `sudo octobrixctl apply` (installs the udev rules and re-triggers udev)",
    )


def check_rules(ctx: DoctorContext) -> list[Finding]:
    if ctx.config is None:
        return []
    from octobrixd.render.tree import render_all  # noqa: PLC0415 — keeps renderers out of doctor's import time

    expected = render_all(ctx.config)[paths.UDEV_RULES].text
    installed_path = ctx.layout.path(paths.UDEV_RULES)
    shown = "/" + str(paths.UDEV_RULES)
    fix = "run `sudo octobrixctl apply` (it writes the rules and reloads udev)"
    try:
        installed = installed_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return [Finding("udev rules", False, f"{shown} is not installed: no device gets its name", fix)]
    except (OSError, UnicodeDecodeError) as exc:
        return [Finding("udev rules", False, f"{shown} cannot be read: {exc}", fix)]
    if installed != expected:
        return [
            Finding(
                "udev rules", False, f"{shown} does not match {ctx.config_path} (changed since the last apply?)", fix
            )
        ]
    return [Finding("udev rules", True, f"{shown} is installed and matches the config")]


BRLTTY_FILES = (
    "usr/bin/brltty",
    "bin/brltty",
    "usr/lib/udev/rules.d/85-brltty.rules",
    "lib/udev/rules.d/85-brltty.rules",
)


def check_brltty(ctx: DoctorContext) -> list[Finding]:
    found = [f"/{path}" for path in BRLTTY_FILES if ctx.layout.path(path).exists()]
    if not found:
        return [Finding("brltty", True, "brltty (a braille display driver) is not installed")]
    return [
        Finding(
            "brltty",
            False,
            f"brltty is installed ({found[0]}): its udev rules take USB-serial chips that some braille "
            "displays also use (CH340 1a86:7523, CP210x) and grab the port, so such a printer's "
            "/dev/ttyUSB* vanishes right after it appears (seen on Ubuntu 22.04 and later)",
            "if no braille display is used here: `sudo apt remove brltty`; "
            "otherwise: `sudo systemctl mask brltty-udev.service` and replug the printer",
        )
    ]


def check_modemmanager(ctx: DoctorContext) -> list[Finding]:
    if "ModemManager" not in ctx.process_names:
        return [Finding("ModemManager", True, "ModemManager is not running")]
    exposed = [d for d in ctx.inventory.printers if d.bound_to and not d.mm_ignored]
    if not exposed:
        return [
            Finding(
                "ModemManager", True, "ModemManager is running; every attached printer port is marked to be ignored"
            )
        ]
    nodes = ", ".join(f"{d.node} ({', '.join(d.bound_to)})" for d in exposed)
    return [
        Finding(
            "ModemManager",
            False,
            f"ModemManager is running and {nodes} lack the ID_MM_DEVICE_IGNORE mark: it may send AT "
            "commands to the printer, which resets or confuses its firmware",
            "run `sudo octobrixctl apply` so the octobrix rules mark printer ports, then replug them; "
            "or, if this computer uses no mobile modem: `sudo systemctl disable --now ModemManager`",
        )
    ]


def check_port_holders(ctx: DoctorContext) -> list[Finding]:
    if ctx.config is None:
        return []
    results = []
    for device in ctx.inventory.printers:
        for name in device.bound_to:
            ours = octoprint_unit(name)
            for holder in device.held_by:
                if holder.unit == ours:
                    continue
                where = f" in {holder.unit}" if holder.unit else ""
                results.append(
                    Finding(
                        f"printer {name}",
                        False,
                        f"{device.node} is open by {holder.command} (PID {holder.pid}{where}), not by {ours}: "
                        "OctoPrint cannot connect while another program holds the port",
                        f"close that program (a serial terminal, another OctoPrint, a slicer's USB print); "
                        f"if it hangs: `sudo kill {holder.pid}`",
                    )
                )
    if not ctx.inventory.holders_complete:
        results.append(
            Finding(
                "printer ports",
                False,
                "some processes' open files could not be read, so a program holding "
                "a printer port may have been missed",
                "run `sudo octobrixctl doctor`",
            )
        )
    if not results:
        results.append(Finding("printer ports", True, "no other program has a configured printer port open"))
    return results


def _check_stream(ctx: DoctorContext, config: Config, name: str, props: systemd.UnitProperties | None) -> Finding:
    streamer = config.streamer_of(name)
    unit = streamer_unit(config, name)
    label = f"stream {name}"
    if not cameras.program_installed(ctx.layout, streamer):
        return Finding(
            label, False, f"{streamer} is not installed, so {unit} cannot start", cameras.missing_program_hint(streamer)
        )
    if props is None:
        return Finding(label, False, f"{unit} could not be asked about (no systemd here?)", "run it as root")
    if props.state is not systemd.UnitState.ACTIVE:
        state = props.state or "unknown"
        never = not props.installed or props.state is systemd.UnitState.INACTIVE
        return Finding(
            label,
            False,
            f"{unit} is {state}" + (f" ({props.sub_state})" if props.sub_state else ""),
            f"run `sudo octobrixctl apply` (it starts {unit})"
            if never
            else f"see `journalctl -u {unit}`, then `sudo systemctl restart {unit}`",
        )
    url = cameras.snapshot_url(config, name)
    shot = ctx.fetch_snapshot(url)
    if not shot.ok:
        return Finding(
            label,
            False,
            f"{unit} runs but its snapshot does not work: {shot.detail}; OctoPrint's timelapses fetch that URL",
            f"see `journalctl -u {unit}`; is port {config.cameras[name].port} taken by another program "
            f"(`ss -ltnp 'sport = :{config.cameras[name].port}'`)?",
        )
    camera = config.cameras[name]
    if streamer is Streamer.USTREAMER:
        live = ctx.streamer_state(camera.port)
        if live is not None and not live.online:
            return Finding(
                label,
                False,
                f"{unit} serves its 'no signal' picture: the camera delivers no frames ({shot.detail})",
                f"check that {device_link(name)} exists and the camera's cable; `journalctl -u {unit}` says "
                "why it cannot capture",
            )
        if live is not None and (live.width, live.height) != (camera.width, camera.height):
            return Finding(
                label,
                False,
                f"{unit} streams {live.width}x{live.height}, not the configured {camera.resolution}: the camera "
                f"does not offer that size in {camera.format.value.upper()}",
                f"pick a size `v4l2-ctl --list-formats-ext -d {device_link(name)}` lists, in cameras.{name}",
            )
    return Finding(label, True, f"{unit} is running; {shot.detail}")


def check_streams(ctx: DoctorContext) -> list[Finding]:
    """Each camera's streamer runs and answers the snapshot URL OctoPrint uses."""
    if ctx.config is None or not ctx.config.cameras or not ctx.services_known:
        return []
    config = ctx.config
    units = {name: streamer_unit(config, name) for name in sorted(config.cameras)}
    states = ctx.unit_states(list(units.values()))
    return [_check_stream(ctx, config, name, states.get(unit)) for name, unit in units.items()]


def check_instances(ctx: DoctorContext) -> list[Finding]:
    """A printer whose OctoPrint failed (crashed at every start): why, from its log, and what to do.
    Silent while every instance runs or starts."""
    if ctx.config is None or not ctx.config.printers or not ctx.services_known:
        return []
    units = {octoprint_unit(name): name for name in sorted(ctx.config.printers)}
    results = []
    for unit, props in recovery.failed_units(ctx.unit_states, list(units)).items():
        lines = ctx.journal(unit, recovery.LOG_LINES)
        detail = f"{unit} has failed: its OctoPrint {recovery.cause(props)}"
        detail += "; last lines of its log:\n" + "\n".join(lines) if lines else f" (`sudo journalctl -u {unit}`)"
        results.append(Finding(f"printer {units[unit]} service", False, detail, recovery.what_to_do(unit)))
    return results


def check_bandwidth(ctx: DoctorContext) -> list[Finding]:
    if ctx.config is None or not ctx.config.cameras:
        return []
    advice = advise_system(ctx.config, ctx.layout, ctx.inventory)
    results = [warning.finding() for warning in advice.findings()]
    if not results:
        judged = sum(len(d.cameras) for d in advice.domains)
        if judged:
            buses = "; ".join(f"{d.label}: {d.used_us:.0f} of {d.budget_us:g} µs" for d in advice.domains)
            what = "1 camera fits its bus" if judged == 1 else f"{judged} cameras fit their buses"
            results.append(Finding(bandwidth.CHECK, True, f"{what} ({buses})"))
        else:
            results.append(Finding(bandwidth.CHECK, True, "no configured USB camera is plugged in to judge"))
    if advice.off_usb:
        results.append(
            Finding("USB bandwidth", True, f"not on USB, so they take no USB bandwidth: {', '.join(advice.off_usb)}")
        )
    return results


def check_timelapse(ctx: DoctorContext) -> list[Finding]:
    if ctx.config is None:
        return []
    wired = sorted(name for name, printer in ctx.config.printers.items() if printer.camera is not None)
    if not wired:
        return []
    if ctx.layout.path(cameras.FFMPEG.lstrip("/")).exists():
        return [Finding("timelapse", True, f"{cameras.FFMPEG} is there for the timelapses of {', '.join(wired)}")]
    return [
        Finding(
            "timelapse",
            False,
            f"{cameras.FFMPEG} is missing: OctoPrint of {', '.join(wired)} records timelapses but cannot render them",
            "sudo apt install ffmpeg",
        )
    ]


def check_venvs(ctx: DoctorContext) -> list[Finding]:
    """The OctoPrint and plugins really installed in each printer's venv, against the config."""
    return venv_results(ctx.layout, ctx.config)


def check_backups(ctx: DoctorContext) -> list[Finding]:
    return backup_state.health(ctx.layout, ctx.config)


CHECKS: list[Check] = [
    check_config,
    check_devices,
    check_rules,
    check_brltty,
    check_modemmanager,
    check_port_holders,
    check_instances,
    check_streams,
    check_bandwidth,
    check_timelapse,
    check_venvs,
    check_backups,
]


def run_checks(ctx: DoctorContext, checks: list[Check] | None = None) -> list[Finding]:
    results: list[Finding] = []
    for check in CHECKS if checks is None else checks:
        results += check(ctx)
    return results


def render(results: list[Finding]) -> str:
    lines = []
    for result in results:
        mark = "[ ok ]" if result.ok else "[FAIL]"
        detail_lines = result.detail.splitlines() or [""]
        lines.append(f"{mark} {result.name}: {detail_lines[0]}")
        lines += [f"       {line}" for line in detail_lines[1:]]
        if not result.ok and result.fix:
            lines.append(f"       fix: {result.fix}")
    failed = sum(not r.ok for r in results)
    lines.append("")
    lines.append(f"{failed} of {len(results)} checks failed." if failed else f"All {len(results)} checks passed.")
    return "\n".join(lines) + "\n"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = "Check the config, the devices, the udev rules and the usual troublemakers."
    add_config_argument(parser, "the config to check against")
    add_root_argument(parser, "inspect the system tree under this directory (for tests)")


def main(args: argparse.Namespace) -> int:
    ctx = DoctorContext(Layout(args.root), args.config)
    results = run_checks(ctx)
    sys.stdout.write(render(results))
    return 0 if all(r.ok for r in results) else 1
