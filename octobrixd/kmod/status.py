"""What the system says about uvcvideo: the module in memory, its parameter, DKMS builds per kernel,
modprobe.d, Secure Boot, and who has a camera open; and how to show it.

Reads only files (sysfs, procfs, /lib/modules, the DKMS tree, modprobe.d), all through a Layout, so
it works unprivileged, under --root on a recorded tree, and without dkms installed.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from octobrixd.devices.usb_bus import streams_per_hs_bus
from octobrixd.system.paths import Layout
from octobrixd.system.processes import processes

MODULE = "uvcvideo"
PARAM = "max_compressed_payload"
# The patched module's second parameter (since 1.1.1-octobrix2): FIX_BANDWIDTH's computation for
# uncompressed formats on every camera, without replacing any camera's quirks. Off by default.
FIX_PARAM = "uncompressed_bandwidth_fix"
PACKAGE_NAME = "octobrix-uvcvideo"  # as in kmod/dkms.conf
DEFAULT_PAYLOAD = 1024  # the module's own default, used when modprobe.d sets nothing
SECURE_BOOT_VAR = "sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-e0f86df5ce93"
# modprobe reads these in this order of precedence for files of the same name.
MODPROBE_DIRS = ("etc/modprobe.d", "run/modprobe.d", "usr/local/lib/modprobe.d", "lib/modprobe.d")
# Where each distribution's DKMS keeps the key it signs modules with.
SIGNING_CERTS = ("var/lib/dkms/mok.pub", "var/lib/shim-signed/mok/MOK.der")
MOK_STEPS = (
    "enrol the DKMS signing key once: `sudo mokutil --import {cert}` (pick a one-time password), reboot, "
    "choose 'Enroll MOK' in the blue MOK Manager screen and type that password; "
    "or turn Secure Boot off in the firmware setup"
)


class Loaded(StrEnum):
    NOT_LOADED = "not loaded"
    STOCK = "stock"
    PATCHED = "patched"
    BUILTIN = "built into the kernel"


class SecureBoot(StrEnum):
    ENABLED = "enabled"
    DISABLED = "disabled"
    NOT_EFI = "off (legacy BIOS boot)"
    UNKNOWN = "unknown"


class KernelModule(StrEnum):
    """Which uvcvideo modprobe would load on a kernel."""

    PATCHED = "patched"
    STOCK = "stock"
    OTHER = "another out-of-tree build"
    NONE = "none"


@dataclass(frozen=True)
class KernelState:
    release: str
    running: bool
    headers: bool
    built: bool  # a DKMS build of this package exists for it
    uses: KernelModule
    module_path: str | None  # relative to /lib/modules/RELEASE, as modules.dep says


@dataclass(frozen=True)
class VideoUser:
    pid: int
    command: str
    device: str


@dataclass(frozen=True)
class KmodStatus:
    package: str
    loaded: Loaded
    version: str | None
    payload: int | None  # live value of the parameter, when the patched module is loaded
    configured: int | None
    configured_in: str | None
    bandwidth_fix: bool | None  # live value of FIX_PARAM; None: not loaded, or a build without it
    bandwidth_fix_configured: bool | None
    bandwidth_fix_configured_in: str | None
    secure_boot: SecureBoot
    signatures_required: bool
    signing_cert: str  # the certificate DKMS signs with, as a path on the target system
    kernels: tuple[KernelState, ...]
    users: tuple[VideoUser, ...]

    def kernel(self, release: str) -> KernelState | None:
        return next((k for k in self.kernels if k.release == release), None)

    @property
    def running(self) -> KernelState | None:
        return next((k for k in self.kernels if k.running), None)


# ---------------------------------------------------------------------------------------------
# Reading the system


def read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return None


def rooted(layout: Layout, path: Path) -> Path:
    """Follow one symlink the way the target system would: absolute targets are under the root."""
    if not path.is_symlink():
        return path
    target = path.readlink()
    return layout.path(str(target).lstrip("/")) if target.is_absolute() else path.parent / target


def signing_cert(layout: Layout) -> Path:
    for relative in SIGNING_CERTS:
        if layout.path(relative).is_file():
            return layout.path(relative)
    return layout.path(SIGNING_CERTS[0])


def running_kernel(layout: Layout) -> str | None:
    return read_text(layout.path("proc/sys/kernel/osrelease"))


def loaded_module(layout: Layout) -> tuple[Loaded, str | None, int | None]:
    """State, version and live parameter value of the uvcvideo in memory."""
    base = layout.sys / "module" / MODULE
    if not base.is_dir():
        return Loaded.NOT_LOADED, None, None
    if not (base / "initstate").exists():
        return Loaded.BUILTIN, None, None
    version = read_text(base / "version")
    raw = read_text(base / "parameters" / PARAM)
    if raw is None:
        return Loaded.STOCK, version, None
    return Loaded.PATCHED, version, int(raw) if raw.isdigit() else None


def _modprobe_files(layout: Layout) -> list[Path]:
    by_name: dict[str, Path] = {}
    for directory in reversed(MODPROBE_DIRS):  # later (higher precedence) directories replace earlier
        for path in layout.path(directory).glob("*.conf"):
            by_name[path.name] = path
    return [by_name[name] for name in sorted(by_name)]


def configured_option(layout: Layout, name: str) -> tuple[str | None, str | None]:
    """The raw value modprobe will pass for option name when it loads uvcvideo, and the file that sets
    it (the last one wins)."""
    value: str | None = None
    where: str | None = None
    for path in _modprobe_files(layout):
        for line in (read_text(path) or "").splitlines():
            words = line.split("#", 1)[0].split()
            if len(words) < 3 or words[0] != "options" or words[1] != MODULE:
                continue
            for option in words[2:]:
                key, _, raw = option.partition("=")
                if key == name:
                    value = raw
                    where = "/" + str(path.relative_to(layout.root))
    return value, where


def configured_payload(layout: Layout) -> tuple[int | None, str | None]:
    """The max_compressed_payload modprobe will pass, and the file that sets it."""
    raw, where = configured_option(layout, PARAM)
    return (int(raw), where) if raw is not None and raw.isdigit() else (None, None)


def parse_bool(raw: str | None) -> bool | None:
    """A kernel bool parameter as sysfs shows it (Y/N) or modprobe.d sets it (y, 1, on...)."""
    if raw is None:
        return None
    value = raw.strip().lower()
    if value in ("y", "1", "on", "yes", "true"):
        return True
    if value in ("n", "0", "off", "no", "false", ""):
        return False
    return None


def configured_bandwidth_fix(layout: Layout) -> tuple[bool | None, str | None]:
    raw, where = configured_option(layout, FIX_PARAM)
    value = parse_bool(raw)
    return (value, where) if value is not None else (None, None)


def live_bandwidth_fix(layout: Layout) -> bool | None:
    """The loaded module's uncompressed_bandwidth_fix; None when uvcvideo is not loaded or has no such parameter."""
    return parse_bool(read_text(layout.sys / "module" / MODULE / "parameters" / FIX_PARAM))


