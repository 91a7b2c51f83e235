"""Plugins are the user's data, and the OctoPrint installed is part of the desired state: for real,
with octobrix installed by its own installer into a systemd container and OctoPrint's own Plugin
Manager installing a plugin.

The plugin is a tiny real one (a SettingsPlugin with one setting) built here as a wheel and handed
to the Plugin Manager over a loopback URL: OctoPrint's pip in the container does not trust this
lab network's TLS CA, so nothing is fetched from the internet through it. The Plugin Manager
downloads it to a temporary folder it deletes afterwards, as it does with any URL, so octobrix must
carry the installed copy itself.

One module, one container: the tests run in order and build on each other. The last one (issue #29)
installs a hostile plugin into demo the same way and runs root's commands around its traps, with a
second printer, beta, as what it tries to reach.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.lab.harness import hostile, installs
from tests.lab.harness.container import Container
from tests.lab.harness.farm import pty_farm
from tests.lab.harness.plugin_wheel import plugin_wheel
from tests.lab.harness.waiting import wait_until

pytestmark = pytest.mark.lab

PORT = 5100  # the demo printer's OctoPrint
DEMO_LOGS = "/var/lib/octobrix/demo/basedir/logs"
BETA_PORT = 5101  # a second printer, which a hostile plugin in demo tries to reach (issue #29)
WHEEL_PORT = 5105  # this test's loopback server, which hands the Plugin Manager the plugin
PINNED = "octoprint==1.11.7"
OTHER = "1.11.8"  # what "OctoPrint's updater" puts in behind octobrix's back
# demo last: the tests append its own pin to the config.
CONFIG = f"""\
[printers.beta]
virtual = true
port = {BETA_PORT}

[printers.demo]
virtual = true
port = {PORT}
"""
PLUGIN_KEY = "labplug"
PLUGIN_DIST = "OctoPrint-Labplug"
WHEEL_NAME = "OctoPrint_Labplug-0.1.0-py3-none-any.whl"
SETTING = "carried across"
PLUGIN_SOURCE = """\
import octoprint.plugin


class LabPlug(octoprint.plugin.SettingsPlugin):
    def get_settings_defaults(self):
        return {{"greeting": "hello"}}


