"""The plugin part of `upgrade --check`: per printer, each plugin's installed version, the newest
release the package index (or, offline, the wheels folder) has, whether it fits the printer's pinned
OctoPrint, and what applies it.

Whether it fits is pip's own resolver in the printer's venv (`pip install --dry-run` with the pin as a
constraint, as every pip OctoPrint runs gets it), run as the printer's user (root never runs a venv's
code: a plugin's .pth file would run with it), wheels only, so no package's build code runs for a
check; a plugin published only as a source archive is "fit unknown". `upgrade` itself carries plugins
into the new venv in the same version and updates none: a config plugin moves when its pin in the
config does, a Plugin Manager plugin through its OctoPrint's Plugin Manager or Software Update.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from octobrixd.config.requirements import PLUGIN_URL_RE
from octobrixd.errors import OctobrixError
from octobrixd.instances.instance import Instance
from octobrixd.instances.venv_contents import InstalledPlugin, PluginSource, canonical, requirement_name, version_key
from octobrixd.system import nofollow
from octobrixd.upgrades import versions

SCHEMA_VERSION = 1
_PROJECT_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")
CONSTRAINTS = "pip-constraints.txt"
WORK = "pip"  # the printer's user's folder in a check's scratch folder
REPORT_LIMIT = 4 << 20  # pip's report of one plugin's update is a few kB


@dataclass(frozen=True)
class Source:
    """Where newer releases are read: the wheels folder (its listing) or, with none, the package index."""

    wheels: Path | None
    files: dict[str, dict[str, str]]  # the wheels folder's: canonical project -> {version: file name}

    @property
    def label(self) -> str:
        return f"the wheels folder {self.wheels}" if self.wheels is not None else "the package index"

    def pip_args(self) -> list[str]:
        return ["--no-index", "--find-links", str(self.wheels)] if self.wheels is not None else []


@dataclass(frozen=True)
class Fit:
    """pip's answer: the newest version above the installed one that fits the pin (None: none does, or
    unknown), whether the newest itself fits (None: unknown), and why not in words."""

    target: str | None
    newest_fits: bool | None
    note: str | None = None


@dataclass(frozen=True)
class PluginUpdate:
    name: str
    source: PluginSource
    version: str
    newest: str | None  # the newest final release in the source; None: unknown (note says why)
    target: str | None  # what to move to: the newest that fits the pin (or the newest, fit unknown)
    fits: bool | None  # whether target fits the pin; None: unknown
    note: str | None
    how: str | None  # what applies target; None when nothing fits

    @property
    def newer(self) -> bool:
        """The source has a newer release than the installed one."""
        return self.newest is not None and _newer(self.newest, self.version)


def _newer(a: str, b: str) -> bool:
    return (version_key(a) or ((), (0, 0), 0, (0, 0))) > (version_key(b) or ((), (0, 0), 0, (0, 0)))


def conflict_reason(output: str) -> str | None:
    """pip's ResolutionImpossible names the dependency in the way: "x 0.3.0 depends on octoprint>=1.12"."""
    for line in output.splitlines():
        if " depends on " in line:
            return line.strip()
    return None


@dataclass(frozen=True)
class PipAnswer:
    """One `pip install --dry-run --report FILE`: its exit status, what it printed (the conflict's
    explanation goes to stdout, the error to stderr) and the report it wrote ("" when none)."""

    returncode: int
    output: str
    report: str = ""


def read_fit(answer: PipAnswer, plugin: str) -> tuple[str | None, bool | None, str]:
    """(version pip would install, whether one fits, why not)."""
    if answer.returncode == 0:
        try:
            report = json.loads(answer.report or "{}")
        except ValueError:
            return None, None, "pip's report could not be read"
        for item in report.get("install", []) if isinstance(report, dict) else []:
            meta = item.get("metadata", {}) if isinstance(item, dict) else {}
            if canonical(str(meta.get("name", ""))) == canonical(plugin):
                return str(meta.get("version")), True, ""
        return None, None, "pip would install nothing newer"
    if "ResolutionImpossible" in answer.output or "conflicting dependencies" in answer.output:
        return None, False, conflict_reason(answer.output) or "pip finds no version that fits"
    if "No matching distribution" in answer.output or "Could not find a version" in answer.output:
        return None, None, "no wheel of it to read its requirements from (a source archive is not built for a check)"
    lines = [line.strip() for line in answer.output.splitlines() if line.strip()]
    return None, None, lines[-1] if lines else f"pip exited with {answer.returncode}"


