"""Each printer's own Python environment with its pinned OctoPrint and plugins.

A venv is built with uv into venvs/<digest of its requirements>/ and only then made current by
swapping the `venv` symlink, so a failed install (no network, a bad pin, a full disk) leaves the
instance on its old, working venv. uv's cache is shared and files are hard-linked from it, so
four instances of the same OctoPrint cost about one on disk. The cache and the installed files
belong to root; only directories are handed to the instance, so OctoPrint's plugin manager can
add and replace files in its own venv but never write into a file another venv shares.

Root installs only what the config asks for (PyPI or the wheels folder: trusted). From the moment
the directories are the printer's, everything in the venv is user-origin, and uv runs the target's
interpreter (and so every .pth in it) each time it installs there: the plugins the user added
through OctoPrint's Plugin Manager are carried as the printer's user (its own uv cache under its
home, constrained to what the config installed), their installed copies are packed into wheels as
that user, and the final `import octoprint` runs as that user in a scrubbed environment. Root then
marks the venv complete without following links and swaps the `venv` link, in its own state dir.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from octobrixd.errors import CommandError, OctobrixError
from octobrixd.instances.carry import carry, save
from octobrixd.instances.instance import SEARCH_PATH, VENVS, Instance, venv_python
from octobrixd.instances.venv_contents import Dist, carried_path, read_carried, read_venv, user_plugins
from octobrixd.instances.venv_spec import COMPLETE_MARKER, VenvSpec, current_venv, is_complete, venv_link, venvs_dir
from octobrixd.system import nofollow
from octobrixd.system.command import run
from octobrixd.system.fsutil import DISK_FULL, mount_point
from octobrixd.system.paths import Layout

log = logging.getLogger(__name__)

INSTANCE_PYTHON = Path("/usr/bin/python3")
UV_CACHE = PurePosixPath("var/cache/octobrix/uv")
# Kept after a swap so a running OctoPrint can still import from it until it restarts.
KEEP_PREVIOUS = 1
# The printer's user's HOME (its uv cache, its working files), in its state dir.
HOME = "home"
UV_TIMEOUT = 1800


def _build_dir(layout: Layout, spec: VenvSpec) -> Path:
    """Where spec's venv is built: never the folder the running OctoPrint uses."""
    running = current_venv(layout, spec.name)
    plain = venvs_dir(layout, spec.name) / spec.digest
    return plain.with_name(f"{spec.digest}-1") if running is not None and running.name == plain.name else plain


def _current_complete(layout: Layout, name: str) -> Path | None:
    target = current_venv(layout, name)
    return target if target is not None and is_complete(target) else None


def check_build_prerequisites() -> None:
    """OctoPrint's netifaces has no wheel for current Pythons: pip compiles it."""
    missing = []
    if shutil.which("gcc") is None:
        missing.append("gcc")
    if not INSTANCE_PYTHON.exists():
        missing.append("python3")
    else:
        include = run([str(INSTANCE_PYTHON), "-c", "import sysconfig; print(sysconfig.get_config_var('INCLUDEPY'))"])
        if not (Path(include.stdout.strip()) / "Python.h").exists():
            missing.append("python3-dev")
    if missing:
        raise OctobrixError(
            "OctoPrint needs a C compiler and the Python headers to install (its netifaces is built from source)",
            hint=f"sudo apt-get install {' '.join(missing)}",
        )


def _uv_environment(cache: Path) -> dict[str, str]:
    # On top of run()'s clean environment (its proxies and CA settings reach uv).
    return {
        "UV_CACHE_DIR": str(cache),
        "UV_NO_PROGRESS": "1",
        "UV_LINK_MODE": "hardlink",
        # The system's CA store, like apt and pip: a proxy's CA installed by the admin is trusted.
        "UV_NATIVE_TLS": "1",
        # No uv.toml or pyproject.toml from the working directory or a HOME: the arguments say it all.
        "UV_NO_CONFIG": "1",
        "UV_PYTHON_DOWNLOADS": "never",
    }


