"""Make the system match the config: plan (pure comparison) then apply (the only writer).

The manifest records what octobrix generated, so removing a printer from the config removes
exactly the files octobrix wrote for it and nothing else, and a per-unit digest of its
generated files, so an apply interrupted half-way still restarts what changed next time.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import logging
import pwd
import re
import stat
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from octobrixd.apply.state_dirs import LinkAction, ensure_state_dir, state_dir_ready, venv_link_verdict
from octobrixd.apply.steps import Doing, Stage, Step
from octobrixd.config.applied import remember_applied
from octobrixd.config.model import Config
from octobrixd.errors import OctobrixError
from octobrixd.farm.manifest import Manifest, read_manifest
from octobrixd.frontdoor import apply as frontdoor
from octobrixd.frontdoor.secrets import ensure_farm_credentials
from octobrixd.instances.credentials import FARM_USER, FarmCredentials, read_farm_credentials
from octobrixd.instances.instance import Instance, tree_config_yaml
from octobrixd.instances.running import printing_now, serving_port
from octobrixd.instances.seeding import needs_seeding, seed_basedir
from octobrixd.instances.venv_drift import venvs_to_build
from octobrixd.instances.venv_spec import VenvSpec, venv_spec
from octobrixd.instances.venvs import check_build_prerequisites, provision
from octobrixd.instances.versions import installed_octoprint
from octobrixd.names import SUBSYSTEMS, instance_user, octoprint_unit, printer_of
from octobrixd.render.nginx import NGINX_SITE
from octobrixd.render.octoprint import merged_octoprint_config
from octobrixd.render.tree import render_all
from octobrixd.system import nofollow, paths, systemd, udev
from octobrixd.system.fsutil import (
    DiskFullError,
    commit,
    exclusive_lock,
    leftover_temps,
    prune_empty_dir,
    remove_file,
    stage,
)
from octobrixd.system.nofollow import UnsafePathError
from octobrixd.system.paths import Layout

log = logging.getLogger(__name__)

LOCK_FILE = PurePosixPath("run/octobrix/apply.lock")


class ChangeKind(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    REMOVE = "remove"


@dataclass(frozen=True)
class FileChange:
    path: PurePosixPath
    kind: ChangeKind
    old: str
    new: str
    mode: int = 0o644
    owner: str | None = None


@dataclass(frozen=True)
class Plan:
    files: tuple[FileChange, ...]
    state_dirs: tuple[str, ...]
    provision: tuple[VenvSpec, ...]
    seed: tuple[str, ...]
    start: tuple[str, ...]
    restart: tuple[str, ...]
    stop: tuple[str, ...]
    reload_units: bool
    reload_udev: bool
    create_users: bool
    manifest: Manifest
    wheels: str | None = None
    # The front door's printers (empty with it off), and whether its nginx site changed.
    frontdoor_printers: tuple[str, ...] = ()
    reload_frontdoor: bool = False
    # The front door is on: each OctoPrint gets the farm login's account (single sign-on logs in as it).
    farm_accounts: bool = False
    # The front door over HTTPS: its certificate made or renewed (frontdoor/tls.py) before nginx reloads.
    https: Config | None = None
    # Temp files an apply that was killed mid-write left beside the files it writes.
    leftovers: tuple[PurePosixPath, ...] = ()
    # Instances the config runs whose unit has failed (a crash loop, or a start refused): started
    # again after reset-failed, which also clears systemd's count of quick restarts.
    recover: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (
            self.files
            or self.state_dirs
            or self.provision
            or self.seed
            or self.start
            or self.restart
            or self.stop
            or self.leftovers
            or self.recover
        )

    def steps(self) -> tuple[Step, ...]:
        """The system steps apply_plan runs, in order: what it executes and what --dry-run lists."""
        return _steps(self)

    def commands(self) -> list[str]:
        """The system commands this plan runs on a live system, in order, for --dry-run."""
        return [said for step in self.steps() for said in step.says]


def _steps(plan: Plan) -> tuple[Step, ...]:
    steps: list[Step] = []
    if plan.create_users:
        sysusers = paths.SYSUSERS_FILE
        users = (f"systemd-sysusers /{sysusers}",)
        steps.append(Step(Stage.USERS, users, lambda d: systemd.create_users(d.layout.path(sysusers))))
    for spec in plan.provision:
        reason = f" ({spec.reason})" if spec.reason else ""
        says = f"build the Python environment of {spec.name}: {' '.join(spec.requirements)}{reason}"
        steps.append(Step(Stage.VENVS, (says,), partial(_provision, plan, spec), live_only=False))
    for name in plan.seed:
        says = f"create the admin user and API key of {name}"
        steps.append(Step(Stage.SEED, (says,), partial(_seed, plan, name), live_only=False))
    if any(printer_of(unit) is not None for unit in plan.start):
        drivers = " ".join(udev.SERIAL_DRIVERS.values())
        steps.append(Step(Stage.SYSTEM, (f"modprobe -a {drivers}",), lambda _d: udev.load_serial_drivers()))
    if plan.reload_units:
        steps.append(Step(Stage.SYSTEM, ("systemctl daemon-reload",), lambda _d: systemd.daemon_reload()))
    if plan.reload_udev:
        matches = " ".join(f"--subsystem-match={s}" for s in SUBSYSTEMS)
        udevadm = ("udevadm control --reload", f"udevadm trigger --action=change --settle {matches}")
        steps.append(Step(Stage.SYSTEM, udevadm, _reload_udev))

    def units_step(verb: str, units: tuple[str, ...], act: Callable[[list[str]], None], *, held: bool) -> None:
        if units:
            run = (lambda d: act([u for u in units if u not in d.deferred])) if held else (lambda _d: act(list(units)))
            steps.append(Step(Stage.SYSTEM, (f"systemctl {verb} {' '.join(units)}",), run))

    units_step("disable --now", plan.stop, systemd.disable_and_stop, held=True)
    units_step("try-restart", plan.restart, systemd.restart_if_running, held=True)
    units_step("enable --now", plan.start, systemd.enable_and_start, held=False)
    # Every live apply: secrets can change without a file of the plan (a restored printer's keys).
    door = ["sync the front door's secrets (farm login, metrics token, the overview's keys, its certificate)"]
    if plan.reload_frontdoor:
        door += ["nginx -t -q", f"systemctl reload-or-restart {frontdoor.NGINX_UNIT}"]
        door.append(f"systemctl try-restart {frontdoor.WEB_UNIT}")
    steps.append(Step(Stage.SYSTEM, tuple(door), partial(_frontdoor, plan)))
    # A failed unit runs nothing, so no print is interrupted; try-restart above skips it.
    units_step("reset-failed", plan.recover, systemd.reset_failed, held=False)
    units_step("start", plan.recover, partial(systemd.start, wait=True), held=False)
    return tuple(steps)


def _reload_udev(_doing: Doing) -> None:
    udev.reload_and_trigger()


def _provision(plan: Plan, spec: VenvSpec, doing: Doing) -> None:
    if spec.drift and octoprint_unit(spec.name) in doing.deferred:
        # Only repairs the venv: it waits with the restart, so the print keeps its OctoPrint.
        return
    provision(doing.layout, spec, *_ids(doing.layout, spec.name), wheels=plan.wheels)


def _seed(plan: Plan, name: str, doing: Doing) -> None:
    layout = doing.layout
    farm = ensure_farm_credentials(layout) if plan.farm_accounts and layout.live else None
    seed_basedir(layout, name, *_ids(layout, name), serving_port=serving_port(layout, name), farm=farm)


def _frontdoor(plan: Plan, doing: Doing) -> None:
    site = next((c for c in plan.files if c.path == NGINX_SITE), None)
    site_old = site.old if site is not None and site.kind is ChangeKind.UPDATE else None
    frontdoor.after_apply(doing.layout, plan.frontdoor_printers, site_old, plan.reload_frontdoor, https=plan.https)


def _run_steps(plan: Plan, stage: Stage, doing: Doing) -> None:
    for step in plan.steps():
        if step.stage is stage and (doing.layout.live or not step.live_only):
            step.act(doing)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def unit_of(path: PurePosixPath) -> str | None:
    """The unit whose behaviour a generated file changes, if any."""
    parts = path.parts
    unit_dir = paths.UNIT_DIR.parts
    if parts[: len(unit_dir)] == unit_dir and len(parts) == len(unit_dir) + 2:
        return parts[len(unit_dir)].removesuffix(".d")
    state = paths.STATE_DIR.parts
    if parts[: len(state)] == state and len(parts) > len(state) + 1:
        return octoprint_unit(parts[len(state)])
    return None


def users_part(layout: Layout, rel: PurePosixPath) -> tuple[Path, PurePosixPath] | None:
    """(state_dir, path below it) for a file inside a folder of a printer's state directory (its basedir,
    home or venvs): its user can write there, so root opens it with system/nofollow from the state
    directory, which only root writes. None for every other file (root's own folders)."""
    state = paths.STATE_DIR.parts
    parts = rel.parts
    if parts[: len(state)] != state or len(parts) < len(state) + 3 or parts[len(state)].startswith("."):
        return None
    return layout.path(PurePosixPath(*parts[: len(state) + 1])), PurePosixPath(*parts[len(state) + 1 :])


def _read_text(layout: Layout, rel: PurePosixPath, *, refuse_unsafe: bool = False) -> str | None:
    """The file's text, or None if it is not there. In a printer's folders, a link or special file
    planted where octobrix keeps one of its generated files counts as absent: the apply puts its file
    in that name's place, following nothing. refuse_unsafe raises UnsafePathError instead (the user's
    own settings: octobrix will not replace them with its defaults)."""
    part = users_part(layout, rel)
    try:
        if part is None:
            return layout.path(rel).read_text(encoding="utf-8")
        return nofollow.read_text(*part)
    except FileNotFoundError:
        return None
    except UnsafePathError:
        if refuse_unsafe:
            raise
        return None


def current_and_merged_config_yaml(layout: Layout, config: Config, name: str) -> tuple[str, str] | None:
    """(current text, merged text) of the instance's config.yaml, or None if nothing changes. Read
    without following a link: a link or FIFO in its place is refused (UnsafePathError names it)."""
    path = Instance(name, layout).config_yaml
    current_text = _read_text(layout, tree_config_yaml(name), refuse_unsafe=True) or ""
    try:
        current: Any = yaml.safe_load(current_text) or {}
    except yaml.YAMLError as exc:
        raise OctobrixError(
            f"{path} is not valid YAML ({exc}); octobrix will not overwrite it",
            hint=(
                f"it holds {name}'s settings: fix the line named above and apply again, or bring a backup "
                f"back with `octobrixctl restore {name} FILE` (`ls /var/backups/octobrix/{name}/`)"
            ),
        ) from None
    if not isinstance(current, dict):
        raise OctobrixError(
            f"{path} does not hold settings (OctoPrint's config.yaml is a mapping of keys)",
            hint=f"fix it, or bring a backup back with `octobrixctl restore {name} FILE`, then apply again",
        )
    installed = installed_octoprint(layout, name) if layout.live else None
    merged = merged_octoprint_config(current, config, name, installed)
    if merged == current:
        return None
    return current_text, yaml.safe_dump(merged, sort_keys=True, default_flow_style=False)


def make_plan(
    config: Config,
    layout: Layout,
    previous: Manifest,
    *,
    failed: Sequence[str] = (),
    carry_from: Mapping[str, Path] | None = None,
) -> Plan:
    """failed: the units systemd has as failed; those of printers the config runs are started again
    (octobrixd passes none: it starts them itself, with a back-off). carry_from: printers whose new
    venv takes the Plugin Manager plugins of another OctoPrint's venv (`import`)."""
    desired = render_all(config)
    changes: list[FileChange] = []

    for rel, rendered in sorted(desired.items()):
        old = _read_text(layout, rel)
        if old != rendered.text:
            kind = ChangeKind.CREATE if old is None else ChangeKind.UPDATE
            changes.append(FileChange(rel, kind, old or "", rendered.text, rendered.mode, rendered.owner))

    for rel_text in sorted(set(previous.files) - {str(p) for p in desired}):
        rel = PurePosixPath(rel_text)
        old = _read_text(layout, rel)
        if old is not None:
            changes.append(FileChange(rel, ChangeKind.REMOVE, old, ""))

    for name in sorted(config.printers):
        merged = current_and_merged_config_yaml(layout, config, name)
        if merged is not None:
            old_text, new_text = merged
            kind = ChangeKind.UPDATE if old_text else ChangeKind.CREATE
            changes.append(FileChange(tree_config_yaml(name), kind, old_text, new_text, 0o600, name))

    state_dirs = tuple(name for name in sorted(config.printers) if not _state_dir_ready(layout, name))

    unit_files: dict[str, list[str]] = {}
    for rel, rendered in sorted(desired.items()):
        unit = unit_of(rel)
        if unit is not None:
            unit_files.setdefault(unit, []).append(f"{rel}\0{rendered.text}")
    units = {unit: _digest("\0\0".join(parts)) for unit, parts in unit_files.items()}

    # Venvs and accounts are real installs: only on the live system, never under --root.
    provision: tuple[VenvSpec, ...] = ()
    seed: tuple[str, ...] = ()
    if layout.live:
        provision = tuple(
            replace(spec, carry_from=(carry_from or {}).get(spec.name)) for spec in venvs_to_build(layout, config)
        )
        planned = {spec.name for spec in provision}
        provision += tuple(
            replace(venv_spec(config, name), reason="its venv link was not root's: built again")
            for name in sorted(config.printers)
            if name not in planned and _venv_link_removed(layout, name)
        )
        farm_user = (read_farm_credentials(layout) or FarmCredentials(FARM_USER, "")).username
        wanted_user = farm_user if config.frontdoor.enabled else None
        seed = tuple(name for name in sorted(config.printers) if needs_seeding(layout, name, farm_user=wanted_user))

    # A venv changed behind octobrix's back is rebuilt as the config has it; its OctoPrint restarts
    # though no file changed (held back like any restart while the printer prints).
    rebuilt = {octoprint_unit(s.name) for s in provision if s.drift} & set(previous.units) & set(units)

    touched = {change.path for change in changes}
    written = {*desired, *map(PurePosixPath, previous.files), *map(tree_config_yaml, config.printers), paths.MANIFEST}
    leftovers = tuple(temp for rel in sorted(written) for temp in _leftovers(layout, rel))
    return Plan(
        files=tuple(changes),
        state_dirs=state_dirs,
        provision=provision,
        seed=seed,
        start=tuple(sorted(set(units) - set(previous.units))),
        restart=tuple(sorted({u for u in set(units) & set(previous.units) if units[u] != previous.units[u]} | rebuilt)),
        stop=tuple(sorted(set(previous.units) - set(units))),
        reload_units=any(p.is_relative_to(paths.UNIT_DIR) for p in touched),
        reload_udev=paths.UDEV_RULES in touched,
        create_users=paths.SYSUSERS_FILE in touched,
        manifest=Manifest(files={str(p): _digest(r.text) for p, r in desired.items()}, units=units),
        wheels=config.octobrix.wheels,
        frontdoor_printers=tuple(sorted(config.printers)) if config.frontdoor.enabled else (),
        reload_frontdoor=NGINX_SITE in touched,
        farm_accounts=config.frontdoor.enabled,
        https=config if config.frontdoor.enabled and config.frontdoor.https else None,
        leftovers=leftovers,
        # A unit new to the manifest is started by `enable --now` anyway.
        recover=tuple(sorted(u for u in failed if printer_of(u) in config.printers and u in previous.units)),
    )


def _leftovers(layout: Layout, rel: PurePosixPath) -> list[PurePosixPath]:
    part = users_part(layout, rel)
    if part is None:
        return [PurePosixPath(temp.relative_to(layout.root)) for temp in leftover_temps(layout.path(rel))]
    top, below = part
    try:
        names = nofollow.list_dir(top, below.parent)
    except (OSError, UnsafePathError):
        return []  # not there, or a link where its folder should be: nothing of octobrix's in it
    pattern = re.compile(rf"^\.{re.escape(below.name)}\.[^/]{{8}}\.tmp$")
    return [rel.parent / n for n, info in names if pattern.match(n) and stat.S_ISREG(info.st_mode)]


def _remove(layout: Layout, rel: PurePosixPath) -> bool:
    """Remove a file octobrix wrote; in a printer's folders without following a link on the way."""
    part = users_part(layout, rel)
    if part is None:
        return remove_file(layout.path(rel))
    top, below = part
    if not nofollow.remove(top, below):
        return False
    if len(below.parts) > 2:  # never the basedir (or home) itself
        nofollow.prune_empty_dir(top, below.parent)
    return True


def render_diff(plan: Plan) -> str:
    out: list[str] = []
    for change in plan.files:
        target = f"/{change.path}"
        out.extend(
            difflib.unified_diff(
                change.old.splitlines(keepends=True),
                change.new.splitlines(keepends=True),
                fromfile=target if change.kind is not ChangeKind.CREATE else "/dev/null",
                tofile=target if change.kind is not ChangeKind.REMOVE else "/dev/null",
            )
        )
    return "".join(line if line.endswith("\n") else line + "\n" for line in out)


@contextlib.contextmanager
def apply_lock(layout: Layout) -> Iterator[None]:
    """One apply at a time: octobrixd and octobrixctl may both try."""
    with exclusive_lock(layout.path(LOCK_FILE), "another apply"):
        yield


def _ids(layout: Layout, owner: str | None) -> tuple[int, int]:
    if owner is None or not layout.live:
        return -1, -1
    entry = pwd.getpwnam(instance_user(owner))
    return entry.pw_uid, entry.pw_gid


def _user_ids(layout: Layout, name: str) -> tuple[int, int] | None:
    """The instance user's ids on a live system (KeyError when it has none yet); None under --root."""
    uid, gid = _ids(layout, name)
    return None if uid == -1 else (uid, gid)


def _state_dir_ready(layout: Layout, name: str) -> bool:
    try:
        return state_dir_ready(Instance(name, layout), _user_ids(layout, name))
    except KeyError:
        return False


def _ensure_state_dir(layout: Layout, name: str) -> None:
    ensure_state_dir(Instance(name, layout), _user_ids(layout, name))


def _venv_link_removed(layout: Layout, name: str) -> bool:
    """Whether the apply removes the instance's venv link (not root's to keep): then it builds its venv."""
    try:
        ids = _user_ids(layout, name)
    except KeyError:
        return False  # a new printer: no venv yet
    return venv_link_verdict(Instance(name, layout), ids).action is LinkAction.REMOVE


def _deferred(plan: Plan, busy: Callable[[str], bool]) -> tuple[str, ...]:
    held = []
    for unit in (*plan.restart, *plan.stop):
        name = printer_of(unit)
        if name is not None and busy(name):
            log.warning("%s is printing: not restarting %s until the print ends (--force does it now)", name, unit)
            held.append(unit)
    return tuple(held)


@dataclass(frozen=True)
class _Temp:
    target: Path
    temp: Path  # beside target; in a printer's folders a name only, handled through descriptors
    part: tuple[Path, PurePosixPath] | None  # users_part of target


class _Staged:
    """Every file an apply writes, written to synced temp files before anything changes.

    A full disk fails while staging, and then nothing changed: the temp files and the folders
    made for them are removed. Committing renames them in place, in the order staged. A file in a
    printer's folders is staged and committed with system/nofollow: no link on its way is followed.
    """

    def __init__(self) -> None:
        self.temps: list[_Temp] = []

    @classmethod
    def write(cls, layout: Layout, files: list[tuple[PurePosixPath, str, int]]) -> _Staged:
        staged = cls()
        made: list[Path] = []
        try:
            for rel, text, mode in files:
                target = layout.path(rel)
                part = users_part(layout, rel)
                if part is None:
                    made += reversed([d for d in (target.parent, *target.parent.parents) if not d.exists()])
                    staged.temps.append(_Temp(target, stage(target, text, mode=mode), None))
                    continue
                made += _make_parents(*part)
                temp = nofollow.stage(*part, text, mode=mode)
                staged.temps.append(_Temp(target, Path(temp), part))
        except DiskFullError as error:
            staged.discard()
            for directory in reversed(made):
                prune_empty_dir(directory)
            raise OctobrixError(f"{error.message}; nothing was changed", hint=error.hint) from error
        except BaseException:
            staged.discard()
            raise
        return staged

    def commit(self, target: Path, uid: int = -1, gid: int = -1) -> None:
        """Put the first staged version of target in place (the manifest is staged twice: pending, final)."""
        index = next(i for i, staged in enumerate(self.temps) if staged.target == target)
        staged = self.temps.pop(index)
        if staged.part is None:
            commit(staged.temp, target, uid=uid, gid=gid)
        else:
            nofollow.commit(*staged.part, str(staged.temp), uid=uid, gid=gid)

    def discard(self) -> None:
        while self.temps:
            staged = self.temps.pop()
            if staged.part is None:
                staged.temp.unlink(missing_ok=True)
            else:
                nofollow.discard(*staged.part, str(staged.temp))


def _make_parents(top: Path, relative: PurePosixPath) -> list[Path]:
    """The folders above top/relative that were missing, made (root's, 0700; a new printer's are handed
    to it with its state directory) without following a link on the way; top itself is root's."""
    made: list[Path] = []
    if not top.exists():
        made += reversed([d for d in (top, *top.parents) if not d.exists()])
        top.mkdir(parents=True)
    for depth in range(1, len(relative.parts)):
        folder = PurePosixPath(*relative.parts[:depth])
        try:
            nofollow.lstat_at(top, folder)
        except FileNotFoundError:
            nofollow.make_dir(top, folder, mode=None)
            made.append(top / folder)
    return made


def _apply_staged(plan: Plan, layout: Layout, staged: _Staged, deferred: tuple[str, ...] = ()) -> None:
    """Everything but systemd and the final manifest, in an order a kill at any point leaves safe."""
    staged.commit(layout.path(paths.MANIFEST))

    doing = Doing(layout, deferred)
    if any(c.path == paths.SYSUSERS_FILE for c in plan.files):
        staged.commit(layout.path(paths.SYSUSERS_FILE))
    _run_steps(plan, Stage.USERS, doing)

    for name in plan.state_dirs:
        _ensure_state_dir(layout, name)

    if plan.provision and plan.wheels is None:
        check_build_prerequisites()
    # All venvs are built before anything else changes: a failed install leaves the system as it was.
    _run_steps(plan, Stage.VENVS, doing)

    for change in plan.files:
        if change.path == paths.SYSUSERS_FILE:
            continue
        target = layout.path(change.path)
        if change.kind is ChangeKind.REMOVE:
            _remove(layout, change.path)
            log.info("removed %s", target)
        else:
            staged.commit(target, *_ids(layout, change.owner))
            log.info("wrote %s", target)

    _run_steps(plan, Stage.SEED, doing)


@dataclass(frozen=True)
class ApplyResult:
    deferred: tuple[str, ...] = ()


def apply_plan(
    plan: Plan,
    layout: Layout,
    previous: Manifest,
    *,
    force: bool = False,
    busy: Callable[[str], bool] | None = None,
) -> ApplyResult:
    """Carry out plan. Files first (atomically), then systemd and udev on a live system only.

    An instance whose printer is printing is neither restarted nor stopped unless force: the unit
    keeps its old digest in the manifest, so the next apply (octobrixd retries) does it.
    """
    deferred: tuple[str, ...] = ()
    checker = busy if busy is not None else (printing_now(layout) if layout.live else None)
    if checker is not None and not force:
        deferred = _deferred(plan, checker)
    layout.path(paths.STATE_DIR).mkdir(parents=True, exist_ok=True)
    manifest_path = layout.path(paths.MANIFEST)
    for leftover in plan.leftovers:
        _remove(layout, leftover)
        log.info("removed %s, left by an interrupted apply", layout.path(leftover))
    # Record new files before writing them, so a crash never leaves an untracked generated file.
    pending = Manifest(files={**previous.files, **plan.manifest.files}, units=previous.units)
    units = dict(plan.manifest.units)
    for unit in deferred:
        if unit in previous.units:
            units[unit] = previous.units[unit]
    final = replace(plan.manifest, units=units, deferred=deferred)

    writes = [(c.path, c.new, c.mode) for c in plan.files if c.kind is not ChangeKind.REMOVE]
    log.info("writing %d files", len(writes))
    staged = _Staged.write(
        layout, [(paths.MANIFEST, pending.to_json(), 0o644), *writes, (paths.MANIFEST, final.to_json(), 0o644)]
    )
    try:
        _apply_staged(plan, layout, staged, deferred)
        _run_steps(plan, Stage.SYSTEM, Doing(layout, deferred))
        staged.commit(manifest_path)
    finally:
        staged.discard()
    # A kill between removing a printer's last file and its folder left the folder empty.
    for rel in set(previous.files) - set(final.files):
        part = users_part(layout, PurePosixPath(rel))
        if part is None:
            prune_empty_dir(layout.path(rel).parent)
        elif len(part[1].parts) > 2:
            nofollow.prune_empty_dir(part[0], part[1].parent)
    return ApplyResult(deferred=deferred)


def apply_now(
    config: Config, layout: Layout, *, force: bool = False, carry_from: Mapping[str, Path] | None = None
) -> ApplyResult:
    """One whole apply of config, under the apply lock, as `octobrixctl apply` makes it."""
    with apply_lock(layout):
        return apply_holding_lock(config, layout, force=force, carry_from=carry_from)


def apply_holding_lock(
    config: Config, layout: Layout, *, force: bool = False, carry_from: Mapping[str, Path] | None = None
) -> ApplyResult:
    """apply_now for a caller that already holds apply_lock: one that must finish more than the apply
    before octobrixd may apply again (import moves basedirs into the instances it made)."""
    previous = read_manifest(layout)
    result = apply_plan(make_plan(config, layout, previous, carry_from=carry_from), layout, previous, force=force)
    remember_applied(layout, config)
    return result
