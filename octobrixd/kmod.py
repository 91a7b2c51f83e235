"""`octobrixctl kmod`: the patched uvcvideo from kmod/ — what is loaded, where it is built, installing it.

Status reads only files (sysfs, procfs, /lib/modules, the DKMS tree, modprobe.d), all through a
Layout, so it works unprivileged, under --root on a recorded tree, and without dkms installed.
Install drives the real tools: apt-get for missing headers or kernel sources, dkms, modprobe.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from octobrixd.errors import CommandError, CommandNotFoundError, OctobrixError
from octobrixd.paths import Layout
from octobrixd.proc import run

MODULE = "uvcvideo"
PARAM = "max_compressed_payload"
PACKAGE_NAME = "octobrix-uvcvideo"  # as in kmod/dkms.conf
DEFAULT_PAYLOAD = 1024  # the module's own default, used when modprobe.d sets nothing
# Files of kmod/ that make up the DKMS source package; build products stay behind.
PACKAGE_GLOBS = ("dkms.conf", "Makefile", "*.sh", "*.patch", "README.md")
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
_KEY_REJECTED = ("Key was rejected by service", "Required key not available")
# Of each 125 us USB 2 microframe, periodic (isochronous + interrupt) transfers may use 80%: EHCI
# refuses a stream that would go past 100 us (URB submission fails with -ENOSPC).
USB2_PERIODIC_BUDGET_US = 100


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
class DkmsPackage:
    name: str
    version: str
    source: Path  # the folder holding dkms.conf


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


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return None


def _rooted(layout: Layout, path: Path) -> Path:
    """Follow one symlink the way the target system would: absolute targets are under the root."""
    if not path.is_symlink():
        return path
    target = path.readlink()
    return layout.path(str(target).lstrip("/")) if target.is_absolute() else path.parent / target


def read_dkms_conf(source: Path) -> DkmsPackage:
    text = _read(source / "dkms.conf")
    if text is None:
        raise OctobrixError(f"{source}/dkms.conf is missing", hint="point --source at octobrix's kmod/ folder")
    values = dict(re.findall(r'^(PACKAGE_NAME|PACKAGE_VERSION)="([^"$]+)"', text, re.MULTILINE))
    if set(values) != {"PACKAGE_NAME", "PACKAGE_VERSION"}:
        raise OctobrixError(f"{source}/dkms.conf has no literal PACKAGE_NAME and PACKAGE_VERSION")
    return DkmsPackage(values["PACKAGE_NAME"], values["PACKAGE_VERSION"], source)


def find_package(layout: Layout, explicit: Path | None = None) -> DkmsPackage:
    """The kmod/ folder: --source, the checkout this code runs from, or what a package put in /usr/src."""
    if explicit is not None:
        return read_dkms_conf(explicit)
    checkout = Path(__file__).resolve().parent.parent / "kmod"
    if (checkout / "dkms.conf").is_file():
        return read_dkms_conf(checkout)
    installed = sorted(layout.path("usr/src").glob("octobrix-uvcvideo-*/dkms.conf"))
    if installed:
        return read_dkms_conf(installed[-1].parent)
    raise OctobrixError(
        "cannot find octobrix's uvcvideo DKMS sources (kmod/)",
        hint="pass --source DIR, the kmod/ folder of octobrix",
    )


def running_kernel(layout: Layout) -> str | None:
    return _read(layout.path("proc/sys/kernel/osrelease"))


def loaded_module(layout: Layout) -> tuple[Loaded, str | None, int | None]:
    """State, version and live parameter value of the uvcvideo in memory."""
    base = layout.sys / "module" / MODULE
    if not base.is_dir():
        return Loaded.NOT_LOADED, None, None
    if not (base / "initstate").exists():
        return Loaded.BUILTIN, None, None
    version = _read(base / "version")
    raw = _read(base / "parameters" / PARAM)
    if raw is None:
        return Loaded.STOCK, version, None
    return Loaded.PATCHED, version, int(raw) if raw.isdigit() else None


def _modprobe_files(layout: Layout) -> list[Path]:
    by_name: dict[str, Path] = {}
    for directory in reversed(MODPROBE_DIRS):  # later (higher precedence) directories replace earlier
        for path in layout.path(directory).glob("*.conf"):
            by_name[path.name] = path
    return [by_name[name] for name in sorted(by_name)]


def configured_payload(layout: Layout) -> tuple[int | None, str | None]:
    """The value modprobe will pass when it loads uvcvideo, and the file that sets it (the last one wins)."""
    value: int | None = None
    where: str | None = None
    for path in _modprobe_files(layout):
        for line in (_read(path) or "").splitlines():
            words = line.split("#", 1)[0].split()
            if len(words) < 3 or words[0] != "options" or words[1] != MODULE:
                continue
            for option in words[2:]:
                key, _, raw = option.partition("=")
                if key == PARAM and raw.isdigit():
                    value = int(raw)
                    where = "/" + str(path.relative_to(layout.root))
    return value, where


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
    if _read(layout.sys / "module" / "module" / "parameters" / "sig_enforce") == "Y":
        return True
    lockdown = _read(layout.path("sys/kernel/security/lockdown")) or ""
    return "[integrity]" in lockdown or "[confidentiality]" in lockdown


def _module_in_dep(modules_dir: Path) -> str | None:
    for line in (_read(modules_dir / "modules.dep") or "").splitlines():
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
        headers = (_rooted(layout, modules_dir / "build") / "Makefile").is_file()
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
        for proc in layout.path("proc").glob("[0-9]*"):
            try:
                links = {str(fd.readlink()) for fd in (proc / "fd").iterdir()}
            except OSError:
                continue  # gone, or not ours to look at
            for device in sorted(nodes & links):
                users.append(VideoUser(int(proc.name), _read(proc / "comm") or "?", device))
    return tuple(sorted(users, key=lambda u: (u.device, u.pid)))


def module_refcount(layout: Layout) -> int:
    raw = _read(layout.sys / "module" / MODULE / "refcnt")
    return int(raw) if raw and raw.isdigit() else 0


def read_status(layout: Layout, package: str = PACKAGE_NAME) -> KmodStatus:
    loaded, version, payload = loaded_module(layout)
    configured, configured_in = configured_payload(layout)
    return KmodStatus(
        package=package,
        loaded=loaded,
        version=version,
        payload=payload,
        configured=configured,
        configured_in=configured_in,
        secure_boot=secure_boot(layout),
        signatures_required=signatures_required(layout),
        signing_cert="/" + str(_signing_cert(layout).relative_to(layout.root)),
        kernels=kernel_states(layout, package),
        users=video_users(layout),
    )


def isoc_bus_time_us(payload: int) -> int:
    """Microseconds the kernel books per microframe for a high-speed isochronous stream of payload bytes.

    The formula of HS_USECS_ISO in include/linux/usb/hcd.h: worst-case bit stuffing (7/6), the
    protocol overhead of an isochronous transaction, at 2083 ps per bit, rounded up.
    """
    bit_time = 7 * 8 * payload // 6
    nanoseconds = (38 * 8 * 2083 + 2083 * (3 + bit_time)) // 1000 + 5
    return -(-nanoseconds // 1000)


def cameras_per_bus(payload: int) -> int:
    """How many streams of payload bytes per microframe fit the periodic budget of one USB 2 bus."""
    return USB2_PERIODIC_BUDGET_US // isoc_bus_time_us(payload)


# ---------------------------------------------------------------------------------------------
# Showing it


def _payload_text(value: int) -> str:
    if value == 0:
        return "0 (stock behaviour)"
    return f"{value} bytes per microframe (room for about {cameras_per_bus(value)} MJPEG cameras per USB 2 bus)"


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
    if status.configured is not None:
        lines.append(f"configured:   {PARAM}={status.configured} in {status.configured_in}")
    else:
        lines.append(f"configured:   no {PARAM} in modprobe.d (the module's default, {DEFAULT_PAYLOAD}, applies)")
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
    if status.signatures_required:
        notes.append("this kernel only loads signed modules: " + MOK_STEPS.format(cert=status.signing_cert))
    return notes


def status_json(status: KmodStatus) -> str:
    return json.dumps(dataclasses.asdict(status), indent=2, default=str) + "\n"


# ---------------------------------------------------------------------------------------------
# Installing


Say = Callable[[str], None]


def _series(release: str) -> tuple[str, str]:
    """6.1.0-56-amd64 -> ("6.1", "6.1.0"): the series and the X.Y.Z Ubuntu names its packages by."""
    match = re.match(r"(\d+\.\d+)(\.\d+)?", release)
    if not match:
        raise OctobrixError(f"cannot tell the kernel series of {release!r}")
    return match.group(1), match.group(0)


def _apt_available(package: str) -> bool:
    try:
        result = run(["apt-cache", "show", "--no-all-versions", package], check=False)
    except CommandNotFoundError:
        return False
    return result.returncode == 0 and "Package:" in result.stdout


def _apt_install(packages: Iterable[str], say: Say) -> None:
    names = list(packages)
    say(f"installing {' '.join(names)} with apt-get")
    run(
        [
            "apt-get",
            "-o",
            "DPkg::Lock::Timeout=300",
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            *names,
        ],
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )


def _package_files(source: Path) -> list[Path]:
    return sorted({path for pattern in PACKAGE_GLOBS for path in source.glob(pattern) if path.is_file()})


def stage_package(layout: Layout, package: DkmsPackage, say: Say) -> Path:
    """Put the DKMS sources in /usr/src/NAME-VERSION and register them with DKMS; idempotent."""
    target = layout.path(f"usr/src/{package.name}-{package.version}")
    registered = layout.path(f"var/lib/dkms/{package.name}/{package.version}")
    if target.resolve() != package.source.resolve():
        files = _package_files(package.source)
        same = all((target / f.name).is_file() and (target / f.name).read_bytes() == f.read_bytes() for f in files)
        if not same:
            if registered.exists():
                # Same version, different files: a development rebuild. DKMS caches builds per version.
                say(f"replacing the registered {package.name}/{package.version} with changed sources")
                run(["dkms", "remove", "-m", package.name, "-v", package.version, "--all"])
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            for f in files:
                shutil.copy2(f, target / f.name)
    if not registered.exists():
        run(["dkms", "add", "-m", package.name, "-v", package.version])
    return target


def _ensure_headers(layout: Layout, release: str, use_apt: bool, say: Say) -> None:
    if (_rooted(layout, layout.path(f"lib/modules/{release}/build")) / "Makefile").is_file():
        return
    headers = f"linux-headers-{release}"
    if use_apt and _apt_available(headers):
        _apt_install([headers], say)
        return
    raise OctobrixError(
        f"no kernel headers for {release}: DKMS cannot build modules for it",
        hint=f"install them (Debian/Ubuntu: apt-get install {headers}), then run this again",
    )


def _ensure_sources(target: Path, release: str, use_apt: bool, say: Say) -> str:
    locate = ["sh", str(target / "uvc-source.sh"), "locate", release]
    result = run(locate, check=False)
    if result.returncode != 0 and use_apt:
        series, base = _series(release)
        for candidate in (
            f"linux-source-{series}",
            f"linux-source-{base}",
            f"linux-hwe-{series}-source-{base}",
        ):
            if _apt_available(candidate):
                _apt_install([candidate], say)
                result = run(locate, check=False)
                break
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or [f"no uvcvideo sources for {release}"]
        raise OctobrixError(lines[0].removeprefix("octobrix-uvcvideo: "), hint=" ".join(s.strip() for s in lines[1:]))
    return result.stdout.strip()


def _build_failure(layout: Layout, package: DkmsPackage, release: str, error: CommandError) -> OctobrixError:
    log = layout.path(f"var/lib/dkms/{package.name}/{package.version}/build/make.log")
    ours = [line for line in (_read(log) or "").splitlines() if line.startswith("octobrix-uvcvideo:")]
    message = ours[-1].removeprefix("octobrix-uvcvideo: ") if ours else str(error)
    return OctobrixError(f"building the patched uvcvideo for {release} failed: {message}", hint=f"details in {log}")


def build_and_install(layout: Layout, package: DkmsPackage, release: str, use_apt: bool, say: Say) -> bool:
    """Build and install for one kernel; False when this version was installed there already."""
    target = layout.path(f"usr/src/{package.name}-{package.version}")
    dkms_dir = layout.path(f"var/lib/dkms/{package.name}/{package.version}/{release}")
    state = next((k for k in kernel_states(layout, package.name) if k.release == release), None)
    if state is not None and state.uses is KernelModule.PATCHED and dkms_dir.exists():
        say(f"{release}: patched uvcvideo {package.version} already installed")
        return False
    _ensure_headers(layout, release, use_apt, say)
    source = _ensure_sources(target, release, use_apt, say)
    dkms = ["-m", package.name, "-v", package.version, "-k", release]
    if not dkms_dir.exists():
        say(f"{release}: building uvcvideo from {source} (about a minute on a small PC)")
        try:
            run(["dkms", "build", *dkms])
        except CommandError as error:
            raise _build_failure(layout, package, release, error) from error
    try:
        run(["dkms", "install", *dkms])
    except CommandError as error:
        raise OctobrixError(
            f"dkms could not install the patched uvcvideo for {release}: {error.message}",
            hint=f"see `dkms status {package.name}`; the stock driver stays in use",
        ) from error
    say(f"{release}: patched uvcvideo installed; DKMS rebuilds it for every new kernel")
    return True


def _signing_cert(layout: Layout) -> Path:
    for relative in SIGNING_CERTS:
        if layout.path(relative).is_file():
            return layout.path(relative)
    return layout.path(SIGNING_CERTS[0])


def key_enrolled(cert: Path) -> bool | None:
    """Whether the MOK list holds cert (None: cannot tell, e.g. no mokutil)."""
    try:
        result = run(["mokutil", "--test-key", str(cert)], check=False)
    except CommandNotFoundError:
        return None
    text = result.stdout + result.stderr
    if "is already enrolled" in text:
        return True
    if "is not enrolled" in text:
        return False
    return None


def reload_module(layout: Layout, say: Say) -> None:
    """Swap the loaded uvcvideo for the installed one, unless something has a camera open."""
    users = video_users(layout)
    if users or module_refcount(layout) > 0:
        who = ", ".join(f"{u.command} (pid {u.pid}) on {u.device}" for u in users) or "an open camera"
        say(
            f"uvcvideo is in use by {who}: the patched module takes over after a reboot, "
            "or stop those programs (e.g. `systemctl stop 'ustreamer@*'`) "
            "and run `octobrixctl kmod install` again"
        )
        return
    try:
        run(["modprobe", "-r", MODULE])
        run(["modprobe", MODULE])
    except CommandError as error:
        if any(marker in error.stderr for marker in _KEY_REJECTED):
            raise OctobrixError(
                "the kernel refused the patched uvcvideo: it is not signed with an enrolled key",
                hint=MOK_STEPS.format(cert=_signing_cert(layout)),
            ) from error
        raise
    loaded, version, payload = loaded_module(layout)
    say(f"reloaded uvcvideo: now {loaded.value} (version {version}), {PARAM}={payload}")


def check_signing(layout: Layout) -> None:
    """Raise, with the MOK enrolment steps, when this kernel will refuse the module DKMS signed."""
    if not signatures_required(layout) and secure_boot(layout) is not SecureBoot.ENABLED:
        return
    cert = _signing_cert(layout)
    if key_enrolled(cert) is not True:
        raise OctobrixError(
            "the patched uvcvideo is installed, but with Secure Boot the kernel loads it only once its "
            f"signing key ({cert}) is enrolled",
            hint=MOK_STEPS.format(cert=cert),
        )


def install(layout: Layout, package: DkmsPackage, kernels: list[str], *, reload: bool, use_apt: bool, say: Say) -> None:
    if not layout.live:
        raise OctobrixError(
            "kmod install changes the running system and does not work under --root",
            hint="`octobrixctl kmod status --root DIR` inspects a tree",
        )
    if os.geteuid() != 0:
        raise OctobrixError("kmod install needs root", hint="sudo octobrixctl kmod install")
    running = running_kernel(layout)
    releases = kernels or ([running] if running else [])
    stage_package(layout, package, say)
    changed = {release for release in releases if build_and_install(layout, package, release, use_apt, say)}

    check_signing(layout)
    if running not in releases:
        return
    loaded, _, _ = loaded_module(layout)
    # A stock module always needs swapping; a patched one only when this run built a new version.
    stale = loaded is Loaded.STOCK or (loaded is Loaded.PATCHED and running in changed)
    if loaded is Loaded.NOT_LOADED:
        say("uvcvideo is not loaded; the patched module loads when a camera is plugged in")
    elif stale and reload:
        reload_module(layout, say)
    elif stale:
        say("the old uvcvideo is still loaded (--no-reload): the patched one takes over after a reboot")


# ---------------------------------------------------------------------------------------------
# Command line


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "The patched uvcvideo that lets several cheap USB cameras share a bus "
        f"(module parameter {PARAM}, built by DKMS for every kernel)."
    )
    sub = parser.add_subparsers(dest="kmod_command", metavar="ACTION", required=True)
    for name, help_text in (
        ("status", "loaded module, parameter, DKMS state per kernel, Secure Boot"),
        ("install", "build and install the patched module with DKMS, reload it if no camera is in use"),
    ):
        action = sub.add_parser(name, help=help_text, description=help_text)
        action.add_argument(
            "--root",
            type=Path,
            default=Path("/"),
            metavar="DIR",
            help="read the system tree under DIR (tests)",
        )
        if name == "status":
            action.add_argument("--json", action="store_true", help="machine-readable output")
        else:
            action.add_argument(
                "--kernel",
                action="append",
                default=[],
                metavar="RELEASE",
                help="build for this installed kernel (repeatable; default: the running one)",
            )
            action.add_argument("--no-reload", action="store_true", help="never unload the loaded uvcvideo")
            action.add_argument("--no-apt", action="store_true", help="never install headers or sources with apt-get")
            action.add_argument("--source", type=Path, metavar="DIR", help="octobrix's kmod/ folder (found by default)")


def main(args: argparse.Namespace) -> int:
    layout = Layout(args.root)
    if args.kmod_command == "status":
        status = read_status(layout)
        print(status_json(status) if args.json else format_status(status), end="")
        return 0
    package_info = find_package(layout, args.source)
    install(
        layout,
        package_info,
        args.kernel,
        reload=not args.no_reload,
        use_apt=not args.no_apt,
        say=lambda line: print(line, flush=True),
    )
    return 0