@contextlib.contextmanager
def scratch_for(pin: str, ids: tuple[int, int]) -> Iterator[Path]:
    """A folder for one printer's check, root's: the pin as pip's constraint file (root's, readable), and
    WORK, the printer's user's, where its pip writes its report. The user can rename nothing of it, so
    only the report itself can be a planted link (read_report refuses one)."""
    with tempfile.TemporaryDirectory(prefix="octobrix-check-") as name:
        scratch = Path(name)
        scratch.chmod(0o755)
        constraints = scratch / CONSTRAINTS
        constraints.write_text(pin + "\n", encoding="utf-8")
        constraints.chmod(0o644)
        (scratch / WORK).mkdir(mode=0o700)
        os.chown(scratch / WORK, *ids)
        yield scratch


def read_report(path: Path) -> str:
    """pip's report as the printer's user wrote it: a regular file of sensible size, never through a link
    ("" when it is not one)."""
    try:
        data = nofollow.read_bytes(path.parent, path.name, limit=REPORT_LIMIT)
    except (OSError, nofollow.UnsafePathError):
        return ""
    return data.decode("utf-8", errors="replace")


def dry_run(instance: Instance, ids: tuple[int, int], scratch: Path, requirement: str, source: Source) -> PipAnswer:
    """pip's resolver in the printer's venv (what is installed counts), as the printer's user, the pin as
    constraint; nothing is installed, cached or built."""
    report = scratch / WORK / "report.json"
    report.unlink(missing_ok=True)
    args = [
        "pip", *versions.pip_options(), "install", "--dry-run", "--no-cache-dir", "--only-binary", ":all:",
        "--report", str(report), *source.pip_args(), "--constraint", str(scratch / CONSTRAINTS), requirement,
    ]  # fmt: skip
    try:
        done = instance.run_in_venv(args, ids=ids, doing=f"judge {requirement}", timeout=300, check=False)
    except OctobrixError as error:  # its timeout included
        return PipAnswer(1, error.message)
    text = read_report(report) if done.returncode == 0 else ""
    return PipAnswer(done.returncode, done.stdout + done.stderr, text)


Resolver = Callable[[str], PipAnswer]


def judge_fit(plugin: InstalledPlugin, newest: str, resolve: Resolver) -> Fit:
    """The newest version above the installed one that pip fits to the pin; if that is not the newest,
    pip is asked about the newest alone, for the reason it does not fit."""
    target, fits, why = read_fit(resolve(f"{plugin.name}>{plugin.version}"), plugin.name)
    if fits is None:
        return Fit(newest, None, why)
    if target is None:
        return Fit(None, False, why)
    if target == newest:
        return Fit(target, True)
    _, _, reason = read_fit(resolve(f"{plugin.name}=={newest}"), plugin.name)
    return Fit(target, False, reason or why)


def how_to(printer: str, plugin: InstalledPlugin, target: str, source: Source) -> str:
    if plugin.source is PluginSource.CONFIG:
        return f'pin "{plugin.name}=={target}" in printers.{printer}.plugins, then `sudo octobrixctl apply`'
    # `upgrade` carries a Plugin Manager plugin in the version it has: its own OctoPrint updates it.
    if source.wheels is not None:
        file = source.files.get(canonical(plugin.name), {}).get(target, f"{plugin.name}-{target}.whl")
        return f"in {printer}'s OctoPrint: Plugin Manager > Get More > upload {source.wheels / file}"
    return f"in {printer}'s OctoPrint: Settings > Software Update, or Plugin Manager > Get More"


def newest_in(source: Source, plugin: InstalledPlugin) -> tuple[str | None, str | None]:
    """(newest final release, why unknown)."""
    if source.wheels is not None:
        found = versions.newest(source.files.get(canonical(plugin.name), {}))
        return found, None if found else f"not in {source.label}"
    try:
        found = versions.newest(versions.from_index(plugin.name, plugin.name))
    except versions.NotOnIndex:
        return None, "not on the package index"
    except OctobrixError as error:
        return None, error.message
    return found, None if found else "no final release on the package index"


