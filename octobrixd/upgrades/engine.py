"""The acting layer of `upgrade` and `rollback`: one printer at a time, under apply's lock, through
apply's own plan (so the venv is built with the printer's plugins exactly as `apply` builds it, and
the manifest stays true), checked by health.py and put back from rollback_point.py."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from octobrixd.apply.plan import apply_lock, apply_plan, make_plan
from octobrixd.config.applied import remember_applied
from octobrixd.config.edit import edit_config_file, remove_value, set_value
from octobrixd.config.model import Config, load_config
from octobrixd.errors import OctobrixError
from octobrixd.farm.manifest import read_manifest
from octobrixd.farm.status import query_units
from octobrixd.instances import api as octoprint_api
from octobrixd.instances.credentials import read_credentials
from octobrixd.instances.instance import Instance
from octobrixd.instances.running import printing_now
from octobrixd.instances.venv_contents import installed_versions
from octobrixd.names import octoprint_unit
from octobrixd.system import systemd
from octobrixd.system.paths import Layout
from octobrixd.system.systemd import NOTHING, UnitProperties, UnitState
from octobrixd.upgrades import health, rollback_point

log = logging.getLogger(__name__)

WAIT_POLL = 5.0
HEALTH_POLL = 1.0


class UpgradeFailed(OctobrixError):
    """The new OctoPrint failed its check (the message says whether it is back on the old one)."""


@dataclass(frozen=True)
class Context:
    config_path: Path
    layout: Layout = field(default_factory=Layout)
    force: bool = False
    say: Callable[[str], None] = print
    time_limit: float = health.TIME_LIMIT


def running_version(layout: Layout, name: str) -> str | None:
    venv = rollback_point.running_venv(layout, name)
    return installed_versions(venv).get("octoprint") if venv is not None else None


def _unit_props(name: str) -> UnitProperties:
    return query_units([octoprint_unit(name)]).get(octoprint_unit(name), NOTHING)


def _connected(layout: Layout, config: Config, name: str) -> bool:
    credentials = read_credentials(layout, name)
    if credentials is None:
        return False
    try:
        return octoprint_api.connection_state(config.printers[name].port, credentials.api_key) == "Operational"
    except octoprint_api.ApiError:
        return False


def apply_config(ctx: Context, name: str) -> Config:
    """What `octobrixctl apply` does (the caller holds its lock); name alone may be restarted though
    it is busy: it was found idle just before, or --force."""
    config = load_config(ctx.config_path)
    previous = read_manifest(ctx.layout)
    plan = make_plan(config, ctx.layout, previous)
    busy = printing_now(ctx.layout)
    apply_plan(plan, ctx.layout, previous, busy=lambda other: other != name and busy(other))
    remember_applied(ctx.layout, config)
    return config


def set_pin(ctx: Context, name: str, pin: str | None) -> None:
    """printers.NAME.octoprint = pin, or no such key (the printer follows [octobrix] octoprint)."""
    if pin is None:
        edit_config_file(ctx.config_path, lambda text: remove_value(text, "printers", name, "octoprint"))
    else:
        edit_config_file(ctx.config_path, lambda text: set_value(text, "printers", name, "octoprint", pin))


def wait_healthy(ctx: Context, config: Config, name: str, expected: health.Expected) -> health.Judgement:
    unit = octoprint_unit(name)
    credentials = read_credentials(ctx.layout, name)
    port = config.printers[name].port
    baseline = _unit_props(name).restarts or 0
    started = time.monotonic()
    while True:
        props = _unit_props(name)
        # Crashes since this start, not those before it.
        if props.restarts is not None:
            props = replace(props, restarts=props.restarts - baseline)
        server: dict[str, object] | None = None
        connection = None
        if credentials is not None and props.state is UnitState.ACTIVE:
            try:
                body = octoprint_api.request(port, credentials.api_key, "/api/server")
                server = body if isinstance(body, dict) else {}
                if expected.operational:
                    connection = octoprint_api.connection_state(port, credentials.api_key)
            except octoprint_api.ApiError:
                pass
        seen = health.Seen(props, server, connection, time.monotonic() - started)
        judgement = health.judge(seen, expected, ctx.time_limit)
        if judgement.verdict is not health.Verdict.WAITING:
            log.info("%s: %s after %.1f s", unit, judgement.verdict, seen.elapsed)
            return judgement
        time.sleep(HEALTH_POLL)


def wait_until_idle(ctx: Context, name: str) -> None:
    if ctx.force:
        return
    busy = printing_now(ctx.layout)
    if busy(name):
        ctx.say(f"{name} is printing: waiting for the print to end (checking every {WAIT_POLL:.0f} s)")
        while busy(name):
            time.sleep(WAIT_POLL)


def put_back(ctx: Context, point: rollback_point.Point, where: Path, operational: bool, *, check: bool = True) -> float:
    """The previous venv, config.yaml, users.yaml and pin, and the instance started on them; the
    caller holds apply's lock. Returns the seconds until the old OctoPrint was started."""
    started = time.monotonic()
    name = point.name
    unit = octoprint_unit(name)
    previous = rollback_point.previous_venv(ctx.layout, point)
    systemd.stop([unit], wait=True)
    rollback_point.swap_venv(ctx.layout, name, previous)
    rollback_point.restore_files(ctx.layout, point, where, *Instance(name, ctx.layout).ids())
    set_pin(ctx, name, point.own_pin)
    config = apply_config(ctx, name)  # no build: the previous venv is the config's again
    systemd.reset_failed([unit])
    systemd.start([unit], wait=True)
    seconds = time.monotonic() - started
    if not check:
        return seconds
    judgement = wait_healthy(ctx, config, name, health.Expected(point.version, operational))
    if judgement.verdict is not health.Verdict.HEALTHY:
        raise OctobrixError(
            f"{name} is on its previous OctoPrint again, but {judgement.what}",
            hint=f"`journalctl -u {unit}` says why; `octobrixctl status {name}`",
        )
    return seconds