def _uv(args: list[str], layout: Layout) -> None:
    """uv as root, with the shared cache: only ever on what the config asks for."""
    run([sys.executable, "-m", "uv", *args], env=_uv_environment(layout.path(UV_CACHE)), timeout=UV_TIMEOUT)


@dataclass(frozen=True)
class PrinterUser:
    """Who runs the work inside a printer's venv once it holds user-origin code, and where."""

    ids: tuple[int, int]
    home: Path

    def environment(self) -> dict[str, str]:
        """Scrubbed: run() passes no PYTHON* variables; a fixed PATH; HOME its own."""
        return {"HOME": str(self.home), "PATH": SEARCH_PATH}

    @property
    def uv_cache(self) -> Path:
        return self.home / ".cache" / "uv"


def _as_user(argv: Sequence[str], user: PrinterUser, env: Mapping[str, str] | None = None) -> str:
    """argv run as the printer's user; its stdout."""
    merged = {**(env or {}), **user.environment()}
    return run(argv, env=merged, timeout=UV_TIMEOUT, as_user=user.ids).stdout


def _uv_as(args: list[str], user: PrinterUser) -> None:
    """uv as the printer's user, with its own cache: uv runs the target's python, .pth files and all."""
    _as_user([sys.executable, "-I", "-m", "uv", *args], user, _uv_environment(user.uv_cache))


def _check_imports(target: Path, user: PrinterUser) -> None:
    """The venv's OctoPrint imports: run as the printer's user (importing runs every .pth there)."""
    _as_user([str(venv_python(target)), "-I", "-c", "import octoprint"], user)


def _disk_full_hint(layout: Layout, spec: VenvSpec) -> str:
    mounts = sorted({str(mount_point(venvs_dir(layout, spec.name))), str(mount_point(layout.path(UV_CACHE)))})
    return f"the disk is full: free some space on {' and '.join(mounts)} (`df -h {' '.join(mounts)}`) and apply again"


def _explain(layout: Layout, spec: VenvSpec, error: CommandError) -> OctobrixError:
    lines = [line.strip() for line in error.stderr.splitlines() if line.strip()]
    reason = " / ".join(lines[-3:]) if lines else f"uv exited with {error.returncode}"
    if "Python.h" in error.stderr or "gcc" in error.stderr or "command 'x86_64" in error.stderr:
        hint = "a C compiler or the Python headers are missing: sudo apt-get install gcc python3-dev"
    elif "No space left" in error.stderr or "Disk quota exceeded" in error.stderr:
        hint = _disk_full_hint(layout, spec)
    elif "Failed to fetch" in error.stderr or "dns error" in error.stderr.lower() or "connect" in error.stderr.lower():
        hint = "PyPI could not be reached: check the network and apply again"
    elif "No solution found" in error.stderr or "not found in the package registry" in error.stderr:
        hint = f"check the versions in the config (printers.{spec.name}.octoprint / plugins)"
    else:
        hint = "run `octobrixctl --debug apply` to see every command and its output"
    return OctobrixError(
        f"could not install {' '.join(spec.requirements)} for {spec.name}; it keeps its current OctoPrint. {reason}",
        hint=hint,
    )


def _hand_directories_to(root: Path, uid: int, gid: int) -> None:
    """Root's fresh build (nothing of the user's in it yet): its directories become the printer's."""
    os.chown(root, uid, gid, follow_symlinks=False)
    for current, dirs, _files in os.walk(root):
        for directory in dirs:
            os.chown(Path(current) / directory, uid, gid, follow_symlinks=False)


def _root_folder(path: Path, gid: int) -> None:
    """venvs/: root's, which the printer's group may enter (its venvs' directories are its own)."""
    path.mkdir(mode=0o750, parents=True, exist_ok=True)
    fd = os.open(path, nofollow.DIR_FLAGS)
    try:
        os.fchown(fd, 0, gid)
        os.fchmod(fd, 0o750)
    finally:
        os.close(fd)


