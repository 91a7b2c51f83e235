"""`octobrixctl upgrade` and `rollback` for real (issue #16): octobrix installed by install.sh in a
systemd container, two printers (simulated Marlins on ptys) pinned to OctoPrint 1.11.7 and built from
a wheels folder (the lab's wheelhouse with 1.11.8, plus 1.11.7's own wheel), so nothing here needs
an index.

One module, one container, one install: the tests run in order and build on each other. alpha gets
a changed setting, a second user and an upload; beta prints while `upgrade alpha beta` runs: alpha
moves at once, beta after its print. Then alpha rolls back with the wheels folder emptied (no source
to build from), and an OctoPrint that installs but cannot start (1.11.8 repacked as 1.11.99 with a
server module that raises) is put back by itself.

Plugins: alpha has the lab's tiny plugin (tests/lab/test_plugins.py builds it) from the config, beta
gets it the way OctoPrint's Plugin Manager installs one (pip in its venv, as its user, with the pin
as PIP_CONSTRAINT); `upgrade --check` then finds its newer releases dropped into the wheels folder:
one that fits OctoPrint 1.11.7 and a newer one that needs OctoPrint 1.12, judged by the venvs' own pip.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.harness import installs
from tests.lab.harness.container import Container
from tests.lab.harness.farm import pty_farm, simulator_log
from tests.lab.harness.guest_probe import octoprint_pid
from tests.lab.harness.installs import upload_gcode, wait_operational
from tests.lab.harness.waiting import wait_until
from tests.lab.harness.wheelhouse import fill_wheels, wheelhouse
from tests.lab.test_plugins import PLUGIN_DIST, build_plugin_wheel

pytestmark = pytest.mark.lab

PORTS = {"alpha": 5600, "beta": 5601}
FRONT_DOOR = 8600
WHEELS = "/srv/wheels"
OLD, NEW, BROKEN = "1.11.7", "1.11.8", "1.11.99"
# beta's print: long enough to outlast alpha's whole upgrade (build, restart, health check).
MOVE_SECONDS = 0.4
MOVES = 175
LAST_LINE = "M117 lab print done"
CONFIG = f"""\
# The lab's farm: these comments must survive every upgrade.
[octobrix]
wheels = "{WHEELS}"   # offline: OctoPrint comes from this folder only

[frontdoor]
port = {FRONT_DOOR}

# alpha: idle during the upgrade
[printers.alpha]
serial = "LABALPHA01"
port = {PORTS["alpha"]}
baudrate = 250000
octoprint = "octoprint=={OLD}"   # pinned on purpose
plugins = ["{PLUGIN_DIST}==0.1.0"]

[printers.beta]
serial = "LABBETA01"
port = {PORTS["beta"]}
baudrate = 250000
octoprint = "octoprint=={OLD}"
"""
PLUGIN_FITS, PLUGIN_NEEDS_1_12 = "0.2.0", "0.3.0"
SECOND_USER = "maker"
COLOR = "red"


def prepare_wheels(box: Container) -> None:
    fill_wheels(box, WHEELS, OLD)
    build_plugin_wheel(box.path(WHEELS))  # alpha's config plugin, 0.1.0


@pytest.fixture(scope="module")
def farm(lab_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    workdir = Path(tmp_path_factory.mktemp("upgrades", numbered=True))
    with pty_farm(
        workdir, CONFIG, {"alpha": 0.0, "beta": MOVE_SECONDS}, PORTS.values(),
        front_door_port=FRONT_DOOR, before_install=prepare_wheels,
    ) as box:  # fmt: skip
        yield box


# An upgrade moves a venv and waits for OctoPrint: longer than ctl's default.
ctl = functools.partial(installs.ctl, timeout=1200.0)
octoprint = installs.OctoPrints(PORTS).api


def version(box: Container, name: str) -> str:
    return str(octoprint(box, name, "/api/server")["version"])


def pin(box: Container, name: str) -> str:
    text = box.read_file("/etc/octobrix.toml")
    block = text.split(f"[printers.{name}]", 1)[1].split("\n[", 1)[0]
    found = re.search(r'^octoprint = "([^"]+)"(.*)$', block, re.MULTILINE)
    assert found, text
    return found[1] + found[2]


def assert_users_data_kept(box: Container) -> None:
    assert octoprint(box, "alpha", "/api/settings")["appearance"]["color"] == COLOR
    users = [u["name"] for u in octoprint(box, "alpha", "/api/access/users")["users"]]
    assert SECOND_USER in users, users
    files = [f["name"] for f in octoprint(box, "alpha", "/api/files/local")["files"]]
    assert "kept.gcode" in files, files
    text = box.read_file("/etc/octobrix.toml")
    for comment in ("# The lab's farm: these comments must survive every upgrade.", "# alpha: idle during the upgrade",
                    "# offline: OctoPrint comes from this folder only"):  # fmt: skip
        assert comment in text, text


def test_check_shows_what_each_runs_and_the_newer_release(farm: Container) -> None:
    for name, port in PORTS.items():
        wait_operational(farm, name, port)
    before = farm.read_file("/etc/octobrix.toml")
    rc, out = ctl(farm, "upgrade", "--check")
    assert rc == 0, out
    for name in PORTS:
        assert (
            f"{name}: runs OctoPrint {OLD} (octoprint=={OLD}); can move to octoprint=={NEW} "
            f"(from the wheels folder {WHEELS}): `sudo octobrixctl upgrade {name}`"
        ) in out, out
    assert farm.read_file("/etc/octobrix.toml") == before
    assert version(farm, "alpha") == OLD and version(farm, "beta") == OLD


def plugin_manager_install(box: Container, name: str, requirement: str) -> None:
    """What OctoPrint's Plugin Manager does: its venv's pip, as the instance's user, under the pin."""
    uid = box.run(["id", "-u", f"octobrix-{name}"]).stdout.strip()
    gid = box.run(["id", "-g", f"octobrix-{name}"]).stdout.strip()
    box.run(
        ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", f"/var/lib/octobrix/{name}/venv/bin/python",
         "-m", "pip", "--disable-pip-version-check", "install", "--quiet", "--no-index", "--find-links", WHEELS,
         requirement],
        env={"HOME": f"/var/lib/octobrix/{name}/home",
             "PIP_CONSTRAINT": f"/var/lib/octobrix/{name}/pip-constraints.txt"},
        check=True, timeout=300,
    )  # fmt: skip