def askable(plugin: InstalledPlugin) -> bool:
    """Name and version come from the plugin's own metadata: only a plain project name and a version
    reach pip's command line (never something it would read as an option)."""
    return _PROJECT_RE.fullmatch(plugin.name) is not None and version_key(plugin.version) is not None


def config_url(plugin: InstalledPlugin, requirements: Sequence[str]) -> bool:
    """A config plugin given as an address (URL): no index or folder knows its releases."""
    if plugin.source is not PluginSource.CONFIG:
        return False
    named = {n for r in requirements if not PLUGIN_URL_RE.match(r) and (n := requirement_name(r)) is not None}
    return canonical(plugin.name) not in named


def check_printer(
    printer: str,
    plugins: Sequence[InstalledPlugin],
    *,
    requirements: Sequence[str],
    source: Source,
    instance: Instance,
    pin: str,
    newest_of: Callable[[InstalledPlugin], tuple[str | None, str | None]],
) -> list[PluginUpdate]:
    """Every plugin of one printer, with what its source has and whether that fits pin (pip asked in its
    venv as its user, only about a plugin with a newer release)."""
    out = []
    with contextlib.ExitStack() as stack:
        resolve: Resolver | None = None
        for plugin in plugins:
            newest: str | None
            why: str | None
            if config_url(plugin, requirements):
                newest, why = None, "installed from an address (URL) in the config: its releases are not listed"
            elif not askable(plugin):
                newest, why = None, "its name or version in its metadata is not one pip can be asked about"
            else:
                newest, why = newest_of(plugin)
            if newest is None or not _newer(newest, plugin.version):
                out.append(PluginUpdate(plugin.name, plugin.source, plugin.version, newest, None, None, why, None))
                continue
            if resolve is None:  # the first plugin to judge: the printer's user gets its folder
                ids = instance.ids()
                scratch = stack.enter_context(scratch_for(pin, ids))
                resolve = functools.partial(dry_run, instance, ids, scratch, source=source)
            fit = judge_fit(plugin, newest, resolve)
            fits = fit.newest_fits if fit.target == newest else fit.target is not None
            how = how_to(printer, plugin, fit.target, source) if fit.target else None
            out.append(
                PluginUpdate(plugin.name, plugin.source, plugin.version, newest, fit.target, fits, fit.note, how)
            )
    return out


# --- what the user reads ---


def fit_words(update: PluginUpdate, pin: str) -> str:
    if update.target is None:
        return f"needs another OctoPrint than {pin}"
    if update.fits is None:
        return f"fit with {pin} unknown"
    if update.target != update.newest:
        return f"fits {pin}; {update.newest} does not"
    return f"fits {pin}"


def plugin_lines(updates: Sequence[PluginUpdate], pin: str, widths: tuple[int, int, int]) -> list[str]:
    """One line per plugin with a newer release, aligned (widths from widths_of over the whole listing),
    then what is unknown; "plugins: up to date" when nothing is newer."""
    lines = []
    for update in updates:
        if not update.newer:
            continue
        move = f"{update.version} -> {update.target or update.newest}"
        tail = update.how or ""
        if update.note:
            tail = f"{tail} ({update.note})" if tail else update.note
        lines.append(
            f"  {update.name:<{widths[0]}}  {move:<{widths[1]}}  {fit_words(update, pin):<{widths[2]}}  {tail}".rstrip()
        )
    unknown = [u for u in updates if u.newest is None]
    if not lines:
        lines.append("  plugins: up to date" if updates else "  plugins: none")
    for update in unknown:
        lines.append(f"  {update.name} {update.version}: newest unknown, {update.note}")
    return lines


def widths_of(all_updates: Sequence[tuple[Sequence[PluginUpdate], str]]) -> tuple[int, int, int]:
    shown = [(u, pin) for updates, pin in all_updates for u in updates if u.newer]
    return (
        max((len(u.name) for u, _ in shown), default=0),
        max((len(f"{u.version} -> {u.target or u.newest}") for u, _ in shown), default=0),
        max((len(fit_words(u, pin)) for u, pin in shown), default=0),
    )


def to_json(update: PluginUpdate) -> dict[str, object]:
    return {
        "name": update.name,
        "source": str(update.source),
        "version": update.version,
        "newest": update.newest,
        "update": update.target if update.newer else None,
        "fits_octoprint": update.fits if update.newer else None,
        "note": update.note,
        "how": update.how,
    }