def _home(layout: Layout, name: str, uid: int, gid: int) -> Path:
    """The printer's HOME in its (root's) state dir: made for it when missing."""
    home = Instance(name, layout).state_dir / HOME
    with contextlib.suppress(FileExistsError):
        home.mkdir(mode=0o700)
        os.chown(home, uid, gid, follow_symlinks=False)
    return home


def _mark_complete(target: Path) -> None:
    """The marker in a folder whose entries are the printer's: created anew, never through a link."""
    fd = os.open(target, nofollow.DIR_FLAGS)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(COMPLETE_MARKER, dir_fd=fd)
        os.close(os.open(COMPLETE_MARKER, nofollow.NEW_FILE_FLAGS, 0o644, dir_fd=fd))
    finally:
        os.close(fd)


def _carry_scratch(venvs: Path, pinned: Mapping[str, str], uid: int, gid: int) -> Path:
    """A folder for the carry, made by root in venvs/ (root's) and then handed to the printer's user:
    the constraints (what the config installed, exactly) and the wheels packed from installed copies."""
    scratch = Path(tempfile.mkdtemp(prefix=".carry-", dir=venvs))
    (scratch / "constraints.txt").write_text(
        "".join(f"{name}=={version}\n" for name, version in sorted(pinned.items())), encoding="utf-8"
    )
    os.chown(scratch, uid, gid, follow_symlinks=False)
    return scratch


def provision(layout: Layout, spec: VenvSpec, uid: int, gid: int, wheels: str | None = None) -> Path:
    """Build spec's venv beside the current one and swap it in. Raises OctobrixError; never half-swaps.

    A failed build (a full disk included) leaves nothing behind: neither the half-built venv nor
    the half-unpacked wheels uv leaves in its cache.
    """
    target = _build_dir(layout, spec)
    # Left by an interrupted build, or an old complete one: either way, start from scratch.
    _remove(target)
    if _cache_leftovers(layout):
        _prune_cache(layout)  # an earlier build was killed while uv unpacked
    log.info("building venv for %s: %s", spec.name, " ".join(spec.requirements))
    # Offline farms: only the wheels folder, never an index.
    source = ["--no-index", "--find-links", wheels] if wheels else []
    link = venv_link(layout, spec.name)
    temporary = link.with_name(".venv.new")
    # What the user added through OctoPrint's Plugin Manager goes into the new venv too.
    previous = _current_complete(layout, spec.name) or spec.carry_from
    remembered = [entry["name"] for entry in read_carried(layout, spec.name)]
    plugins = user_plugins(read_venv(previous), spec.requirements, remembered) if previous else []
    scratch: Path | None = None
    try:
        _root_folder(target.parent, gid)
        # Root: the config's requirements only, into a venv nothing of the user's has touched.
        _uv(["venv", "--quiet", "--seed", *source, "--python", str(INSTANCE_PYTHON), str(target)], layout)
        python = str(venv_python(target))
        _uv(["pip", "install", "--quiet", *source, "--python", python, *spec.requirements], layout)
        pinned = {d.name: d.version for d in read_venv(target).values()}
        octoprint = read_venv(target).get("octoprint")
        _hand_directories_to(target, uid, gid)
        # From here on the venv is the printer's: what runs in it runs as the printer's user.
        user = PrinterUser((uid, gid), _home(layout, spec.name, uid, gid))
        scratch = _carry_scratch(target.parent, pinned, uid, gid)
        result = carry(_UvBuilder(user, target, source, scratch), plugins, wheels)
        _check_imports(target, user)
        _mark_complete(target)
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(Path(VENVS) / target.name)
    except CommandError as error:
        _clean_failed_build(layout, target, temporary)
        raise _explain(layout, spec, error) from error
    except OSError as error:
        _clean_failed_build(layout, target, temporary)
        raise OctobrixError(
            f"could not install OctoPrint for {spec.name}: {error}; it keeps its current OctoPrint",
            hint=_disk_full_hint(layout, spec) if error.errno in DISK_FULL else None,
        ) from error
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    temporary.replace(link)
    _prune(layout, target, previous)
    save(carried_path(layout, spec.name), result, octoprint.version if octoprint else None)
    if result.carried:
        log.info(
            "carried into %s: %s", spec.name, ", ".join(f"{c.name} {c.version} ({c.source})" for c in result.carried)
        )
    message = result.message(spec.name)
    if message is not None:
        log.warning("%s", message)
    log.info("venv for %s is now %s", spec.name, target)
    return target