def secure_boot(layout: Layout) -> SecureBoot:
    if not layout.path("sys/firmware/efi").is_dir():
        return SecureBoot.NOT_EFI
    try:
        data = layout.path(SECURE_BOOT_VAR).read_bytes()
    except FileNotFoundError:
        return SecureBoot.DISABLED  # firmware without Secure Boot support
    except PermissionError:
        return SecureBoot.UNKNOWN
    # efivarfs: 4 bytes of attributes, then the variable's single byte.
    if len(data) < 5:
        return SecureBoot.UNKNOWN
    return SecureBoot.ENABLED if data[4] == 1 else SecureBoot.DISABLED


def signatures_required(layout: Layout) -> bool:
    """True when this kernel refuses unsigned modules (module.sig_enforce, or lockdown under Secure Boot)."""
    if read_text(layout.sys / "module" / "module" / "parameters" / "sig_enforce") == "Y":
        return True
    lockdown = read_text(layout.path("sys/kernel/security/lockdown")) or ""
    return "[integrity]" in lockdown or "[confidentiality]" in lockdown


def _module_in_dep(modules_dir: Path) -> str | None:
    for line in (read_text(modules_dir / "modules.dep") or "").splitlines():
        path = line.split(":", 1)[0]
        if re.fullmatch(rf"(?:.*/)?{MODULE}\.ko(?:\.(?:xz|gz|zst))?", path):
            return path
    return None