def test_check_lists_plugin_updates_that_fit_the_pin_and_what_applies_them(farm: Container) -> None:
    rc, out = ctl(farm, "upgrade", "--check")
    assert rc == 0, out
    lines = out.splitlines()
    assert lines[1] == "  plugins: up to date", "alpha's 0.1.0 is the newest the wheels folder has"
    assert lines[3] == "  plugins: none", "beta has none yet"

    plugin_manager_install(farm, "beta", f"{PLUGIN_DIST}==0.1.0")
    build_plugin_wheel(farm.path(WHEELS), PLUGIN_FITS, ("OctoPrint>=1.11",))
    build_plugin_wheel(farm.path(WHEELS), PLUGIN_NEEDS_1_12, ("OctoPrint>=1.12",))
    before = farm.read_file("/etc/octobrix.toml")
    started = time.monotonic()
    rc, out = ctl(farm, "upgrade", "--check")
    took = time.monotonic() - started
    assert rc == 0, out
    print(f"upgrade --check with two plugin updates to judge: {took:.1f} s\n{out}")
    lines = out.splitlines()
    assert lines[0].startswith(f"alpha: runs OctoPrint {OLD}") and lines[2].startswith(f"beta: runs OctoPrint {OLD}")
    alpha, beta = lines[1], lines[3]
    fits = f"0.1.0 -> {PLUGIN_FITS}  fits octoprint=={OLD}; {PLUGIN_NEEDS_1_12} does not"
    assert alpha.startswith(f"  {PLUGIN_DIST}  {fits}"), alpha
    assert f'pin "{PLUGIN_DIST}=={PLUGIN_FITS}" in printers.alpha.plugins, then `sudo octobrixctl apply`' in alpha
    wheel = f"{WHEELS}/OctoPrint_Labplug-{PLUGIN_FITS}-py3-none-any.whl"
    assert beta.startswith(f"  {PLUGIN_DIST}  {fits}"), beta
    assert f"in beta's OctoPrint: Plugin Manager > Get More > upload {wheel}" in beta, beta
    # pip's own reason, from the venv's resolver under the pin:
    assert f"octoprint-labplug {PLUGIN_NEEDS_1_12} depends on OctoPrint>=1.12" in alpha, alpha

    rc, raw = ctl_json(farm, "upgrade", "--check", "--json")
    assert rc == 0, raw
    body = json.loads(raw)
    assert body["version"] == 1 and body["errors"] == [] and body["source"] == f"the wheels folder {WHEELS}"
    by_name = {p["name"]: p for p in body["printers"]}
    assert by_name["alpha"]["octoprint_update"] == f"octoprint=={NEW}"
    for name, source in (("alpha", "config"), ("beta", "plugin-manager")):
        (plugin,) = by_name[name]["plugins"]
        assert (plugin["name"], plugin["source"], plugin["version"]) == (PLUGIN_DIST, source, "0.1.0"), plugin
        assert (plugin["newest"], plugin["update"], plugin["fits_octoprint"]) == (PLUGIN_NEEDS_1_12, PLUGIN_FITS, True)

    # Nothing changed: the config, and what each venv holds.
    assert farm.read_file("/etc/octobrix.toml") == before
    assert plugins_of(farm) == {
        "alpha": [(PLUGIN_DIST, "0.1.0", "config")], "beta": [(PLUGIN_DIST, "0.1.0", "plugin-manager")]
    }, "--check installed nothing"  # fmt: skip

    # No wheels folder: one line and a hint, and what each printer runs still shown.
    away = farm.path("/srv/wheels-away")
    farm.path(WHEELS).rename(away)
    try:
        done = farm.run(["octobrixctl", "upgrade", "--check"], check=False, timeout=300)
    finally:
        away.rename(farm.path(WHEELS))
    assert done.returncode == 1, done
    assert done.stdout.startswith(f"alpha: runs OctoPrint {OLD} (octoprint=={OLD}); newer releases unknown"), done
    assert done.stderr.splitlines() == [
        f"octobrixctl: cannot read the wheels folder {WHEELS}: No such file or directory",
        "hint: check [octobrix] wheels in /etc/octobrix.toml",
    ], done.stderr


