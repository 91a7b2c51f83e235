"""USB bandwidth advisor: will these cameras stream together, on the buses they are plugged into?

A streaming USB camera reserves part of its bus's periodic (isochronous) time when its stream
starts, and the kernel refuses a reservation that would overbook the bus: VIDIOC_STREAMON fails
with ENOSPC, "No space left on device" (about the bus, not a disk). This module estimates every
camera's reservation from facts, adds them up per bandwidth domain and says what helps, before a
camera fails.

The facts the model uses:

- The periodic budgets (100 of every 125 µs high-speed microframe, 900 of every full-speed 1 ms
  frame), the largest isochronous packets, and the bus time the kernel books per transaction
  (HS_USECS_ISO, usb_calc_bus_time): devices/usb_bus.py, which the uvcvideo status uses too.
- Stock uvcvideo asks for what the camera names in its probe answer (dwMaxPayloadTransferSize)
  and streams on the smallest alternate setting whose packet holds it (uvc_video_start_transfer);
  the controller books that setting's whole packet. Cheap cameras name their largest setting,
  whatever the resolution and frame rate, for MJPEG and for YUYV alike: typically 3 x 1024 = 3072
  bytes per microframe, 61 µs of the 100. So one such camera per bus, and with the stock driver a
  lower size or rate does not help. The sizes are the camera's own when it is plugged in (its
  descriptors in sysfs, cameras/usb_descriptors.py); otherwise TYPICAL_ALT_PAYLOADS.
- The kernel's FIX_BANDWIDTH computation (uvc_fixup_video_ctrl in drivers/media/usb/uvc/uvc_video.c)
  replaces that request for uncompressed formats with width x height / 8 x bpp x (fps + 1) / 1000
  / 8 + 12 bytes, at least 1024; octobrix's patched uvcvideo applies it to every camera with
  uncompressed_bandwidth_fix. Then size and rate decide, rounded up to the camera's next setting.
- octobrix's patched uvcvideo (kmod/README.md) caps the MJPEG request at max_compressed_payload
  bytes per microframe (high-speed cameras only); the driver rounds up to the camera's next
  alternate setting, which octobrix cannot see, so the cap itself is the estimate.
- Which cameras share a budget: on EHCI (and whenever the controller is unknown) the whole bus; an
  xHCI controller budgets each root port on its own, so cameras share only when they hang off the
  same root port (through a hub). Full-speed cameras behind a USB 2 hub share that hub's
  transaction translator (assumed single-TT, the common cheap hub).
- SuperSpeed (USB 3) cameras: 90% of each 125 µs bus interval at 5 Gbit/s (8b/10b coding: 2 ns per
  byte). Their reservation is estimated from what the stream needs; the patch leaves them alone.

MJPEG frame sizes are estimates (kmod/README.md's table): about 0.11 bytes per pixel at webcam
quality, and up to 1.5 times that for busy scenes; the advisor plans with the busy figure.
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path

from octobrixd.cameras.usb_descriptors import read_alt_payloads
from octobrixd.config.model import Camera, Config
from octobrixd.config.values import PixelFormat
from octobrixd.devices.inventory import Device, Inventory
from octobrixd.devices.usb_bus import (
    FS_BUDGET_US,
    FS_FRAME_US,
    FS_MAX_PAYLOAD,
    HS_BUDGET_US,
    HS_MAX_PAYLOAD,
    HS_MICROFRAME_US,
    SS_BUDGET_US,
    SS_INTERVAL_US,
    fs_isoc_bus_time_us,
    hs_isoc_bus_time_us,
    ss_bus_time_us,
)
from octobrixd.findings import Finding
from octobrixd.kmod.status import (
    DEFAULT_PAYLOAD,
    FIX_PARAM,
    PACKAGE_NAME,
    KernelModule,
    Loaded,
    kernel_states,
    live_bandwidth_fix,
    loaded_module,
)
from octobrixd.system.paths import Layout

CHECK = "USB bandwidth"  # the check doctor reports the advisor's findings under

STOCK_MJPEG_PAYLOAD = HS_MAX_PAYLOAD  # what cheap cameras ask for MJPEG, whatever the mode
UVC_HEADER = 12  # bytes of UVC payload header in every isochronous packet
MJPEG_BYTES_PER_PIXEL = 0.11
BUSY_SCENE = 1.5
YUYV_BYTES_PER_PIXEL = 2
YUYV_BITS_PER_PIXEL = 16  # format->bpp of YUYV in uvcvideo's format table
FIX_BANDWIDTH_FLOOR = 1024  # the kernel's floor for its estimate ("too low for many cameras")
# The isochronous alternate settings of a typical cheap USB 2 camera (1x128, 1x256, 1x800, 2x800,
# 3x800, 3x1024 bytes per microframe), for a camera that is not plugged in to read its own.
TYPICAL_ALT_PAYLOADS = (128, 256, 800, 1600, 2400, 3072)
# Frame rates and sizes the advisor tries when it suggests a lower YUYV mode.
LOWER_FPS = (25, 20, 15, 10, 5)
LOWER_SIZES = ((800, 600), (640, 480), (320, 240))
# Caps the advisor may suggest, from kmod/README.md's table: the module's default first.
SUGGESTED_CAPS = (1024, 768, 512)


class Speed(StrEnum):
    FULL = "USB 1.1 full speed"
    HIGH = "USB 2"
    SUPER = "USB 3"

    @staticmethod
    def of(mbps: float | None) -> Speed:
        if mbps is None:
            return Speed.HIGH  # what nearly every UVC camera is, and what a config-only judgement assumes
        if mbps >= 5000:
            return Speed.SUPER
        return Speed.HIGH if mbps >= 480 else Speed.FULL


@dataclass(frozen=True)
class Placement:
    """Where a camera sits on USB."""

    port: str  # "1-3.2": bus 1, root port 3, hub port 2
    speed_mbps: float | None
    controller: str | None  # the host controller's driver: xhci_hcd, ehci-pci...
    attached: bool  # seen plugged in; False: judged from the config's usb_port alone
    # The camera's own isochronous alternate setting sizes, from its descriptors; None: not known.
    alt_payloads: tuple[int, ...] | None = None

    @property
    def bus(self) -> int:
        return int(self.port.split("-", 1)[0])

    @property
    def root_port(self) -> str:
        return self.port.split(".", 1)[0]

    @property
    def hub(self) -> str | None:
        """The port path of the hub the camera is plugged into; None when it is on a root port."""
        return self.port.rsplit(".", 1)[0] if "." in self.port else None


@dataclass(frozen=True)
class CameraLoad:
    name: str
    placement: Placement
    mode: str  # "MJPEG 1280x720@15"
    format: PixelFormat
    reserved_bytes: int  # per microframe (per frame at full speed)
    bus_time_us: float
    need_bytes: int  # what the stream needs per interval in a busy scene
    capped: bool  # the kmod cap set the reservation
    request_bytes: int = 0  # what the driver asks for, before rounding up to an alternate setting
    fixed: bool = False  # uncompressed_bandwidth_fix computed the request
    alts_known: bool = False  # the alternate settings are the camera's own, not the typical table
    camera: Camera | None = field(default=None, compare=False, repr=False)  # for suggesting other modes

    @property
    def alts(self) -> tuple[int, ...]:
        return self.placement.alt_payloads or TYPICAL_ALT_PAYLOADS


@dataclass(frozen=True)
class Domain:
    """One budget of periodic bus time, shared by the cameras in it."""

    label: str  # "bus 1", "bus 1, root port 1-3", "hub 1-3 (full speed)"
    speed: Speed
    budget_us: float
    interval_us: int
    cameras: tuple[CameraLoad, ...]

    @property
    def used_us(self) -> float:
        return sum(camera.bus_time_us for camera in self.cameras)

    @property
    def over(self) -> bool:
        return self.used_us > self.budget_us

    @property
    def fitting(self) -> int:
        """How many of its cameras stream, in the order they start (the first ones win)."""
        total = 0.0
        for count, camera in enumerate(self.cameras):
            total += camera.bus_time_us
            if total > self.budget_us:
                return count
        return len(self.cameras)


@dataclass(frozen=True)
class Cap:
    """The uvcvideo settings that apply (max_compressed_payload, uncompressed_bandwidth_fix), and where
    they come from."""

    payload: int  # 0: stock behaviour
    source: str
    note: str | None = None  # e.g. a configured cap that the loaded driver ignores
    uncompressed_fix: bool = False
    note_is_fix: bool = False  # the note is about uncompressed_bandwidth_fix (it matters to YUYV cameras)


@dataclass(frozen=True)
class BandwidthWarning:
    """One thing the advisor warns about; str() is the line discover and apply print."""

    problem: str
    helps: tuple[str, ...] = ()  # what makes it fit, in the order worth trying
    remark: str = ""  # said after the helps
    subject: str = ""  # "USB bandwidth: " for a shared budget, before the problem

    @property
    def fix(self) -> str | None:
        return "; ".join(self.helps) + "." + self.remark if self.helps else None

    def __str__(self) -> str:
        return self.subject + self.problem + (f". What helps: {self.fix}" if self.fix else "")

    def finding(self) -> Finding:
        """As doctor reports it: the problem, and what helps (or where to see the buses)."""
        return Finding(
            CHECK,
            False,
            self.problem,
            self.fix or "see `octobrixctl discover` for where each camera is and what it reserves",
        )


@dataclass(frozen=True)
class Advice:
    cap: Cap
    domains: tuple[Domain, ...]
    unplaced: tuple[str, ...]  # cameras whose bus is not known (not attached, and no usb_port)
    problems: tuple[str, ...]  # per-camera trouble that is not about sharing (a mode too big, a cap too small)
    # Attached cameras that are not on USB (capture cards, CSI, loopback): they book no USB time at all.
    off_usb: tuple[str, ...] = ()

    @property
    def over(self) -> tuple[Domain, ...]:
        return tuple(d for d in self.domains if d.over)

    def warnings(self) -> list[str]:
        return [str(warning) for warning in self.findings()]

    def findings(self) -> list[BandwidthWarning]:
        out = [describe_over(domain, self.cap) for domain in self.over]
        out += [BandwidthWarning(problem) for problem in self.problems]
        mjpeg_usb2 = any(
            d.speed is Speed.HIGH and c.format is PixelFormat.MJPEG for d in self.domains for c in d.cameras
        )
        yuyv_usb2 = any(d.speed is Speed.HIGH and c.format is PixelFormat.YUYV for d in self.domains for c in d.cameras)
        if self.cap.note and (mjpeg_usb2 or (yuyv_usb2 and self.cap.note_is_fix)):
            out.append(BandwidthWarning(self.cap.note))
        return out


# ---------------------------------------------------------------------------------------------
# The estimate


def mjpeg_need(camera: Camera) -> float:
    """Bytes per second of a busy scene's MJPEG stream."""
    return camera.width * camera.height * MJPEG_BYTES_PER_PIXEL * BUSY_SCENE * camera.fps


