"""The Debian package from packaging/build-deb.sh, installed with apt into a bare Debian 12 server
(build.newcomer_rootfs: minbase and systemd, no procps, nothing octobrix needs): the same working
demo as the install script gives, a printer added by editing the config, back after a reboot,
the user's config never overwritten, and removal that keeps the printers' data unless purged.

One container for the module; the tests run in this order.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.lab.harness import build
from tests.lab.harness.container import Container, booted
from tests.lab.harness.installs import (
    DEMO_UNITS,
    Timed,
    add_printer_by_editing_the_config,
    apt_get,
    built_deb,
    get,
    holding_printer_ports,
    install_deb,
    pending_wizards,
    reboot_brings_everything_back,
    status_line,
    trust_host_certificates,
    unit_identity,
    wait_operational,
)
from tests.lab.harness.project import REPO, checkout_files

pytestmark = pytest.mark.lab


@dataclass
class Packaged:
    box: Container
    deb: Path
    first: Timed


@pytest.fixture(scope="module")
def packaged(lab_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Packaged]:
    deb = built_deb()
    workdir = Path(tmp_path_factory.mktemp("deb", numbered=True))
    with holding_printer_ports(), booted(workdir / "ct", boot_timeout=120, base=build.newcomer_rootfs) as box:
        trust_host_certificates(box)
        first = install_deb(box, deb)
        print(f"\napt install ./{deb.name} on a fresh container (caches cold): {first.seconds:.1f} s")
        yield Packaged(box, deb, first)


def installed(packaged: Packaged) -> Container:
    if packaged.first.result.returncode != 0:
        pytest.fail(f"apt install failed, see test_deb_gives_the_same_working_demo:\n{packaged.first.output}")
    return packaged.box


def test_package_ships_no_file_under_etc(packaged: Packaged) -> None:
    # The user's config is written by postinst only when absent, so dpkg never asks about it or
    # replaces it; nothing else of the user's lives in the package either.
    listing = subprocess.run(["dpkg-deb", "--contents", str(packaged.deb)], capture_output=True, text=True, check=True)
    paths = [line.split()[5] for line in listing.stdout.splitlines()]
    assert [p for p in paths if p.startswith("./etc")] == []
    control = subprocess.run(["dpkg-deb", "--info", str(packaged.deb)], capture_output=True, text=True, check=True)
    assert "conffiles" not in control.stdout


def test_package_ships_the_readme_with_the_reference_it_links_to(packaged: Packaged) -> None:
    listing = subprocess.run(["dpkg-deb", "--contents", str(packaged.deb)], capture_output=True, text=True, check=True)
    shipped = {line.split()[5] for line in listing.stdout.splitlines()}
    doc = "./usr/share/doc/octobrix/"
    assert doc + "README.md" in shipped
    expected = {f"{doc}docs/{page.name}" for page in (REPO / "docs").glob("*.md")}
    assert expected and expected <= shipped, sorted(expected - shipped)


def test_deb_gives_the_same_working_demo(packaged: Packaged) -> None:
    first = packaged.first
    assert first.result.returncode == 0, first.output
    rows = [line for line in first.result.stdout.splitlines() if line.startswith("demo ")]
    assert rows and "Operational" in rows[-1] and ":15000/" in rows[-1], first.output

    box = packaged.box
    assert "Operational" in status_line(box)
    assert get(5000, "/online.txt") == (200, "online\n")
    assert pending_wizards(box) == [], "OctoPrint would greet the user with its setup wizard"
    for unit in DEMO_UNITS:
        assert box.is_active(unit) == "active", box.journal(unit, 60)
    fragment = box.systemctl("show", "-p", "FragmentPath", "--value", "octoprint@demo.service").stdout.strip()
    # Debian 12 names /usr/lib/systemd/system by its older path /lib/systemd/system (the same folder).
    assert fragment.removeprefix("/usr") == "/lib/systemd/system/octoprint@.service"
    assert box.run(["sh", "-c", "command -v octobrixctl"]).stdout.strip() == "/usr/bin/octobrixctl"


def test_deb_a_printer_added_to_the_config_starts_by_itself(packaged: Packaged) -> None:
    add_printer_by_editing_the_config(installed(packaged))


def test_deb_reboot_brings_everything_back(packaged: Packaged) -> None:
    reboot_brings_everything_back(installed(packaged))


def test_deb_reinstall_keeps_the_users_config_and_restarts_nothing(packaged: Packaged) -> None:
    box = installed(packaged)
    wait_operational(box)
    edited = box.read_file("/etc/octobrix.toml").replace(
        "[printers.demo]", "# my demo printer, my words\n[printers.demo]"
    )
    box.write_file("/etc/octobrix.toml", edited)
    # octobrixd follows the edit (nothing to change for a comment); then the same package again.
    box.wait_active("octobrixd.service")
    units = unit_identity(box, ["octoprint@demo.service"])

    again = install_deb(box, packaged.deb, "--reinstall")
    assert again.result.returncode == 0, again.output
    assert box.read_file("/etc/octobrix.toml") == edited
    assert unit_identity(box, ["octoprint@demo.service"]) == units
    assert "Operational" in status_line(box)


def test_install_sh_refuses_next_to_the_deb(packaged: Packaged) -> None:
    box = installed(packaged)
    for rel in checkout_files():
        box.copy_in(REPO / rel, f"/root/octobrix/{rel}")
    refused = box.run(["/root/octobrix/packaging/install.sh"], check=False)
    assert refused.returncode != 0
    assert "apt install" in refused.stderr and "apt remove octobrix" in refused.stderr, refused.stderr
    assert not box.path("/usr/local/lib/systemd/system/octobrixd.service").exists()
    uninstall = box.run(["/root/octobrix/packaging/install.sh", "--uninstall"], check=False)
    assert uninstall.returncode != 0 and "apt remove octobrix" in uninstall.stderr
    assert box.is_active("octobrixd.service") == "active"


def test_remove_keeps_the_data_and_purge_removes_it(packaged: Packaged) -> None:
    box = installed(packaged)
    config = box.read_file("/etc/octobrix.toml")
    apt_get(box, "remove", "octobrix")
    for unit in DEMO_UNITS:
        shown = set(box.systemctl("show", "-p", "LoadState", "-p", "ActiveState", unit).stdout.split())
        assert shown == {"LoadState=not-found", "ActiveState=inactive"}, (unit, shown)
    assert box.run(["find", "/etc/systemd/system", "-lname", "*octo*"]).stdout == ""
    for path in ("/etc/udev/rules.d/99-octobrix.rules", "/etc/sysusers.d/octobrix.conf", "/opt/octobrix"):
        assert not box.path(path).exists(), f"{path} is still there"
    assert box.read_file("/etc/octobrix.toml") == config
    assert box.path("/var/lib/octobrix/demo/basedir/config.yaml").exists()

    apt_get(box, "purge", "octobrix")
    assert not box.path("/etc/octobrix.toml").exists()
    assert not box.path("/var/lib/octobrix").exists()
    assert "octobrix-demo" not in box.read_file("/etc/passwd")
