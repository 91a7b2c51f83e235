"""Carrying out an import plan: the side effects, in an order that keeps a way back at every step.

The old OctoPrints must give up their ports (kept where free) before the new ones can take them, so
they are stopped first, after asking each one whether it prints. Then the config gets its entries
(config_edit), apply builds each new instance (its OctoPrint pinned to the old version, the old
venv's Plugin Manager plugins carried) and each basedir is copied in, with octobrix's own keys put
back on top as a restore does. Only when every new OctoPrint answers are the old units disabled;
if anything fails before, the entries are taken out again and the old units started again. The old
files are only ever read.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import pwd
import shutil
import stat
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from octobrixd.apply.plan import apply_holding_lock, apply_lock, apply_now, current_and_merged_config_yaml
from octobrixd.backups.engine import reapply_octobrix_keys
from octobrixd.config.edit import edit_config_file, remove_entry
from octobrixd.config.model import Config
from octobrixd.errors import OctobrixError
from octobrixd.importers.copy import Survey, copy_basedir
from octobrixd.importers.plan import ImportPlan, PrinterMove, state_after, state_path
from octobrixd.importers.sources import UNIT_DIR
from octobrixd.instances import api as octoprint_api
from octobrixd.instances.credentials import read_credentials
from octobrixd.instances.instance import APP_KEYS, BASEDIR, CONFIG_YAML, Instance
from octobrixd.names import octoprint_unit
from octobrixd.system import nofollow, systemd
from octobrixd.system.fsutil import write_atomic
from octobrixd.system.nofollow import UnsafePathError
from octobrixd.system.paths import Layout

log = logging.getLogger(__name__)

ANSWER_TIMEOUT = 300.0
STAGING = ".import-basedir"
ASIDE = ".basedir-before-import"


def old_api_key(basedir: Path) -> str | None:
    """Any API key the old OctoPrint accepts: an application key of its users, or its global key.
    Read without following a link: it is sent to the old OctoPrint's port, and another printer's key
    must not be."""
    for relative, pick in ((APP_KEYS, _app_key), (PurePosixPath(CONFIG_YAML), _global_key)):
        try:
            body = yaml.safe_load(nofollow.read_text(basedir.parent, basedir.name / relative))
        except (OSError, ValueError, UnsafePathError, yaml.YAMLError):
            continue
        key = pick(body)
        if key:
            return key
    return None


def _app_key(body: Any) -> str | None:
    if not isinstance(body, dict):
        return None
    for keys in body.values():
        for entry in keys if isinstance(keys, list) else ():
            if isinstance(entry, dict) and isinstance(entry.get("api_key"), str):
                return str(entry["api_key"])
    return None


def _global_key(body: Any) -> str | None:
    api = body.get("api") if isinstance(body, dict) else None
    key = api.get("key") if isinstance(api, dict) else None
    return key if isinstance(key, str) else None


def check_idle(plan: ImportPlan, running: list[str]) -> None:
    """Refuse while an old OctoPrint prints, or when it cannot be asked."""
    for move in plan.printers:
        if move.old.unit not in running:
            continue
        key = old_api_key(move.old.basedir)
        if key is None or move.old.port is None:
            raise OctobrixError(
                f"{move.old.unit} runs and octobrix cannot ask it whether it prints (no API key in {move.old.basedir})",
                hint=f"once its printer is idle, `sudo systemctl stop {move.old.unit}` and import again",
            )
        if octoprint_api.is_busy(move.old.port, key):
            raise OctobrixError(
                f"{move.old.name} is printing (or does not say it is not): moving it now would end the print",
                hint="import again when the print is over",
            )


def _old_owner(layout: Layout, move: PrinterMove) -> int | None:
    """The uid the old OctoPrint ran as (its unit's User=), when this system knows it."""
    if not layout.live or not move.old.user:
        return None
    try:
        return pwd.getpwnam(move.old.user).pw_uid
    except KeyError:
        return None


def _remove(parent: Path, name: str) -> None:
    """Remove parent/name whatever it is, never following a link (shutil's rmtree by descriptors)."""
    fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            info = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(info.st_mode):
            shutil.rmtree(name, dir_fd=fd)
        else:
            os.unlink(name, dir_fd=fd)
    finally:
        os.close(fd)


def move_basedir(config: Config, layout: Layout, move: PrinterMove) -> Survey:
    """The old basedir into the (stopped) new instance; octobrix's keys back on top."""
    instance = Instance(move.name, layout)
    uid, gid = instance.ids() if layout.live else (-1, -1)
    state_dir, basedir = instance.state_dir, instance.basedir
    for leftover in (STAGING, ASIDE):
        _remove(state_dir, leftover)
    copied = copy_basedir(move.old.basedir, state_dir / STAGING, uid, gid, owner=_old_owner(layout, move))
    if basedir.exists() or basedir.is_symlink():
        basedir.rename(state_dir / ASIDE)
    (state_dir / STAGING).rename(basedir)
    if layout.live:
        reapply_octobrix_keys(
            config, layout, move.name, (uid, gid), credentials=read_credentials(layout, move.name), same_farm=False
        )
    else:
        merged = current_and_merged_config_yaml(layout, config, move.name)
        if merged is not None:
            nofollow.write_atomic(state_dir, f"{BASEDIR}/{CONFIG_YAML}", merged[1], mode=0o600)
    # The fresh basedir apply made a minute ago: octobrix's seed, nothing of the user's.
    _remove(state_dir, ASIDE)
    return copied


def wait_answering(layout: Layout, name: str, port: int, timeout: float = ANSWER_TIMEOUT) -> None:
    credentials = read_credentials(layout, name)
    if credentials is None:
        raise OctobrixError(f"printer {name} has no login yet", hint="run `sudo octobrixctl apply`")
    deadline = time.monotonic() + timeout
    while True:
        try:
            octoprint_api.request(port, credentials.api_key, "/api/version")
            return
        except octoprint_api.ApiError as error:
            if time.monotonic() > deadline:
                raise OctobrixError(
                    f"the new OctoPrint of {name} does not answer on port {port} ({error})",
                    hint=f"see `journalctl -u {octoprint_unit(name)}`",
                ) from None
        time.sleep(1.0)


def going_back(plan: ImportPlan, config_path: Path) -> str:
    new = " ".join(octoprint_unit(m.name) for m in plan.printers)
    old = " ".join(plan.old_units())
    entries = ", ".join(f"[printers.{m.name}]" for m in plan.printers)
    return (
        f"to go back: `sudo systemctl disable --now {new}`, `sudo systemctl enable --now {old}`, "
        f"and remove {entries} from {config_path} (the old files are as they were)"
    )


def run_import(plan: ImportPlan, config_path: Path, layout: Layout, say: Callable[[str], None]) -> Config:
    existing = [u for u in plan.old_units() if layout.path(UNIT_DIR / u).exists()]
    running = systemd.active(existing) if layout.live else []
    check_idle(plan, running)
    if running:
        say(f"stopping {' '.join(running)} (they give their ports to the new instances)")
        systemd.stop(running, wait=True)
    edited = False
    try:
        # The config's edit wakes octobrixd, whose apply would find the new instances stopped halfway
        # through the move and start them on the old basedir's keys (OctoPrint then refuses octobrix's
        # key): it waits until every instance is moved and answers.
        with apply_lock(layout):
            config = edit_config_file(config_path, *plan.edits())
            edited = True
            say(f"added {len(plan.printers)} printers and {len(plan.cameras)} cameras to {config_path}; applying it")
            carry_from = {m.name: m.old.venv for m in plan.printers if m.old.venv is not None}
            apply_holding_lock(config, layout, carry_from=carry_from)
            for move in plan.printers:
                unit = octoprint_unit(move.name)
                if layout.live:
                    systemd.stop([unit], wait=True)
                copied = move_basedir(config, layout, move)
                say(f"{move.name}: copied {copied.text()} from {move.old.basedir}")
                for skipped in copied.skipped:
                    say(f"{move.name}: left out {skipped}")
                for link in copied.links:
                    say(f"{move.name}: kept as a link, not followed: {link}")
                if layout.live:
                    systemd.start([unit], wait=True)
            if layout.live:
                for move in plan.printers:
                    wait_answering(layout, move.name, config.printers[move.name].port)
                    say(f"{move.name}: its OctoPrint answers on port {config.printers[move.name].port}")
    except BaseException:
        _undo(plan, config_path, layout, running=running, edited=edited, say=say)
        raise
    if layout.live and existing:
        systemd.disable(existing)
        say(f"disabled {' '.join(existing)}; their files are untouched")
    when = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    write_atomic(state_path(layout), json.dumps(state_after(layout, plan, when), indent=2) + "\n", mode=0o644)
    return config


def _undo(
    plan: ImportPlan, config_path: Path, layout: Layout, *, running: list[str], edited: bool, say: Callable[[str], None]
) -> None:
    try:
        if edited:
            edits = [lambda text, m=m: remove_entry(text, "printers", m.name) for m in plan.printers]
            edits += [lambda text, m=m: remove_entry(text, "cameras", m.name) for m in plan.cameras]
            apply_now(edit_config_file(config_path, *edits), layout)
            say(f"took the new entries out of {config_path} again")
        if running:
            systemd.start(running, wait=True)
            say(f"started {' '.join(running)} again: the old farm runs as before")
    except (OctobrixError, OSError) as error:
        log.error("could not undo the import: %s", error)
        say(f"could not undo all of the import ({error}); {going_back(plan, config_path)}")