def raw_need(camera: Camera) -> float:
    return camera.width * camera.height * YUYV_BYTES_PER_PIXEL * camera.fps


def mode_text(camera: Camera) -> str:
    return f"{camera.format.value.upper()} {camera.resolution}@{camera.fps}"


def fix_bandwidth_payload(width: int, height: int, fps: int, bpp: int = YUYV_BITS_PER_PIXEL) -> int:
    """Bytes per microframe the kernel's FIX_BANDWIDTH computation asks for (uvc_fixup_video_ctrl,
    high speed), in its own unsigned 32-bit integer arithmetic. dwFrameInterval is 1/fps in 100 ns
    units, as the camera lists it (333333 for 30 fps)."""
    interval = 10_000_000 // fps
    bandwidth = width * height // 8 * bpp
    bandwidth = (bandwidth * (10_000_000 // interval + 1)) & 0xFFFFFFFF
    bandwidth //= 1000
    bandwidth //= 8  # microframes, not frames: high speed
    bandwidth += UVC_HEADER
    return max(bandwidth, FIX_BANDWIDTH_FLOOR)


def alt_setting_for(request: int, alts: tuple[int, ...]) -> int:
    """The packet size the driver streams with: the smallest alternate setting that holds the request;
    a request larger than every setting gets the largest (uvcvideo: "UVC non compliance ... Using the
    max size")."""
    return min((size for size in alts if size >= request), default=max(alts))


def load_of(name: str, camera: Camera, placement: Placement, cap: int, uncompressed_fix: bool = False) -> CameraLoad:
    speed = Speed.of(placement.speed_mbps)
    per_second = mjpeg_need(camera) if camera.format is PixelFormat.MJPEG else raw_need(camera)
    mode = mode_text(camera)
    if speed is Speed.FULL:
        need = math.ceil(per_second * FS_FRAME_US / 1e6) + UVC_HEADER
        reserved = FS_MAX_PAYLOAD if camera.format is PixelFormat.MJPEG else min(need, FS_MAX_PAYLOAD)
        return CameraLoad(
            name, placement, mode, camera.format, reserved, fs_isoc_bus_time_us(reserved), need, False, reserved
        )
    need = math.ceil(per_second * HS_MICROFRAME_US / 1e6) + UVC_HEADER
    if speed is Speed.SUPER:
        return CameraLoad(name, placement, mode, camera.format, need, ss_bus_time_us(need), need, False, need)
    own = placement.alt_payloads

    def high_speed(reserved: int, capped: bool, request: int, fixed: bool) -> CameraLoad:
        time_us, known = hs_isoc_bus_time_us(reserved), bool(own)
        return CameraLoad(name, placement, mode, camera.format, reserved, time_us, need, capped, request, fixed, known)

    if camera.format is PixelFormat.MJPEG:
        capped = 0 < cap < STOCK_MJPEG_PAYLOAD
        request = cap if capped else STOCK_MJPEG_PAYLOAD
        # Without the camera's own settings the cap itself is the estimate (kmod/README.md's table).
        return high_speed(alt_setting_for(request, own) if own else request, capped, request, False)
    alts = own or TYPICAL_ALT_PAYLOADS
    # Stock: the camera's own request, which cheap cameras make their largest setting for any mode.
    request = fix_bandwidth_payload(camera.width, camera.height, camera.fps) if uncompressed_fix else max(alts)
    return high_speed(alt_setting_for(request, alts), False, request, uncompressed_fix)


def domain_of(placement: Placement) -> tuple[str, Speed]:
    speed = Speed.of(placement.speed_mbps)
    xhci = (placement.controller or "").startswith("xhci")
    if speed is Speed.FULL and placement.hub is not None:
        return f"hub {placement.hub} (its full-speed transaction translator)", speed
    if xhci:
        return f"bus {placement.bus}, root port {placement.root_port}", speed
    return f"bus {placement.bus}", speed


def advise(config: Config, placements: Mapping[str, Placement], cap: Cap, off_usb: Collection[str] = ()) -> Advice:
    """The cameras in placements judged by bus; those named in off_usb are on none, so not judged."""
    grouped: dict[tuple[str, Speed], list[CameraLoad]] = {}
    problems: list[str] = []
    unplaced: list[str] = []
    for name in sorted(config.cameras):
        if name in off_usb:
            continue
        camera = config.cameras[name]
        placement = placements.get(name)
        if placement is None:
            unplaced.append(name)
            continue
        load = replace(load_of(name, camera, placement, cap.payload, cap.uncompressed_fix), camera=camera)
        grouped.setdefault(domain_of(placement), []).append(load)
        problems += _camera_problems(load, camera, placement)
    domains = []
    for (label, speed), loads in sorted(grouped.items()):
        budget, interval = {
            Speed.HIGH: (HS_BUDGET_US, HS_MICROFRAME_US),
            Speed.FULL: (FS_BUDGET_US, FS_FRAME_US),
            Speed.SUPER: (SS_BUDGET_US, SS_INTERVAL_US),
        }[speed]
        domains.append(Domain(label, speed, budget, interval, tuple(loads)))
    off = tuple(name for name in sorted(config.cameras) if name in off_usb)
    return Advice(cap, tuple(domains), tuple(unplaced), tuple(problems), off)


def _camera_problems(load: CameraLoad, camera: Camera, placement: Placement) -> list[str]:
    speed = Speed.of(placement.speed_mbps)
    limit = FS_MAX_PAYLOAD if speed is Speed.FULL else max(placement.alt_payloads or TYPICAL_ALT_PAYLOADS)
    if camera.format is PixelFormat.YUYV and speed is not Speed.SUPER and load.need_bytes > limit:
        per_interval = "frame" if speed is Speed.FULL else "microframe"
        return [
            f"cameras.{load.name}: {load.mode} needs about {load.need_bytes} bytes per {per_interval}, more than "
            f"one {speed.value} camera can move ({limit}): it will not stream in this mode — lower the "
            'resolution or fps, or use format = "mjpeg"'
        ]
    if load.capped and (load.reserved_bytes - UVC_HEADER) < load.need_bytes - UVC_HEADER:
        return [
            f"cameras.{load.name}: {load.mode} may need up to {load.need_bytes} bytes per microframe in a busy "
            f"scene, more than the uvcvideo cap of {load.reserved_bytes} lets through: expect torn or grey frames "
            "or fewer fps — raise [uvcvideo] max_compressed_payload, or lower this camera's resolution or fps"
        ]
    return []


def suggested_cap(domain: Domain) -> int | None:
    """The largest usual cap under which every MJPEG camera of the domain fits and still gets its stream."""
    for payload in SUGGESTED_CAPS:
        times: list[float] = []
        for camera in domain.cameras:
            if camera.format is PixelFormat.MJPEG:
                if camera.need_bytes > payload:
                    break
                times.append(hs_isoc_bus_time_us(payload))
            else:
                times.append(camera.bus_time_us)
        else:
            if sum(times) <= domain.budget_us:
                return payload
    return None


def _relaxed(
    domain: Domain, cap: Cap, *, fix: bool, size: tuple[int, int] | None = None, fps: int | None = None
) -> float:
    """Bus time of the domain if its YUYV cameras ran with the fix on or off, at most this size and rate."""
    total = 0.0
    for load in domain.cameras:
        camera = load.camera
        if camera is None or camera.format is not PixelFormat.YUYV:
            total += load.bus_time_us
            continue
        changes: dict[str, object] = {}
        if size is not None and size[0] * size[1] < camera.width * camera.height:
            changes["resolution"] = f"{size[0]}x{size[1]}"
        if fps is not None and fps < camera.fps:
            changes["fps"] = fps
        total += load_of(load.name, camera.model_copy(update=changes), load.placement, cap.payload, fix).bus_time_us
    return total


def yuyv_helps(domain: Domain, cap: Cap) -> list[str]:
    """What makes the YUYV cameras of a USB 2 domain fit, with the numbers."""
    yuyv = [c for c in domain.cameras if c.format is PixelFormat.YUYV]
    source = "their descriptors" if all(c.alts_known for c in yuyv) else "a typical cheap camera's settings"
    helps = []
    if not cap.uncompressed_fix:
        fixed = _relaxed(domain, cap, fix=True)
        sizes = ", ".join(
            f"{c.name} {alt_setting_for(fix_bandwidth_payload(c.camera.width, c.camera.height, c.camera.fps), c.alts)}"
            for c in yuyv
            if c.camera is not None
        )
        verdict = "they fit" if fixed <= domain.budget_us else "still too much"
        helps.append(
            f"the patched uvcvideo with `[uvcvideo] {FIX_PARAM} = true` (`sudo octobrixctl kmod install`): each YUYV "
            f"camera then reserves what its mode needs instead of its largest packet ({sizes} bytes, from {source}); "
            f"{fixed:.0f} of {domain.budget_us:g} µs, {verdict}"
        )
    fps_now = max(c.camera.fps for c in yuyv if c.camera is not None) if yuyv else 0
    for fps in (f for f in LOWER_FPS if f < fps_now):
        used = _relaxed(domain, cap, fix=True, fps=fps)
        if used <= domain.budget_us:
            what = "" if cap.uncompressed_fix else ", with the fix on"
            helps.append(f"a lower rate: fps = {fps} for the YUYV cameras ({used:.0f} µs{what})")
            break
    for size in LOWER_SIZES:
        used = _relaxed(domain, cap, fix=True, size=size)
        smaller = any(c.camera is not None and size[0] * size[1] < c.camera.width * c.camera.height for c in yuyv)
        if smaller and used <= domain.budget_us:
            what = "" if cap.uncompressed_fix else ", with the fix on"
            helps.append(f'a lower size: resolution = "{size[0]}x{size[1]}" ({used:.0f} µs{what})')
            break
    helps.append('or format = "mjpeg", if the camera has it, with the uvcvideo cap')
    return helps


def describe_over(domain: Domain, cap: Cap) -> BandwidthWarning:
    names = ", ".join(c.name for c in domain.cameras)
    interval = "microframe" if domain.interval_us == HS_MICROFRAME_US else "frame"
    fits = domain.fitting
    problem = (
        f"{names} on {domain.label} ({domain.speed.value}) would reserve "
        f"{domain.used_us:.0f} µs of the {domain.budget_us:g} µs each {interval} has for cameras: "
        f"only {fits} of them can stream at once; the next to start fails with 'No space left on device'"
    )
    helps: list[str] = []
    mjpeg_high = domain.speed is Speed.HIGH and any(c.format is PixelFormat.MJPEG for c in domain.cameras)
    if mjpeg_high:
        payload = suggested_cap(domain)
        if cap.payload == 0 and payload is not None:
            helps.append(
                "the patched uvcvideo caps what each MJPEG camera reserves, whatever its mode: "
                f"`sudo octobrixctl kmod install` and `[uvcvideo] max_compressed_payload = {payload}` "
                f"({hs_isoc_bus_time_us(payload)} µs per camera)"
            )
        elif payload is not None and payload < cap.payload:
            helps.append(f"a lower cap: [uvcvideo] max_compressed_payload = {payload}")
        elif cap.payload == 0:
            helps.append("the patched uvcvideo (`sudo octobrixctl kmod install`, [uvcvideo] max_compressed_payload)")
    if domain.speed is Speed.HIGH and any(c.format is PixelFormat.YUYV for c in domain.cameras):
        helps += yuyv_helps(domain, cap)
    elif any(c.format is PixelFormat.YUYV for c in domain.cameras):
        helps.append('lower fps or resolution for the YUYV cameras, or format = "mjpeg" with the uvcvideo cap')
    helps.append(
        "plug some of these cameras into another root port or USB controller, not the same hub "
        "(`octobrixctl discover` shows where each one is)"
    )
    remark = ""
    if mjpeg_high and not any(c.format is PixelFormat.YUYV for c in domain.cameras):
        remark = " Lower fps or resolution does not: an MJPEG camera reserves the same for every mode."
    return BandwidthWarning(problem, tuple(helps), remark, subject="USB bandwidth: ")


# ---------------------------------------------------------------------------------------------
# Reading the system


def _patched_installed(layout: Layout) -> bool:
    """Whether modprobe would load the patched uvcvideo on the running kernel."""
    running = next((k for k in kernel_states(layout, PACKAGE_NAME) if k.running), None)
    return running is not None and running.uses is KernelModule.PATCHED


def effective_cap(config: Config, layout: Layout) -> Cap:
    """The cap streams will get: the loaded module's own value when uvcvideo is in memory; else what
    the config sets (unset: the patched module's default, if it is installed; the stock driver's, if not)."""
    configured = config.uvcvideo.max_compressed_payload
    fix_configured = config.uvcvideo.uncompressed_bandwidth_fix
    loaded, _version, live = loaded_module(layout)
    if loaded is Loaded.PATCHED and live is not None:
        fix = bool(live_bandwidth_fix(layout))
        return Cap(live, f"the loaded patched uvcvideo (max_compressed_payload={live})", uncompressed_fix=fix)
    if loaded in (Loaded.STOCK, Loaded.BUILTIN):
        note = None
        if configured or fix_configured:
            what = f"max_compressed_payload = {configured}" if configured else f"{FIX_PARAM} = true"
            note = (
                f"[uvcvideo] {what} is configured, but the loaded uvcvideo is the "
                "stock driver, which ignores it: `sudo octobrixctl kmod install` (octobrixctl kmod status explains)"
            )
        return Cap(0, "the loaded stock uvcvideo", note, note_is_fix=note is not None and not configured)
    fix = bool(fix_configured)
    if configured is not None:
        return Cap(
            configured, f"[uvcvideo] max_compressed_payload = {configured} in {config.source}", uncompressed_fix=fix
        )
    if _patched_installed(layout):
        return Cap(
            DEFAULT_PAYLOAD, f"the installed patched uvcvideo's default ({DEFAULT_PAYLOAD})", uncompressed_fix=fix
        )
    return Cap(0, "the stock uvcvideo (the patched one is not installed)", uncompressed_fix=fix)


def controller_of_bus(layout: Layout, bus: int) -> str | None:
    """The driver of the host controller behind USB bus N, from sysfs (usbN's parent device)."""
    root_hub = layout.sys / "bus" / "usb" / "devices" / f"usb{bus}"
    try:
        parent = Path(os.path.realpath(root_hub)).parent
        return (parent / "driver").readlink().name
    except OSError:
        return None


def placements(config: Config, inventory: Inventory | None, layout: Layout) -> dict[str, Placement]:
    """Where each configured camera is: as seen plugged in, else as its usb_port says."""
    found: dict[str, Placement] = {}
    attached: Iterable[Device] = inventory.cameras if inventory is not None else ()
    for device in attached:
        usb = device.usb
        if usb is None:
            continue  # not on USB: off_usb() names it
        alts = read_alt_payloads(device.sys_path, usb.port) if device.bound_to else None
        for name in device.bound_to:
            found[name] = Placement(usb.port, usb.speed_mbps, usb.controller, True, alts)
    for name, camera in config.cameras.items():
        if name not in found and camera.usb_port is not None:
            port = camera.usb_port
            found[name] = Placement(port, None, controller_of_bus(layout, int(port.split("-")[0])), attached=False)
    return found


def off_usb(inventory: Inventory | None) -> frozenset[str]:
    """The configured cameras seen attached off USB: a capture card, a CSI camera or a loopback
    device books no USB bus time, so there is nothing to judge or warn about."""
    attached: Iterable[Device] = inventory.cameras if inventory is not None else ()
    return frozenset(name for device in attached if device.usb is None for name in device.bound_to)


def scan_cameras(config: Config, layout: Layout) -> Inventory | None:
    """Attached cameras on a live system; None under --root or where udev cannot be read."""
    if not layout.live:
        return None
    try:
        import pyudev  # noqa: PLC0415 — only a live system has devices to look at

        from octobrixd.devices.inventory import scan  # noqa: PLC0415

        # query_formats=None: nothing is opened, only udev and sysfs are read.
        return scan(pyudev.Context(), config=config, layout=layout, query_formats=None)
    except (ImportError, OSError):
        return None


def advise_system(config: Config, layout: Layout, inventory: Inventory | None = None) -> Advice:
    """The advice for config on this system (or the scratch tree under --root)."""
    if inventory is None:
        inventory = scan_cameras(config, layout)
    return advise(config, placements(config, inventory, layout), effective_cap(config, layout), off_usb(inventory))