class _UvBuilder:
    """carry()'s builder: installs into target and packs installed copies, as the printer's user."""

    def __init__(self, user: PrinterUser, target: Path, source: Sequence[str], scratch: Path) -> None:
        self.user = user
        self.target = target
        self.source = list(source)
        self.scratch = scratch

    def install(self, requirements: Sequence[str]) -> None:
        python = str(venv_python(self.target))
        limits = ["--constraint", str(self.scratch / "constraints.txt")]
        _uv_as(["pip", "install", "--quiet", *self.source, *limits, "--python", python, *requirements], self.user)

    def pack(self, dist: Dist) -> Path:
        wheels = self.scratch / "wheels"
        argv = [sys.executable, "-I", "-m", "octobrixd.instances.wheel_pack"]
        said = _as_user([*argv, str(dist.path), dist.name, dist.version, str(wheels)], self.user).strip()
        wheel = Path(said.splitlines()[-1]) if said else None
        if wheel is None or wheel.parent != wheels or wheel.suffix != ".whl":
            raise OSError(errno.EINVAL, f"packing {dist.name} said {said!r}, not a wheel in {wheels}")
        return wheel


def _cache_leftovers(layout: Layout) -> list[Path]:
    """What uv leaves at the top of its cache when it stops half-way: `.tmpXXXXXX` folders."""
    cache = layout.path(UV_CACHE)
    return sorted(cache.glob(".tmp*")) if cache.is_dir() else []


def _prune_cache(layout: Layout) -> None:
    """uv's own clean-up of half-unpacked wheels; only octobrix uses this cache, under the apply lock."""
    try:
        _uv(["cache", "prune", "--quiet"], layout)
    except CommandError as error:
        log.warning("could not tidy the uv cache %s: %s", layout.path(UV_CACHE), error)


def _remove(path: Path) -> None:
    """path gone, whatever it is; a link is removed, never followed (rmtree works through fds)."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        shutil.rmtree(path)
    else:
        path.unlink()


def _clean_failed_build(layout: Layout, target: Path, temporary: Path) -> None:
    with contextlib.suppress(OSError):
        _remove(target)
    with contextlib.suppress(OSError):
        temporary.unlink(missing_ok=True)
    if _cache_leftovers(layout):
        _prune_cache(layout)


def _prune(layout: Layout, current: Path, previous: Path | None = None) -> None:
    """Keep the new venv and the one that ran before it (else the newest complete other one); a build a
    kill left half-made goes first."""
    # A build killed half-way also leaves its `.carry-*` scratch folder (wheels of carried plugins).
    others = [p for p in current.parent.iterdir() if p.name != current.name]
    complete = sorted(
        (p for p in others if is_complete(p)),
        # The venv the instance ran until now is what `octobrixctl rollback` goes back to, even when a
        # rollback made an older one current and a newer one lies beside it.
        key=lambda p: (previous is not None and p.name == previous.name, p.lstat().st_mtime),
        reverse=True,
    )
    for old in [p for p in others if p not in complete] + complete[KEEP_PREVIOUS:]:
        with contextlib.suppress(OSError):
            _remove(old)