def upgrade_one(ctx: Context, name: str, requirement: str, expected_version: str | None) -> bool:
    """Move printer NAME to requirement; False when it started printing meanwhile (try again later).
    Raises UpgradeFailed (after a rollback) or OctobrixError (nothing changed)."""
    wait_until_idle(ctx, name)
    started = time.monotonic()
    with apply_lock(ctx.layout):
        if not ctx.force and printing_now(ctx.layout)(name):
            return False
        config = load_config(ctx.config_path)
        running = rollback_point.running_venv(ctx.layout, name)
        if running is None:
            raise OctobrixError(f"{name} has no OctoPrint installed yet", hint="run `sudo octobrixctl apply` first")
        was = running_version(ctx.layout, name)
        active = _unit_props(name).state is UnitState.ACTIVE
        operational = active and _connected(ctx.layout, config, name)
        point = rollback_point.Point(
            name=name,
            venv=running.name,
            version=was,
            requirement=config.octoprint_requirement(name),
            own_pin=config.printers[name].octoprint,
            target=requirement,
            made=rollback_point.now(),
        )
        where = rollback_point.pending(ctx.layout, name)
        rollback_point.save(ctx.layout, point, where)
        set_pin(ctx, name, requirement)
        try:
            config = apply_config(ctx, name)
        except OctobrixError as error:
            if rollback_point.running_venv(ctx.layout, name) != running:
                # Built and swapped, then something after it failed (systemd): the whole way back.
                put_back(ctx, point, where, operational)
            else:
                set_pin(ctx, name, point.own_pin)
            rollback_point.forget(where)
            raise OctobrixError(
                f"upgrade of {name} to {requirement} failed: {error.message}; it stays on OctoPrint {was}, "
                f"its pin {point.requirement} is back in {ctx.config_path}",
                hint=error.hint,
            ) from error
        now = running_version(ctx.layout, name)
        if not active:
            rollback_point.promote(ctx.layout, name)
            ctx.say(f"{name}: OctoPrint {was} -> {now} installed; it was not running, so it was left stopped")
            return True
        judgement = wait_healthy(ctx, config, name, health.Expected(expected_version, operational))
        if judgement.verdict is health.Verdict.HEALTHY:
            rollback_point.promote(ctx.layout, name)
            ctx.say(
                f"{name}: OctoPrint {was} -> {now}, healthy after {time.monotonic() - started:.0f} s "
                f"(`octobrixctl rollback {name}` goes back)"
            )
            return True
        lines = systemd.journal_tail(octoprint_unit(name), health.LOG_LINES)
        try:
            put_back(ctx, point, where, operational)
            rolled_back = True
        except OctobrixError as error:
            log.error("rollback of %s failed: %s", name, error)
            rolled_back = False
        if rolled_back:
            rollback_point.forget(where)
        raise UpgradeFailed(
            health.failed_message(
                name,
                requirement,
                what=judgement.what,
                log_lines=lines,
                back_on=was,
                pin=point.requirement,
                rolled_back=rolled_back,
            ),
            hint=f"`journalctl -u {octoprint_unit(name)}` has the whole log",
        )


def rollback(ctx: Context, name: str, *, check: bool = True) -> tuple[rollback_point.Point, float, float]:
    """Printer NAME back on the OctoPrint it ran before its last upgrade; no network needed.
    Returns the point, the seconds until the old OctoPrint started and until it was healthy."""
    point = rollback_point.load(ctx.layout, name)
    if point is None:
        raise OctobrixError(
            f"{name} has nothing to roll back to: no upgrade by `octobrixctl upgrade` since the last rollback",
            hint=f"`octobrixctl upgrade {name} --to octoprint==VERSION` moves it to the version you want",
        )
    rollback_point.previous_venv(ctx.layout, point)  # refuse before waiting for a print
    wait_until_idle(ctx, name)
    started = time.monotonic()
    with apply_lock(ctx.layout):
        config = load_config(ctx.config_path)
        operational = _unit_props(name).state is UnitState.ACTIVE and _connected(ctx.layout, config, name)
        where = rollback_point.folder(ctx.layout, name)
        seconds = put_back(ctx, point, where, operational, check=check)
        rollback_point.forget(where)
    return point, seconds, time.monotonic() - started
