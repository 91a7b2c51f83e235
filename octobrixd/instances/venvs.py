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
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from octobrixd.errors import CommandError, OctobrixError
from octobrixd.instances.carry import carry, save
from octobrixd.instances.instance import VENVS, venv_python
from octobrixd.instances.venv_contents import carried_path, read_carried, read_venv, user_plugins
from octobrixd.instances.venv_spec import COMPLETE_MARKER, VenvSpec, venv_link, venvs_dir
from octobrixd.system.command import run
from octobrixd.system.fsutil import DISK_FULL, mount_point
from octobrixd.system.paths import Layout

log = logging.getLogger(__name__)

INSTANCE_PYTHON = Path("/usr/bin/python3")
UV_CACHE = PurePosixPath("var/cache/octobrix/uv")
# Kept after a swap so a running OctoPrint can still import from it until it restarts.
KEEP_PREVIOUS = 1


def _build_dir(layout: Layout, spec: VenvSpec) -> Path:
    """Where spec's venv is built: never the folder the running OctoPrint uses."""
    link = venv_link(layout, spec.name)
    running = link.resolve() if link.is_symlink() else None
    plain = venvs_dir(layout, spec.name) / spec.digest
    return plain.with_name(f"{spec.digest}-1") if running is not None and running == plain.resolve() else plain


def _current_complete(layout: Layout, name: str) -> Path | None:
    link = venv_link(layout, name)
    if not link.is_symlink():
        return None
    target = link.resolve()
    return target if (target / COMPLETE_MARKER).exists() else None


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
    # On top of run()'s clean environment (its proxies and CA settings reach uv).
    env = {
        "UV_CACHE_DIR": str(layout.path(UV_CACHE)),
        "UV_NO_PROGRESS": "1",
        "UV_LINK_MODE": "hardlink",
        # The system's CA store, like apt and pip: a proxy's CA installed by the admin is trusted.
        "UV_NATIVE_TLS": "1",
    }
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
    target = _build_dir(layout, spec)
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
    # What the user added through OctoPrint's Plugin Manager goes into the new venv too.
    previous = _current_complete(layout, spec.name) or spec.carry_from
    remembered = [entry["name"] for entry in read_carried(layout, spec.name)]
    plugins = user_plugins(read_venv(previous), spec.requirements, remembered) if previous else []
    try:
        # venvs/ is root's (root:octobrix-NAME 0750): the user enters it, only root makes entries.
        target.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        os.chown(target.parent, 0, gid, follow_symlinks=False)
        target.parent.chmod(0o750)
        builder = _UvBuilder(layout, target, source)
        builder.fresh()
        with tempfile.TemporaryDirectory(prefix=".carry-", dir=target.parent) as scratch:
            result = carry(builder, spec.requirements, plugins, Path(scratch), wheels)
        run([str(venv_python(target)), "-c", "import octoprint"])
        _hand_directories_to(target, uid, gid)
        (target / COMPLETE_MARKER).touch()
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
    temporary.replace(link)
    _prune(layout, target, previous)
    installed = read_venv(target).get("octoprint")
    save(carried_path(layout, spec.name), result, installed.version if installed else None)
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
    def __init__(self, layout: Layout, target: Path, source: Sequence[str]) -> None:
        self.layout = layout
        self.target = target
        self.source = list(source)

    def fresh(self) -> None:
        if self.target.exists():
            shutil.rmtree(self.target)
        _uv(
            ["venv", "--quiet", "--seed", *self.source, "--python", str(INSTANCE_PYTHON), str(self.target)], self.layout
        )

    def install(self, requirements: Sequence[str], constraints: Path | None) -> None:
        python = str(venv_python(self.target))
        limits = ["--constraint", str(constraints)] if constraints is not None else []
        _uv(["pip", "install", "--quiet", *self.source, *limits, "--python", python, *requirements], self.layout)

    def installed(self) -> dict[str, str]:
        return {d.name: d.version for d in read_venv(self.target).values()}


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


def _prune(layout: Layout, current: Path, previous: Path | None = None) -> None:
    """Keep the new venv and the one that ran before it (else the newest complete other one); a build a
    kill left half-made goes first."""
    # A build killed half-way also leaves its `.carry-*` scratch folder (wheels of carried plugins).
    others = [p for p in current.parent.iterdir() if p.name != current.name]
    complete = sorted(
        (p for p in others if (p / COMPLETE_MARKER).exists()),
        # The venv the instance ran until now is what `octobrixctl rollback` goes back to, even when a
        # rollback made an older one current and a newer one lies beside it.
        key=lambda p: (previous is not None and p.name == previous.name, p.stat().st_mtime),
        reverse=True,
    )
    for old in [p for p in others if p not in complete] + complete[KEEP_PREVIOUS:]:
        shutil.rmtree(old, ignore_errors=True)
