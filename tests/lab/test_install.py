"""The README's install command on a bare Debian 12 server (build.newcomer_rootfs: minbase and
systemd, no procps, nothing octobrix needs), typed by its owner.

One container for the module, as one farm computer over time, so the tests run in this order:
the first install (package caches cold), a printer added by editing the config, a reboot, the
same install again, the install after an update of the checkout, uninstall and install again,
and the Debian package taking over from the script. The container starts as a fresh server
does: a user who may sudo and a checkout of octobrix in their home; no printer attached.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.lab.harness import build
from tests.lab.harness.container import Container, booted
from tests.lab.harness.installs import (
    CHECKOUT,
    DEMO_UNITS,
    USER,
    Timed,
    add_printer_by_editing_the_config,
    api,
    as_user,
    built_deb,
    file_states,
    get,
    holding_printer_ports,
    install_deb,
    pending_wizards,
    prepare_newcomer,
    readme_commands,
    reboot_brings_everything_back,
    run_readme_install,
    status_line,
    unit_identity,
    wait_operational,
)
from tests.lab.harness.project import REPO

pytestmark = pytest.mark.lab

COLD_INSTALL_TARGET_SECONDS = 180.0
SHIPPED_UNITS = sorted(p.name for p in (REPO / "systemd").iterdir() if p.suffix in (".service", ".path"))
WATCHED = ("/etc", "/usr/local", "/usr/lib/systemd/system", "/opt/octobrix", "/var/lib/octobrix")
# What OctoPrint writes itself while it runs (logs, its own settings, caches, the bytecode Python
# leaves in an instance's venv as OctoPrint imports): not the installer's doing.
OCTOPRINT_OWN = re.compile(r"^/var/lib/octobrix/[^/]+/(basedir|venvs)/")
INSTALLED_BY_SCRIPT = (
    "/opt/octobrix",
    "/usr/local/bin/octobrixctl",
    "/usr/local/bin/octobrixd",
    "/usr/local/lib/tmpfiles.d/octobrix.conf",
    "/usr/local/lib/modules-load.d/octobrix.conf",
)
INSTALL_LOG = "/var/log/octobrix-install.log"
GENERATED = (
    "/etc/udev/rules.d/99-octobrix.rules",
    "/etc/sysusers.d/octobrix.conf",
    "/etc/systemd/system/octoprint@demo.service.d",
)


@dataclass
class Farm:
    box: Container
    first: Timed


@pytest.fixture(scope="module")
def farm(lab_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    workdir = Path(tmp_path_factory.mktemp("install", numbered=True))
    with holding_printer_ports(), booted(workdir / "ct", boot_timeout=120, base=build.newcomer_rootfs) as box:
        prepare_newcomer(box)
        first = run_readme_install(box)
        print(f"\nREADME install command on a fresh container (caches cold): {first.seconds:.1f} s")
        yield Farm(box, first)


def installed(farm: Farm) -> Container:
    if farm.first.result.returncode != 0:
        pytest.fail(
            f"the first install failed, see test_readme_install_command_gives_a_working_demo:\n{farm.first.output}"
        )
    return farm.box


def test_readme_starts_with_the_install_command_then_the_tests() -> None:
    commands = readme_commands()
    assert commands[0] == "sudo packaging/install.sh"
    assert commands[1] == "sudo tests/run"


def test_readme_install_command_gives_a_working_demo(farm: Farm) -> None:
    first = farm.first
    assert first.result.returncode == 0, first.output
    # It ends with the status table: the demo printer, ready, and where to open it.
    rows = [line for line in first.result.stdout.splitlines() if line.startswith("demo ")]
    assert rows, first.output
    assert "Operational" in rows[-1] and re.search(r"http://\S+:15000/", rows[-1]), first.output
    assert "octobrixctl credentials" in first.result.stdout

    box = farm.box
    line = status_line(box)
    assert "active (running)" in line and "Operational" in line, line
    assert get(5000, "/online.txt") == (200, "online\n")
    assert pending_wizards(box) == [], "OctoPrint would greet the user with its setup wizard"
    # The user's checkout is as it was: nothing built in it, nothing in it owned by root.
    foreign = box.run(["find", CHECKOUT, "!", "-user", USER]).stdout
    assert foreign == "", f"install.sh left files in the checkout:\n{foreign}"
    assert first.seconds < COLD_INSTALL_TARGET_SECONDS, f"a fresh install took {first.seconds:.0f} s"


def test_install_shows_its_own_lines_and_logs_the_tools(farm: Farm) -> None:
    first = farm.first
    lines = first.result.stdout.splitlines()
    assert lines and lines[0].startswith("octobrix: "), first.output
    tools = [line for line in lines if re.match(r"(Get:|Hit:|Setting up |Unpacking |Selecting |Collecting |  )", line)]
    assert tools == [], f"apt's or pip's output on the terminal:\n{first.output}"
    # Before the status table, only octobrix's own lines (and the files apply writes).
    before = lines[: next((i for i, line in enumerate(lines) if line.startswith("PRINTER")), len(lines))]
    assert len(before) < 40, first.output
    box = farm.box
    log = box.path(INSTALL_LOG)
    assert log.stat().st_mode & 0o777 == 0o600 and log.stat().st_uid == 0
    text = log.read_text()
    assert "Setting up python3" in text and "Successfully installed" in text, text[-2000:]


def test_a_printer_added_to_the_config_starts_by_itself(farm: Farm) -> None:
    # On this bare server (no procps), as the README promises: save the file, nothing else.
    add_printer_by_editing_the_config(installed(farm))


def test_reboot_brings_everything_back(farm: Farm) -> None:
    box = installed(farm)
    reboot_brings_everything_back(box)
    failed = box.systemctl("--failed", "--plain", "--no-legend").stdout
    assert "octo" not in failed, failed


def test_install_again_changes_nothing(farm: Farm) -> None:
    box = installed(farm)
    wait_operational(box)
    files = file_states(box, WATCHED, OCTOPRINT_OWN)
    units = unit_identity(box, DEMO_UNITS)

    again = run_readme_install(box)
    print(f"\nREADME install command again on the same computer: {again.seconds:.1f} s")
    assert again.result.returncode == 0, again.output
    assert "Nothing to do" in again.result.stdout, again.output

    after = file_states(box, WATCHED, OCTOPRINT_OWN)
    changed = sorted(p for p in files.keys() | after.keys() if files.get(p) != after.get(p))
    assert changed == [], f"a second install changed files: {changed[:20]}"
    assert unit_identity(box, DEMO_UNITS) == units, "a second install restarted something"
    assert "Operational" in status_line(box)


def test_install_after_an_update_upgrades_octobrix_and_restarts_only_the_daemon(farm: Farm) -> None:
    box = installed(farm)
    wait_operational(box)
    # What a `git pull` with a change to octobrix does to the checkout.
    as_user(box, "echo 'UPGRADED = True' >> octobrixd/__init__.py")
    files = file_states(box, WATCHED, OCTOPRINT_OWN)
    units = unit_identity(box, DEMO_UNITS)

    upgrade = run_readme_install(box)
    assert upgrade.result.returncode == 0, upgrade.output
    new_code = box.run(["/opt/octobrix/bin/python", "-c", "import octobrixd; print(octobrixd.UPGRADED)"], check=False)
    assert new_code.stdout.strip() == "True", new_code.stderr
    after = unit_identity(box, DEMO_UNITS)
    assert after["octobrixd.service"] != units["octobrixd.service"], "octobrixd still runs the old code"
    assert after["octoprint@demo.service"] == units["octoprint@demo.service"], "the printer's OctoPrint was restarted"
    assert box.is_active("octobrixd.service") == "active"
    now = file_states(box, WATCHED, OCTOPRINT_OWN)
    changed = sorted(p for p in files.keys() | now.keys() if files.get(p) != now.get(p))
    assert any(p.startswith("/opt/octobrix/") for p in changed), "nothing was installed"
    outside = [p for p in changed if not p.startswith("/opt/octobrix/")]
    assert outside == [], f"the upgrade changed files besides octobrix itself: {outside[:20]}"
    assert "Operational" in status_line(box)


def test_a_failed_download_ends_with_one_line_naming_the_log(farm: Farm) -> None:
    box = installed(farm)
    wait_operational(box)
    units = unit_identity(box, DEMO_UNITS)
    # A `git pull` to install, while PyPI cannot be reached (nothing listens on port 9 here).
    as_user(box, "echo '# pulled' >> octobrixd/__init__.py")
    broken = as_user(box, "sudo env PIP_INDEX_URL=http://127.0.0.1:9/simple PIP_RETRIES=0 packaging/install.sh")
    assert broken.returncode != 0, broken.stdout
    last = broken.stderr.strip().splitlines()[-1]
    assert last.startswith("octobrix: ") and "failed" in last and INSTALL_LOG in last, broken.stderr
    assert "installing octobrix" in last, last
    assert "Traceback" not in broken.stdout, broken.stdout
    # The farm runs on as it was.
    assert unit_identity(box, DEMO_UNITS) == units
    assert "Operational" in status_line(box)

    missing = as_user(box, "sudo packaging/install.sh --wheels /nowhere")
    assert missing.returncode != 0
    assert missing.stderr.strip().splitlines() == [
        "octobrix: --wheels /nowhere: no such folder (hint: make it on a computer with internet, see --help)"
    ]


def test_uninstall_keeps_the_data_and_install_brings_the_same_printer_back(farm: Farm) -> None:
    box = installed(farm)
    wait_operational(box)
    api(box, 5000, "demo", "/api/settings", {"appearance": {"color": "red"}})
    config = box.read_file("/etc/octobrix.toml")
    secrets = box.read_file("/var/lib/octobrix/.secrets/demo.json")

    removed = as_user(box, "sudo packaging/install.sh --uninstall")
    assert removed.returncode == 0, removed.stderr

    # Units: gone from the disk and from systemd, nothing left running or enabled.
    assert [u for u in SHIPPED_UNITS if box.path(f"/usr/local/lib/systemd/system/{u}").exists()] == []
    for unit in DEMO_UNITS:
        shown = set(box.systemctl("show", "-p", "LoadState", "-p", "ActiveState", unit).stdout.split())
        assert shown == {"LoadState=not-found", "ActiveState=inactive"}, (unit, shown)
    links = box.run(["find", "/etc/systemd/system", "-lname", "*octo*"]).stdout
    assert links == "", links
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen("http://127.0.0.1:5000/online.txt", timeout=5)
    # Rules, generated files and the program: gone.
    for path in (*GENERATED, *INSTALLED_BY_SCRIPT):
        assert not box.path(path).exists(), f"{path} is still there"
    # The config and the printer's data: kept.
    assert box.read_file("/etc/octobrix.toml") == config
    assert box.read_file("/var/lib/octobrix/.secrets/demo.json") == secrets
    assert box.path("/var/lib/octobrix/demo/basedir/config.yaml").exists()

    back = run_readme_install(box)
    assert back.result.returncode == 0, back.output
    wait_operational(box)
    assert api(box, 5000, "demo", "/api/settings")["appearance"]["color"] == "red"
    assert box.read_file("/var/lib/octobrix/.secrets/demo.json") == secrets


def test_the_deb_takes_over_from_install_sh(farm: Farm) -> None:
    box = installed(farm)
    wait_operational(box)
    demo = unit_identity(box, ["octoprint@demo.service"])

    taken = install_deb(box, built_deb())
    assert taken.result.returncode == 0, taken.output

    leftovers = [u for u in SHIPPED_UNITS if box.path(f"/usr/local/lib/systemd/system/{u}").exists()]
    assert leftovers == [], "install.sh's units would hide the package's"
    assert [path for path in INSTALLED_BY_SCRIPT if box.path(path).exists()] == ["/opt/octobrix"]
    fragment = box.systemctl("show", "-p", "FragmentPath", "--value", "octobrixd.service").stdout.strip()
    # Debian 12 names /usr/lib/systemd/system by its older path /lib/systemd/system (the same folder).
    assert fragment.removeprefix("/usr") == "/lib/systemd/system/octobrixd.service"
    for unit in DEMO_UNITS:
        assert box.systemctl("is-enabled", unit, check=False).stdout.strip() == "enabled", unit
        assert box.is_active(unit) == "active", unit
    assert unit_identity(box, ["octoprint@demo.service"]) == demo, "the printer's OctoPrint was restarted"
    assert "Operational" in status_line(box)

    refused = run_readme_install(box)
    assert refused.result.returncode != 0
    assert "apt" in refused.result.stderr, refused.output
