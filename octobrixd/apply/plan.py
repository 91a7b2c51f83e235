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
from octobrixd.system import paths, systemd, udev
from octobrixd.system.fsutil import (
    DiskFullError,
    commit,
    exclusive_lock,
    leftover_temps,
    prune_empty_dir,
    remove_file,
    stage,
)
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
        steps.append(Step(Stage.SEED, (says,), partial(_seed, name), live_only=False))
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
    door = ["sync the front door's secrets (farm login, metrics token, the printers' API keys)"]
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


def _seed(name: str, doing: Doing) -> None:
    layout = doing.layout
    seed_basedir(layout, name, *_ids(layout, name), serving_port=serving_port(layout, name))


def _frontdoor(plan: Plan, doing: Doing) -> None:
    site = next((c for c in plan.files if c.path == NGINX_SITE), None)
    site_old = site.old if site is not None and site.kind is ChangeKind.UPDATE else None
    frontdoor.after_apply(doing.layout, plan.frontdoor_printers, site_old, plan.reload_frontdoor)


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


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def current_and_merged_config_yaml(layout: Layout, config: Config, name: str) -> tuple[str, str] | None:
    """(current text, merged text) of the instance's config.yaml, or None if nothing changes."""
    path = Instance(name, layout).config_yaml
    current_text = _read_text(path) or ""
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
        old = _read_text(layout.path(rel))
        if old != rendered.text:
            kind = ChangeKind.CREATE if old is None else ChangeKind.UPDATE
            changes.append(FileChange(rel, kind, old or "", rendered.text, rendered.mode, rendered.owner))

    for rel_text in sorted(set(previous.files) - {str(p) for p in desired}):
        rel = PurePosixPath(rel_text)
        old = _read_text(layout.path(rel))
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
        seed = tuple(name for name in sorted(config.printers) if needs_seeding(layout, name))

    # A venv changed behind octobrix's back is rebuilt as the config has it; its OctoPrint restarts
    # though no file changed (held back like any restart while the printer prints).
    rebuilt = {octoprint_unit(s.name) for s in provision if s.drift} & set(previous.units) & set(units)

    touched = {change.path for change in changes}
    written = {*desired, *map(PurePosixPath, previous.files), *map(tree_config_yaml, config.printers), paths.MANIFEST}
    leftovers = tuple(
        PurePosixPath(temp.relative_to(layout.root))
        for rel in sorted(written)
        for temp in leftover_temps(layout.path(rel))
    )
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
        leftovers=leftovers,
        # A unit new to the manifest is started by `enable --now` anyway.
        recover=tuple(sorted(u for u in failed if printer_of(u) in config.printers and u in previous.units)),
    )


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


class _Staged:
    """Every file an apply writes, written to synced temp files before anything changes.

    A full disk fails while staging, and then nothing changed: the temp files and the folders
    made for them are removed. Committing renames them in place, in the order staged.
    """

    def __init__(self) -> None:
        self.temps: list[tuple[Path, Path]] = []  # (target, temp)

    @classmethod
    def write(cls, files: list[tuple[Path, str, int]]) -> _Staged:
        staged = cls()
        made: list[Path] = []
        try:
            for target, text, mode in files:
                made += reversed([d for d in (target.parent, *target.parent.parents) if not d.exists()])
                staged.temps.append((target, stage(target, text, mode=mode)))
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
        index = next(i for i, (path, _temp) in enumerate(self.temps) if path == target)
        _path, temp = self.temps.pop(index)
        commit(temp, target, uid=uid, gid=gid)

    def discard(self) -> None:
        while self.temps:
            _path, temp = self.temps.pop()
            temp.unlink(missing_ok=True)


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
            remove_file(target)
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
        layout.path(leftover).unlink(missing_ok=True)
        log.info("removed %s, left by an interrupted apply", layout.path(leftover))
    # Record new files before writing them, so a crash never leaves an untracked generated file.
    pending = Manifest(files={**previous.files, **plan.manifest.files}, units=previous.units)
    units = dict(plan.manifest.units)
    for unit in deferred:
        if unit in previous.units:
            units[unit] = previous.units[unit]
    final = replace(plan.manifest, units=units, deferred=deferred)

    writes = [(layout.path(c.path), c.new, c.mode) for c in plan.files if c.kind is not ChangeKind.REMOVE]
    log.info("writing %d files", len(writes))
    staged = _Staged.write(
        [(manifest_path, pending.to_json(), 0o644), *writes, (manifest_path, final.to_json(), 0o644)]
    )
    try:
        _apply_staged(plan, layout, staged, deferred)
        _run_steps(plan, Stage.SYSTEM, Doing(layout, deferred))
        staged.commit(manifest_path)
    finally:
        staged.discard()
    # A kill between removing a printer's last file and its folder left the folder empty.
    for rel in set(previous.files) - set(final.files):
        prune_empty_dir(layout.path(rel).parent)
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