__plugin_name__ = "Lab Plug"
__plugin_version__ = "{version}"
__plugin_pythoncompat__ = ">=3,<4"
__plugin_implementation__ = LabPlug()
"""


def build_plugin_wheel(folder: Path, version: str = "0.1.0", requires: tuple[str, ...] = ()) -> Path:
    """The lab plugin; other versions, and what they depend on, for tests of plugin updates (test_upgrades.py)."""
    source = PLUGIN_SOURCE.format(version=version)
    return plugin_wheel(
        folder,
        dist=PLUGIN_DIST,
        key=PLUGIN_KEY,
        version=version,
        sources={"__init__.py": source},
        summary="lab plugin",
        requires=requires,
    )


@contextlib.contextmanager
def serving(folder: Path, port: int) -> Iterator[str]:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def farm(lab_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    workdir = Path(tmp_path_factory.mktemp("plugins", numbered=True))
    with pty_farm(workdir, CONFIG, {}, ports=(PORT, BETA_PORT, WHEEL_PORT)) as box:
        yield box


api = installs.OctoPrints({"demo": PORT, "beta": BETA_PORT}).api
ctl = installs.ctl


def wait_up(box: Container) -> None:
    installs.wait_operational(box, "demo", PORT)


def lab_plugin(box: Container) -> dict[str, Any] | None:
    plugins = api(box, "demo", "/plugin/pluginmanager/plugins")["plugins"]
    return next((p for p in plugins if p["key"] == PLUGIN_KEY), None)


def greeting(box: Container) -> Any:
    return api(box, "demo", "/api/settings")["plugins"].get(PLUGIN_KEY, {}).get("greeting")


def server_version(box: Container) -> str:
    return str(api(box, "demo", "/api/version")["server"])


def status_row(box: Container) -> dict[str, Any]:
    body = json.loads(box.run(["octobrixctl", "status", "--json"], check=True).stdout)
    return dict(next(p for p in body["printers"] if p["name"] == "demo"))


def restart_and_wait(box: Container) -> None:
    box.systemctl("restart", "octoprint@demo.service")
    wait_up(box)


def test_a_plugin_manager_plugin_and_its_setting_survive_a_changed_pin(farm: Container, tmp_path: Path) -> None:
    wait_up(farm)
    build_plugin_wheel(tmp_path)
    with serving(tmp_path, WHEEL_PORT) as base:
        answer = api(farm, "demo", "/api/plugin/pluginmanager", {"command": "install", "url": f"{base}/{WHEEL_NAME}"})
        assert answer == {"in_progress": True}
        # OctoPrint finds a newly pip-installed plugin only after a restart ("Please restart OctoPrint"):
        # octobrix sees it in the venv as soon as pip is done.
        wait_until(
            "octobrix to list the Plugin Manager's install of the lab plugin",
            lambda: any(p["name"] == PLUGIN_DIST for p in status_row(farm)["plugins"]),
            timeout=180,
            detail=lambda: farm.run(["tail", "-n", "30", f"{DEMO_LOGS}/plugin_pluginmanager_console.log"]).stdout,
        )
    restart_and_wait(farm)  # what the Plugin Manager asks for after an install
    plugin = lab_plugin(farm)
    assert plugin is not None and plugin["enabled"], plugin
    api(farm, "demo", "/api/settings", {"plugins": {PLUGIN_KEY: {"greeting": SETTING}}})
    assert greeting(farm) == SETTING
    row = status_row(farm)
    assert {"name": PLUGIN_DIST, "version": "0.1.0", "source": "plugin-manager"} in row["plugins"]

    farm.write_file("/etc/octobrix.toml", CONFIG + f'octoprint = "{PINNED}"\n')
    rc, out = ctl(farm, "apply")  # octobrixd may have started on the edit already: then this waits for it
    assert rc == 0, out
    assert "could not carry" not in out, out
    wait_up(farm)
    assert server_version(farm) == "1.11.7"
    plugin = lab_plugin(farm)
    assert plugin is not None and plugin["enabled"] and plugin["version"] == "0.1.0", plugin
    assert greeting(farm) == SETTING, "the plugin is loaded again, with the user's setting"
    carried = json.loads(farm.read_file("/var/lib/octobrix/demo/carried-plugins.json"))
    assert [(c["name"], c["source"]) for c in carried["carried"]] == [(PLUGIN_DIST, "installed copy")]
    assert carried["octoprint"] == "1.11.7" and carried["not_carried"] == []


def pip_as_instance(box: Container, *args: str) -> tuple[int, str]:
    uid = box.run(["id", "-u", "octobrix-demo"]).stdout.strip()
    gid = box.run(["id", "-g", "octobrix-demo"]).stdout.strip()
    done = box.run(
        ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
         "/var/lib/octobrix/demo/venv/bin/python", "-m", "pip", "--disable-pip-version-check", *args],
        # What OctoPrint's updater does, as the instance's user; the lab's CA for pip's own downloads.
        env={"HOME": "/var/lib/octobrix/demo/home", "PIP_CERT": "/etc/ssl/certs/ca-certificates.crt"},
        check=False,
        timeout=600,
    )  # fmt: skip
    return done.returncode, done.stdout + done.stderr


def test_another_octoprint_behind_octobrixs_back_is_named_and_put_back(farm: Container) -> None:
    wait_up(farm)
    rc, out = pip_as_instance(farm, "install", "--quiet", f"octoprint=={OTHER}")
    assert rc == 0, out

    row = status_row(farm)
    assert row["octoprint_version"] == OTHER and row["octoprint_requirement"] == PINNED
    assert f"OctoPrint {OTHER} is installed, the config asks for {PINNED}" in row["drift"]
    rc, table = ctl(farm, "status")
    assert rc == 0 and f"demo: OctoPrint {OTHER} is installed" in table and "sudo octobrixctl apply" in table, table
    rc, doctor = ctl(farm, "doctor")
    assert rc == 1, doctor
    line = next(text for text in doctor.splitlines() if "octoprint demo" in text)
    assert line.startswith("[FAIL]") and OTHER in line, doctor
    assert "fix: sudo octobrixctl apply" in doctor
    rc, dry = ctl(farm, "apply", "--dry-run")
    assert rc == 0 and "Nothing to do" not in dry, dry
    assert f"build the Python environment of demo: {PINNED} (OctoPrint {OTHER} is installed" in dry, dry
    assert f"{PLUGIN_DIST} 0.1.0" in dry and "systemctl try-restart octoprint@demo.service" in dry, dry

    rc, out = ctl(farm, "apply")
    assert rc == 0 and "restarted octoprint@demo.service" in out, out
    wait_up(farm)
    assert server_version(farm) == "1.11.7", "the pinned OctoPrint runs again"
    plugin = lab_plugin(farm)
    assert plugin is not None and plugin["enabled"], plugin
    assert greeting(farm) == SETTING
    row = status_row(farm)
    assert row["drift"] is None and row["octoprint_version"] == "1.11.7"
    rc, out = ctl(farm, "apply", "--dry-run")
    assert "Nothing to do" in out, out
    rc, doctor = ctl(farm, "doctor")
    assert f"[ ok ] octoprint demo: OctoPrint 1.11.7 as the config asks; plugins: {PLUGIN_DIST} 0.1.0" in doctor


DEMO_STATE = "/var/lib/octobrix/demo"
BETA_BASEDIR = "/var/lib/octobrix/beta/basedir"
BUNDLE = "/root/lab-farm.tar"
EXPORTED = "/root/lab-export.json"


def planted(box: Container) -> dict[str, Any]:
    return dict(json.loads(box.read_file(f"{DEMO_STATE}/basedir/{hostile.REPORT}")))


def beta_connection(box: Container) -> Any:
    return api(box, "beta", "/api/connection")["current"]["state"]


def tail(text: str, lines: int = 6) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])


def judge(label: str, rc: int, out: str, err: str, *, seconds: float, ok: tuple[int, ...] = (0,)) -> str | None:
    """None when the command did its work, or refused with one clear line naming a path of demo's;
    else what a user would have seen."""
    if rc in (124, 137):
        return f"{label}: hung, stopped after {seconds:.0f} s: {tail(out + err)}"
    if "Traceback" in out + err:
        return f"{label}: a traceback: {tail(out + err, 12)}"
    if rc in ok:
        return None
    errors = [line for line in err.splitlines() if line.startswith("octobrixctl:")]
    if len(errors) == 1 and DEMO_STATE in errors[0]:
        return None
    return f"{label}: exit {rc}, not one clear line naming the path: {tail(out + err)}"


def test_a_hostile_plugin_never_gets_root_nor_reaches_past_its_own_folder(farm: Container, tmp_path: Path) -> None:
    """Issue #29: root never executes, imports or follows links in anything a printer's user can write."""
    started = time.monotonic()
    wait_up(farm)
    installs.wait_operational(farm, "beta", BETA_PORT)
    secret = f"octobrix-lab-secret-{secrets.token_hex(16)}"
    hostile.plant_secret(farm, secret)
    beta_before = hostile.tree_state(farm, BETA_BASEDIR)
    assert beta_connection(farm) == "Operational"

    # A backup made before the plugin came, to restore while its traps are there.
    rc, out = ctl(farm, "backup", "demo")
    assert rc == 0, out
    clean_zip = farm.run(["sh", "-c", "ls -t /var/backups/octobrix/demo/*.zip"], check=True).stdout.split()[0]

    hostile.build_wheel(tmp_path)
    with serving(tmp_path, WHEEL_PORT) as base:
        install = {"command": "install", "url": f"{base}/{hostile.WHEEL_NAME}"}
        answer = api(farm, "demo", "/api/plugin/pluginmanager", install)
        assert answer == {"in_progress": True}
        wait_until(
            "the Plugin Manager to install the hostile plugin",
            lambda: any(p["name"] == hostile.PLUGIN_DIST for p in status_row(farm)["plugins"]),
            timeout=180,
        )
    restart_and_wait(farm)  # it plants when OctoPrint loads it
    farm.wait_for_path(f"{DEMO_STATE}/basedir/{hostile.REPORT}", timeout=60)
    first = planted(farm)
    # The traps are really there: the test cannot pass because the plugin did nothing.
    assert first["uid"] != 0, first
    assert any(".pth" in " ".join(done) and "refused" not in " ".join(done) for done in first["sites"].values()), first
    for name in ("uploads", "data", "logs"):
        assert first["links"][f"{DEMO_STATE}/basedir/{name}"] == "planted", first
    assert "planted" in first["fifos"].values(), first
    print(f"hostile plugin installed and planted after {time.monotonic() - started:.0f} s: {first}")

    problems: list[str] = []
    venv_swap = first["links"][f"{DEMO_STATE}/venv"]
    if not venv_swap.startswith("refused"):
        problems.append(f"demo's user could put a link of its own in place of {DEMO_STATE}/venv: {venv_swap}")
    timings: list[str] = []

    def timed(label: str, argv: list[str], limit: float) -> tuple[subprocess.CompletedProcess[str], float]:
        begun = time.monotonic()
        # SIGINT first: octobrixctl then ends every process it started (a pip stuck on a FIFO, say).
        done = farm.run(["timeout", "-s", "INT", "-k", "10", str(limit), *argv], check=False, timeout=limit + 60)
        seconds = time.monotonic() - begun
        timings.append(f"{label} {seconds:.0f}s rc={done.returncode}")
        return done, seconds

    def root(label: str, argv: list[str], limit: float = 90, ok: tuple[int, ...] = (0,)) -> None:
        done, seconds = timed(label, argv, limit)
        problem = judge(label, done.returncode, done.stdout, done.stderr, seconds=seconds, ok=ok)
        if problem:
            problems.append(problem)

    def unit(label: str, argv: list[str], name: str, limit: float = 300) -> None:
        cursor = farm.run(["journalctl", "--show-cursor", "-n", "0", "-q"], check=False).stdout.split()[-1]
        done, seconds = timed(label, ["systemctl", *argv], limit)
        log = farm.run(["journalctl", "-q", "-o", "cat", "-u", name, f"--after-cursor={cursor}"], check=False).stdout
        if done.returncode in (124, 137):
            problems.append(f"{label}: hung, stopped after {seconds:.0f} s: {tail(log, 12)}")
        elif "Traceback" in log or (done.returncode != 0 and DEMO_STATE not in log):
            problems.append(f"{label}: rc {done.returncode}, its journal: {tail(log, 12)}")

    root("status", ["octobrixctl", "status"])
    root("status --json", ["octobrixctl", "status", "--json"])
    root("doctor", ["octobrixctl", "doctor"], ok=(0, 1))
    root("apply", ["octobrixctl", "apply"], limit=300)
    root("upgrade --check", ["octobrixctl", "upgrade", "--check"], limit=180)
    unit("the backup timer's service", ["start", "octobrix-backup.service"], "octobrix-backup.service", limit=600)
    root("restore", ["octobrixctl", "restore", "demo", clean_zip], limit=600)
    root("backup --bundle", ["octobrixctl", "backup", "--bundle", BUNDLE], limit=600)
    root("export", ["octobrixctl", "export", "fdm-monster", "demo", "--output", EXPORTED])
    root("upgrade", ["octobrixctl", "upgrade", "demo", "--to", f"octoprint=={OTHER}"], limit=600)
    root("rollback", ["octobrixctl", "rollback", "demo"], limit=420)
    unit("octobrixd's reconcile", ["reload", "octobrixd.service"], "octobrixd.service", limit=60)
    root("apply after octobrixd's reconcile", ["octobrixctl", "apply"], limit=300)
    if farm.is_active("octobrixd.service") != "active":
        problems.append(f"octobrixd is {farm.is_active('octobrixd.service')}: {tail(farm.journal('octobrixd'), 12)}")

    marker = farm.path(hostile.MARKER)
    if marker.exists():
        problems.append(f"root ran the printer's code: {marker.read_text()!r}")
    if farm.read_file(hostile.ROOT_ONLY_FILE) != secret + "\n":
        problems.append(f"root wrote through a link into {hostile.ROOT_ONLY_FILE}")
    leaked = hostile.files_holding(farm, secret, ["/var/lib/octobrix", "/var/backups/octobrix", BUNDLE, EXPORTED])
    if leaked:
        problems.append(f"the root-only file's content is in {leaked}")
    beta_after = hostile.tree_state(farm, BETA_BASEDIR)
    changed = sorted(k for k in beta_before.keys() | beta_after.keys() if beta_before.get(k) != beta_after.get(k))
    if changed:
        problems.append(f"beta's basedir changed: {[(k, beta_before.get(k), beta_after.get(k)) for k in changed]}")
    try:
        state = beta_connection(farm)
    except OSError as error:
        state = str(error)
    if state != "Operational":
        problems.append(f"beta is {state!r}, not Operational")
    last = planted(farm)
    if not str(last["links"].get(f"{DEMO_STATE}/venv", "refused")).startswith("refused"):
        problems.append(f"demo's user put a link in place of its venv again: {last['links']}")
    print(f"commands: {'; '.join(timings)}; whole test {time.monotonic() - started:.0f} s")
    assert not problems, "\n".join(problems)
