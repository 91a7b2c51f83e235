"""`octobrixctl kmod`: the patched uvcvideo from kmod/. `status` shows what kmod/status.py reads;
`install` drives the real tools: apt-get for missing headers or kernel sources, dkms, modprobe.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from octobrixd.cliargs import add_root_argument
from octobrixd.errors import CommandError, CommandNotFoundError, OctobrixError
from octobrixd.kmod.status import (
    MODULE,
    MOK_STEPS,
    PARAM,
    KernelModule,
    Loaded,
    SecureBoot,
    format_status,
    kernel_states,
    loaded_module,
    module_refcount,
    read_status,
    read_text,
    rooted,
    running_kernel,
    secure_boot,
    signatures_required,
    signing_cert,
    status_json,
    video_users,
)
from octobrixd.system.command import run
from octobrixd.system.paths import Layout

# Files of kmod/ that make up the DKMS source package; build products stay behind.
PACKAGE_GLOBS = ("dkms.conf", "Makefile", "*.sh", "*.patch", "README.md")
_KEY_REJECTED = ("Key was rejected by service", "Required key not available")


@dataclass(frozen=True)
class DkmsPackage:
    name: str
    version: str
    source: Path  # the folder holding dkms.conf


def read_dkms_conf(source: Path) -> DkmsPackage:
    text = read_text(source / "dkms.conf")
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
    checkout = Path(__file__).resolve().parents[2] / "kmod"
    if (checkout / "dkms.conf").is_file():
        return read_dkms_conf(checkout)
    installed = sorted(layout.path("usr/src").glob("octobrix-uvcvideo-*/dkms.conf"))
    if installed:
        return read_dkms_conf(installed[-1].parent)
    raise OctobrixError(
        "cannot find octobrix's uvcvideo DKMS sources (kmod/)",
        hint="pass --source DIR, the kmod/ folder of octobrix",
    )


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
        env={"DEBIAN_FRONTEND": "noninteractive"},
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
    if (rooted(layout, layout.path(f"lib/modules/{release}/build")) / "Makefile").is_file():
        return
    headers = f"linux-headers-{release}"
    if use_apt and _apt_available(headers):
        _apt_install([headers], say)
        return
    raise OctobrixError(
        f"no kernel headers for {release}: DKMS cannot build modules for it",
        hint=f"install them (Debian/Ubuntu: apt-get install {headers}), then run this again",
    )


def _source_choice() -> dict[str, str]:
    """The user's own kernel sources (`UVC_SRC=... octobrixctl kmod install`), for uvc-source.sh, which
    runs both here and in DKMS's make: run() gives a command only the variables named to it."""
    chosen = os.environ.get("UVC_SRC")
    return {"UVC_SRC": chosen} if chosen else {}


def _ensure_sources(target: Path, release: str, use_apt: bool, say: Say) -> str:
    locate = ["sh", str(target / "uvc-source.sh"), "locate", release]
    result = run(locate, check=False, env=_source_choice())
    if result.returncode != 0 and use_apt:
        series, base = _series(release)
        for candidate in (
            f"linux-source-{series}",
            f"linux-source-{base}",
            f"linux-hwe-{series}-source-{base}",
        ):
            if _apt_available(candidate):
                _apt_install([candidate], say)
                result = run(locate, check=False, env=_source_choice())
                break
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or [f"no uvcvideo sources for {release}"]
        raise OctobrixError(lines[0].removeprefix("octobrix-uvcvideo: "), hint=" ".join(s.strip() for s in lines[1:]))
    return result.stdout.strip()


def _build_failure(layout: Layout, package: DkmsPackage, release: str, error: CommandError) -> OctobrixError:
    log = layout.path(f"var/lib/dkms/{package.name}/{package.version}/build/make.log")
    ours = [line for line in (read_text(log) or "").splitlines() if line.startswith("octobrix-uvcvideo:")]
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
            run(["dkms", "build", *dkms], env=_source_choice())
        except CommandError as error:
            raise _build_failure(layout, package, release, error) from error
    try:
        run(["dkms", "install", *dkms], env=_source_choice())
    except CommandError as error:
        raise OctobrixError(
            f"dkms could not install the patched uvcvideo for {release}: {error.message}",
            hint=f"see `dkms status {package.name}`; the stock driver stays in use",
        ) from error
    say(f"{release}: patched uvcvideo installed; DKMS rebuilds it for every new kernel")
    return True


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
                hint=MOK_STEPS.format(cert=signing_cert(layout)),
            ) from error
        raise
    loaded, version, payload = loaded_module(layout)
    say(f"reloaded uvcvideo: now {loaded.value} (version {version}), {PARAM}={payload}")


def check_signing(layout: Layout) -> None:
    """Raise, with the MOK enrolment steps, when this kernel will refuse the module DKMS signed."""
    if not signatures_required(layout) and secure_boot(layout) is not SecureBoot.ENABLED:
        return
    cert = signing_cert(layout)
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
        add_root_argument(action)
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
