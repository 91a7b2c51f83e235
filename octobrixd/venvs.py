"""Each printer's own Python environment with its pinned OctoPrint and plugins.

A venv is built with uv into venvs/<digest of its requirements>/ and only then made current by
swapping the `venv` symlink, so a failed install (no network, a bad pin, a full disk) leaves the
instance on its old, working venv. uv's cache is shared and files are hard-linked from it, so
four instances of the same OctoPrint cost about one on disk. The cache and the installed files
belong to root; only directories are handed to the instance, so OctoPrint's plugin manager can
add and replace files in its own venv but never write into a file another venv shares.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from octobrixd.config import Config
from octobrixd.errors import CommandError, OctobrixError
from octobrixd.fsutil import DISK_FULL, mount_point
from octobrixd.paths import Layout
from octobrixd.proc import run

log = logging.getLogger(__name__)

INSTANCE_PYTHON = Path("/usr/bin/python3")
UV_CACHE = PurePosixPath("var/cache/octobrix/uv")
COMPLETE_MARKER = ".octobrix-complete"
# Kept after a swap so a running OctoPrint can still import from it until it restarts.
KEEP_PREVIOUS = 1


@dataclass(frozen=True)
class VenvSpec:
    name: str
    requirements: tuple[str, ...]

    @property
    def digest(self) -> str:
        return hashlib.sha256("\n".join(self.requirements).encode()).hexdigest()[:16]


def venv_spec(config: Config, name: str) -> VenvSpec:
    return VenvSpec(name, (config.octoprint_requirement(name), *config.printers[name].plugins))


def venvs_dir(layout: Layout, name: str) -> Path:
    return layout.state_dir(name) / "venvs"


def venv_link(layout: Layout, name: str) -> Path:
    return layout.state_dir(name) / "venv"


def is_current(layout: Layout, spec: VenvSpec) -> bool:
    target = venvs_dir(layout, spec.name) / spec.digest
    link = venv_link(layout, spec.name)
    return link.is_symlink() and link.resolve() == target.resolve() and (target / COMPLETE_MARKER).exists()


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


def _uv(args: list[str], layout: Layout) -> None:
    env = dict(
        os.environ,
        UV_CACHE_DIR=str(layout.path(UV_CACHE)),
        UV_NO_PROGRESS="1",
        UV_LINK_MODE="hardlink",
        # The system's CA store, like apt and pip: a proxy's CA installed by the admin is trusted.
        UV_NATIVE_TLS="1",
    )
    run([sys.executable, "-m", "uv", *args], env=env, timeout=1800)


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
    os.chown(root, uid, gid)
    for current, dirs, _files in os.walk(root):
        for directory in dirs:
            os.chown(Path(current) / directory, uid, gid, follow_symlinks=False)


def provision(layout: Layout, spec: VenvSpec, uid: int, gid: int, wheels: str | None = None) -> Path:
    """Build spec's venv beside the current one and swap it in. Raises OctobrixError; never half-swaps.

    A failed build (a full disk included) leaves nothing behind: neither the half-built venv nor
    the half-unpacked wheels uv leaves in its cache.
    """
    target = venvs_dir(layout, spec.name) / spec.digest
    if target.exists():
        # Left by an interrupted build, or an old complete one: either way, start from scratch.
        shutil.rmtree(target)
    if _cache_leftovers(layout):
        _prune_cache(layout)  # an earlier build was killed while uv unpacked
    log.info("building venv for %s: %s", spec.name, " ".join(spec.requirements))
    # Offline farms: only the wheels folder, never an index.
    source = ["--no-index", "--find-links", wheels] if wheels else []
    link = venv_link(layout, spec.name)
    temporary = link.with_name(".venv.new")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.chown(target.parent, uid, gid)
        _uv(["venv", "--quiet", "--seed", *source, "--python", str(INSTANCE_PYTHON), str(target)], layout)
        python = str(target / "bin" / "python")
        _uv(["pip", "install", "--quiet", *source, "--python", python, *spec.requirements], layout)
        run([str(target / "bin" / "python"), "-c", "import octoprint"])
        _hand_directories_to(target, uid, gid)
        (target / COMPLETE_MARKER).touch()
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(Path("venvs") / spec.digest)
    except CommandError as error:
        _clean_failed_build(layout, target, temporary)
        raise _explain(layout, spec, error) from error
    except OSError as error:
        _clean_failed_build(layout, target, temporary)
        raise OctobrixError(
            f"could not install OctoPrint for {spec.name}: {error}; it keeps its current OctoPrint",
            hint=_disk_full_hint(layout, spec) if error.errno in DISK_FULL else None,
        ) from error
    temporary.replace(link)
    _prune(layout, spec)
    log.info("venv for %s is now %s", spec.name, target)
    return target


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


def _clean_failed_build(layout: Layout, target: Path, temporary: Path) -> None:
    shutil.rmtree(target, ignore_errors=True)
    with contextlib.suppress(OSError):
        temporary.unlink(missing_ok=True)
    if _cache_leftovers(layout):
        _prune_cache(layout)


def _prune(layout: Layout, spec: VenvSpec) -> None:
    """Keep the new venv and the newest complete previous one; a build a kill left half-made goes first."""
    others = [p for p in venvs_dir(layout, spec.name).iterdir() if p.name != spec.digest]
    complete = sorted(
        (p for p in others if (p / COMPLETE_MARKER).exists()), key=lambda p: p.stat().st_mtime, reverse=True
    )
    for old in [p for p in others if p not in complete] + complete[KEEP_PREVIOUS:]:
        shutil.rmtree(old, ignore_errors=True)