def kernel_states(layout: Layout, package: str) -> tuple[KernelState, ...]:
    running = running_kernel(layout)
    states = []
    modules_root = layout.path("lib/modules")
    dkms_dir = layout.path(f"var/lib/dkms/{package}")
    for modules_dir in sorted(modules_root.iterdir() if modules_root.is_dir() else (), reverse=True):
        if not modules_dir.is_dir():
            continue
        release = modules_dir.name
        built = any(dkms_dir.glob(f"*/{release}/*/module/{MODULE}.ko*"))
        path = _module_in_dep(modules_dir)
        if path is None:
            uses = KernelModule.NONE
        elif path.startswith("kernel/"):
            uses = KernelModule.STOCK
        elif path.startswith("updates/") and built:
            uses = KernelModule.PATCHED
        else:
            uses = KernelModule.OTHER
        headers = (rooted(layout, modules_dir / "build") / "Makefile").is_file()
        states.append(KernelState(release, release == running, headers, built, uses, path))
    return tuple(states)


def video_users(layout: Layout) -> tuple[VideoUser, ...]:
    """Processes holding a uvcvideo device node open: they keep the module from being unloaded."""
    nodes = set()
    for node in layout.path("sys/class/video4linux").glob("*"):
        driver = node / "device" / "driver"
        if driver.is_symlink() and driver.readlink().name == MODULE:
            nodes.add(f"/dev/{node.name}")
    users = []
    if nodes:
        try:
            running = processes(layout.path("proc"))
        except OSError:
            running = []  # no /proc to read: nobody seen
        for process in running:
            try:
                links = {target for _, target in process.open_files()}
            except PermissionError:
                continue  # not ours to look at
            for device in sorted(nodes & links):
                users.append(VideoUser(process.pid, process.command, device))
    return tuple(sorted(users, key=lambda u: (u.device, u.pid)))


def module_refcount(layout: Layout) -> int:
    raw = read_text(layout.sys / "module" / MODULE / "refcnt")
    return int(raw) if raw and raw.isdigit() else 0


def read_status(layout: Layout, package: str = PACKAGE_NAME) -> KmodStatus:
    loaded, version, payload = loaded_module(layout)
    configured, configured_in = configured_payload(layout)
    fix_configured, fix_configured_in = configured_bandwidth_fix(layout)
    return KmodStatus(
        package=package,
        loaded=loaded,
        version=version,
        payload=payload,
        configured=configured,
        configured_in=configured_in,
        bandwidth_fix=live_bandwidth_fix(layout) if loaded is Loaded.PATCHED else None,
        bandwidth_fix_configured=fix_configured,
        bandwidth_fix_configured_in=fix_configured_in,
        secure_boot=secure_boot(layout),
        signatures_required=signatures_required(layout),
        signing_cert="/" + str(signing_cert(layout).relative_to(layout.root)),
        kernels=kernel_states(layout, package),
        users=video_users(layout),
    )


# ---------------------------------------------------------------------------------------------
# Showing it


def _payload_text(value: int) -> str:
    if value == 0:
        return "0 (stock behaviour)"
    return f"{value} bytes per microframe (room for about {streams_per_hs_bus(value)} MJPEG cameras per USB 2 bus)"


def _fix_text(value: bool | None) -> str:
    if value is None:
        return "not in this build: `sudo octobrixctl kmod install` builds the current one"
    if value:
        return "on (YUYV cameras reserve what their size and frame rate need, as FIX_BANDWIDTH computes it)"
    return "off (stock behaviour: YUYV cameras reserve what they ask for)"