def plugins_of(box: Container) -> dict[str, list[tuple[str, str, str]]]:
    """Each printer's plugins as `status --json` lists them: (name, version, source)."""
    status = json.loads(box.run(["octobrixctl", "status", "--json"], check=True).stdout)
    return {r["name"]: [(p["name"], p["version"], p["source"]) for p in r["plugins"]] for r in status["printers"]}


def ctl_json(box: Container, *args: str) -> tuple[int, str]:
    """stdout alone: --json prints nothing else there."""
    done = box.run(["octobrixctl", *args], check=False, timeout=600)
    return done.returncode, done.stdout


def test_the_idle_printer_moves_at_once_and_the_printing_one_after_its_print(farm: Container) -> None:
    octoprint(farm, "alpha", "/api/settings", {"appearance": {"color": COLOR}})
    octoprint(farm, "alpha", "/api/access/users", {"name": SECOND_USER, "password": "lab-maker-1", "active": True})
    upload_gcode(farm, PORTS["alpha"], "alpha", "kept.gcode", "G28\n", print_it=False)
    gcode = "G28\nG90\n" + "".join(f"G1 X{i % 200} Y{(i * 7) % 200} F3000\n" for i in range(MOVES)) + LAST_LINE + "\n"
    upload_gcode(farm, PORTS["beta"], "beta", "long.gcode", gcode, print_it=True)
    wait_until(
        "beta to be printing",
        lambda: octoprint(farm, "beta", "/api/job"),
        timeout=60,
        every=1,
        until=lambda job: job["state"] == "Printing",
    )

    started = time.monotonic()
    rc, out = ctl(farm, "upgrade", "alpha", "beta")
    took = time.monotonic() - started
    assert rc == 0, out
    lines = out.splitlines()
    alpha_done = next(i for i, line in enumerate(lines) if line.startswith(f"alpha: OctoPrint {OLD} -> {NEW}, healthy"))
    beta_waits = next(i for i, line in enumerate(lines) if line.startswith("beta is printing: waiting"))
    beta_done = next(i for i, line in enumerate(lines) if line.startswith(f"beta: OctoPrint {OLD} -> {NEW}, healthy"))
    assert alpha_done < beta_waits < beta_done, out
    # /run is the container's own tmpfs: read it from inside.
    received = farm.run(["cat", simulator_log("beta")]).stdout
    assert LAST_LINE in received, "beta's print ran to its end before beta moved"
    print(f"upgrade of alpha and beta (beta after a {MOVES * MOVE_SECONDS:.0f} s print): {took:.0f} s\n{out}")

    for name, port in PORTS.items():
        wait_operational(farm, name, port)
        assert version(farm, name) == NEW
        assert pin(farm, name).startswith(f"octoprint=={NEW}")
    assert pin(farm, "alpha") == f"octoprint=={NEW}   # pinned on purpose", "the pin's own comment stays"
    assert_users_data_kept(farm)
    # Plugins come along in the version they had: alpha's from the config, beta's Plugin Manager one.
    assert plugins_of(farm) == {
        "alpha": [(PLUGIN_DIST, "0.1.0", "config")], "beta": [(PLUGIN_DIST, "0.1.0", "plugin-manager")]
    }  # fmt: skip
    rc, again = ctl(farm, "apply")
    assert rc == 0 and "Nothing to do" in again, again


def test_rollback_needs_no_network_and_takes_seconds(farm: Container) -> None:
    away = farm.path("/srv/wheels-away")
    farm.path(WHEELS).rename(away)
    farm.path(WHEELS).mkdir()  # nothing to install from: any build would fail
    try:
        started = time.monotonic()
        rc, out = ctl(farm, "rollback", "alpha", "--no-wait")
        took = time.monotonic() - started
    finally:
        farm.path(WHEELS).rmdir()
        away.rename(farm.path(WHEELS))
    assert rc == 0, out
    assert f"alpha: back on OctoPrint {OLD} (octoprint=={OLD})" in out, out
    assert took <= 10.0, f"rollback took {took:.1f} s"
    wait_operational(farm, "alpha", PORTS["alpha"])
    operational = time.monotonic() - started
    print(f"rollback of alpha: {took:.1f} s until the old OctoPrint started, Operational after {operational:.0f} s")
    assert version(farm, "alpha") == OLD
    assert pin(farm, "alpha") == f"octoprint=={OLD}   # pinned on purpose"
    assert_users_data_kept(farm)
    rc, again = ctl(farm, "rollback", "alpha")
    assert rc == 1 and "alpha has nothing to roll back to" in again and "hint:" in again, again


def broken_octoprint(source: Path, dest: Path) -> Path:
    """OctoPrint NEW's wheel repacked as BROKEN: it installs and imports, but its server module raises."""
    target = dest / f"octoprint-{BROKEN}-py3-none-any.whl"
    old_info, new_info = f"octoprint-{NEW}.dist-info", f"octoprint-{BROKEN}.dist-info"
    rows = []
    with zipfile.ZipFile(source) as wheel, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as out:
        for item in wheel.infolist():
            if item.filename == f"{old_info}/RECORD":
                continue
            data = wheel.read(item)
            name = item.filename.replace(old_info, new_info)
            if name == f"{new_info}/METADATA":
                data = data.replace(f"\nVersion: {NEW}\n".encode(), f"\nVersion: {BROKEN}\n".encode())
            if name == "octoprint/server/__init__.py":
                data = b'raise RuntimeError("lab: this OctoPrint cannot start")\n' + data
            out.writestr(name, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            rows.append(f"{name},sha256={digest},{len(data)}")
        out.writestr(f"{new_info}/RECORD", "\n".join([*rows, f"{new_info}/RECORD,,"]) + "\n")
    return target


def test_an_octoprint_that_does_not_install_changes_nothing(farm: Container) -> None:
    wait_operational(farm, "alpha", PORTS["alpha"])
    alpha_pid = octoprint_pid(farm, "alpha")
    rc, out = ctl(farm, "upgrade", "alpha", "--to", "octoprint==1.11.98")  # not in the wheels folder
    assert rc == 1, out
    assert "upgrade of alpha to octoprint==1.11.98 failed: could not install" in out, out
    assert f"it stays on OctoPrint {OLD}" in out and "hint:" in out, out
    assert octoprint_pid(farm, "alpha") == alpha_pid, "its OctoPrint was not even restarted"
    assert pin(farm, "alpha") == f"octoprint=={OLD}   # pinned on purpose"
    rc, again = ctl(farm, "apply")
    assert rc == 0 and "Nothing to do" in again, again


def test_an_octoprint_that_cannot_start_is_put_back_by_itself(farm: Container) -> None:
    wait_operational(farm, "alpha", PORTS["alpha"])
    beta_pid = octoprint_pid(farm, "beta")
    broken_octoprint(next(wheelhouse().glob(f"octoprint-{NEW}-*.whl")), farm.path(WHEELS))
    rc, out = ctl(farm, "upgrade", "alpha", "beta", "--to", f"octoprint=={BROKEN}")
    assert rc == 1, out
    print(out)
    assert f"upgrade of alpha to octoprint=={BROKEN} failed: its OctoPrint did not start" in out, out
    assert f"alpha is back on OctoPrint {OLD}" in out and f"pin octoprint=={OLD} restored" in out, out
    assert "RuntimeError: lab: this OctoPrint cannot start" in out, "the log lines name the failure"
    assert "stopped after alpha failed: not upgraded: beta" in out, out
    wait_operational(farm, "alpha", PORTS["alpha"])
    assert version(farm, "alpha") == OLD
    assert pin(farm, "alpha") == f"octoprint=={OLD}   # pinned on purpose"
    assert_users_data_kept(farm)
    assert version(farm, "beta") == NEW
    assert octoprint_pid(farm, "beta") == beta_pid
    rc, again = ctl(farm, "apply")
    assert rc == 0 and "Nothing to do" in again, again