def _kernel_line(state: KernelState) -> str:
    flag = "running" if state.running else ""
    if state.uses is KernelModule.PATCHED:
        detail = state.module_path or ""
    elif state.built:
        detail = "DKMS build present but not installed"
    elif not state.headers:
        detail = f"no DKMS build: no headers (apt-get install linux-headers-{state.release})"
    else:
        detail = "no DKMS build yet"
    return f"  {state.release:<28} {flag:<8} {state.uses.value:<9} {detail}".rstrip()


def format_status(status: KmodStatus) -> str:
    lines = []
    if status.loaded is Loaded.PATCHED:
        value = _payload_text(status.payload) if status.payload is not None else "?"
        lines.append(f"uvcvideo:     patched (version {status.version}), {PARAM}={value}")
    elif status.loaded is Loaded.STOCK:
        lines.append(f"uvcvideo:     stock (version {status.version or 'unknown'}), no {PARAM} parameter")
    else:
        lines.append(f"uvcvideo:     {status.loaded.value}")
    if status.loaded is Loaded.PATCHED:
        lines.append(f"uncompressed: {FIX_PARAM}={_fix_text(status.bandwidth_fix)}")
    if status.configured is not None:
        lines.append(f"configured:   {PARAM}={status.configured} in {status.configured_in}")
    else:
        lines.append(f"configured:   no {PARAM} in modprobe.d (the module's default, {DEFAULT_PAYLOAD}, applies)")
    if status.bandwidth_fix_configured is not None:
        value = "on" if status.bandwidth_fix_configured else "off"
        lines.append(f"configured:   {FIX_PARAM}={value} in {status.bandwidth_fix_configured_in}")
    else:
        lines.append(f"configured:   no {FIX_PARAM} in modprobe.d (the module's default, off, applies)")
    signing = ", unsigned modules are refused" if status.signatures_required else ""
    lines.append(f"secure boot:  {status.secure_boot.value}{signing}")
    lines.append(f"kernels (DKMS {status.package}):")
    lines.extend(_kernel_line(k) for k in status.kernels)
    if not status.kernels:
        lines.append("  none found in /lib/modules")
    lines.extend(f"note: {note}" for note in status_notes(status))
    return "\n".join(lines) + "\n"


def status_notes(status: KmodStatus) -> list[str]:
    """What the user should do next, if anything."""
    notes = []
    running = status.running
    if running is not None and running.uses is not KernelModule.PATCHED:
        notes.append(
            f"the running kernel {running.release} has no patched uvcvideo: run `sudo octobrixctl kmod install`"
        )
    elif running is not None and status.loaded is Loaded.STOCK:
        notes.append(
            "the patched module is installed but the stock one is still loaded: "
            "run `sudo octobrixctl kmod install` to reload it, or reboot"
        )
    if (
        status.loaded is Loaded.PATCHED
        and status.configured is not None
        and status.payload is not None
        and status.payload != status.configured
    ):
        notes.append(
            f"live {PARAM}={status.payload} differs from the configured {status.configured}: it applies when "
            f"uvcvideo is next loaded; to apply it now, write it to /sys/module/{MODULE}/parameters/{PARAM} "
            "and restart the camera streamers"
        )
    if (
        status.loaded is Loaded.PATCHED
        and status.bandwidth_fix is not None
        and status.bandwidth_fix_configured is not None
        and status.bandwidth_fix != status.bandwidth_fix_configured
    ):
        wanted = "Y" if status.bandwidth_fix_configured else "N"
        notes.append(
            f"live {FIX_PARAM}={'on' if status.bandwidth_fix else 'off'} differs from the configured "
            f"{'on' if status.bandwidth_fix_configured else 'off'}: it applies when uvcvideo is next loaded; to "
            f"apply it now, `echo {wanted} | sudo tee /sys/module/{MODULE}/parameters/{FIX_PARAM}` and restart "
            "the camera streamers"
        )
    if status.signatures_required:
        notes.append("this kernel only loads signed modules: " + MOK_STEPS.format(cert=status.signing_cert))
    return notes


def status_json(status: KmodStatus) -> str:
    return json.dumps(dataclasses.asdict(status), indent=2, default=str) + "\n"
