"""Backups and restores for real: octobrix installed in a systemd container, two real OctoPrints.

`shop` is the printer whose data is backed up, thrown away and restored; `plain` stands in for a
plain OctoPrint, restored through OctoPrint's own Restore API from the same zip. Both are
virtual printers (no hardware needed to prove data comes back). Ports 5600-5601.
"""

from __future__ import annotations

import http.client
import json
import shutil
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.lab.harness import installs
from tests.lab.harness.container import Container, booted
from tests.lab.harness.farm import pty_farm
from tests.lab.harness.guest_probe import octoprint_pid
from tests.lab.harness.installed import farm_base, install_checkout
from tests.lab.harness.waiting import wait_until

pytestmark = pytest.mark.lab

PORTS = {"shop": 5600, "plain": 5601}
CONFIG = """\
[octobrix]
backup_schedule = "*-*-* 03:30"
backup_keep = 2

[printers.shop]
virtual = true
port = 5600

[printers.plain]
virtual = true
port = 5601
"""
UPLOAD = "cube.gcode"
UPLOAD_TEXT = "; a cube\nG28\nG1 X10 Y10 Z0.2 F3000\n" * 50
SECOND_USER = "maker2"
COLOUR = "red"


def key_of(box: Container, name: str) -> str:
    return str(json.loads(box.read_file(f"/var/lib/octobrix/.secrets/{name}.json"))["api_key"])


def call(port: int, key: str, path: str, body: dict[str, Any] | None = None, method: str | None = None) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"X-Api-Key": key, "Content-Type": "application/json"},
        method=method,
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        text = response.read()
    return json.loads(text) if text.strip() else None


def upload(port: int, key: str, path: str, *, filename: str, data: bytes, field: str = "file") -> Any:
    """A multipart POST, as a browser's upload form sends it."""
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=body,
        headers={"X-Api-Key": key, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=300) as response:
        text = response.read()
    return json.loads(text) if text.strip() else None


def what_the_user_made(port: int, key: str) -> tuple[list[str], list[str], str]:
    files = [entry["name"] for entry in call(port, key, "/api/files/local")["files"]]
    users = [user["name"] for user in call(port, key, "/api/access/users")["users"]]
    colour = call(port, key, "/api/settings")["appearance"]["color"]
    return files, users, colour


@pytest.fixture(scope="module")
def farm(lab_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    workdir = Path(tmp_path_factory.mktemp("backups", numbered=True))
    with pty_farm(workdir, CONFIG, {}, ports=PORTS.values()) as box:
        yield box


@pytest.fixture(scope="module")
def made(farm: Container) -> dict[str, Any]:
    """shop with an upload, a second user and a changed setting; then `octobrixctl backup shop`."""
    installs.wait_operational(farm, "shop", PORTS["shop"])
    key = key_of(farm, "shop")
    upload(PORTS["shop"], key, "/api/files/local", filename=UPLOAD, data=UPLOAD_TEXT.encode())
    call(PORTS["shop"], key, "/api/access/users",
         {"name": SECOND_USER, "password": "second-secret", "active": True, "admin": False})  # fmt: skip
    call(PORTS["shop"], key, "/api/settings", {"appearance": {"color": COLOUR}})
    before = what_the_user_made(PORTS["shop"], key)
    assert UPLOAD in before[0] and SECOND_USER in before[1] and before[2] == COLOUR, before
    result = farm.run(["octobrixctl", "backup", "shop", "--json"], check=False, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    body = json.loads(result.stdout)
    return {"zip": body["backups"][0]["file"], "key": key, "body": body}


def test_backup_is_octoprints_own_zip_in_a_root_only_folder(farm: Container, made: dict[str, Any]) -> None:
    zip_path = made["zip"]
    assert zip_path.startswith("/var/backups/octobrix/shop/shop-") and zip_path.endswith(".zip"), zip_path
    listing = farm.run(["python3", "-m", "zipfile", "-l", zip_path]).stdout
    for member in ("metadata.json", "basedir/config.yaml", "basedir/users.yaml", f"basedir/uploads/{UPLOAD}"):
        assert member in listing, listing
    modes = farm.run(["stat", "-c", "%U %a %n", "/var/backups/octobrix", "/var/backups/octobrix/shop", zip_path]).stdout
    assert modes.split("\n")[:3] == [
        "root 700 /var/backups/octobrix",
        "root 700 /var/backups/octobrix/shop",
        f"root 600 {zip_path}",
    ], modes
    side = json.loads(farm.read_file(zip_path.removesuffix(".zip") + ".octobrix.json"))
    assert side["printer"] == "shop" and side["octoprint"] == "1.11.8", side
    assert side["config"] == {"printers.shop": {"virtual": True, "port": 5600}}, side


def test_backup_of_an_unknown_printer_or_to_an_unwritable_folder_says_what_to_do(farm: Container) -> None:
    unknown = farm.run(["octobrixctl", "backup", "nosuch"], check=False)
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("octobrixctl: no printer named nosuch in /etc/octobrix.toml"), unknown.stderr
    assert "hint:" in unknown.stderr
    # Not a folder: even root cannot write backups below a file.
    readonly = farm.run(["octobrixctl", "backup", "shop", "--to", "/etc/hostname/backups"], check=False)
    assert readonly.returncode == 1 and "cannot write backups to /etc/hostname/backups" in readonly.stderr
    assert "hint:" in readonly.stderr, readonly.stderr
    assert "Traceback" not in readonly.stderr


def test_purged_printer_gets_upload_user_and_setting_back(farm: Container, made: dict[str, Any]) -> None:
    farm.systemctl("stop", "octoprint@shop.service")
    farm.run(["rm", "-rf", "/var/lib/octobrix/shop/basedir"])
    started = time.monotonic()
    result = farm.run(["octobrixctl", "restore", "shop", made["zip"]], check=False, timeout=900)
    print(f"\nrestore of shop: {time.monotonic() - started:.1f} s")
    assert result.returncode == 0, result.stdout + result.stderr
    assert farm.wait_active("octoprint@shop.service", timeout=60) == "active"
    # octobrix's own keys are back: its API key answers, the printer is the one octobrix set.
    connection = installs.wait_operational(farm, "shop", PORTS["shop"])
    assert connection["current"]["port"] == "VIRTUAL"
    files, users, colour = what_the_user_made(PORTS["shop"], key_of(farm, "shop"))
    assert UPLOAD in files and SECOND_USER in users and colour == COLOUR, (files, users, colour)
    basedir = farm.run(["stat", "-c", "%U %a", "/var/lib/octobrix/shop/basedir"]).stdout.strip()
    assert basedir == "octobrix-shop 700"
    # The admin login `octobrixctl credentials` shows still works.
    secrets = json.loads(farm.read_file("/var/lib/octobrix/.secrets/shop.json"))
    login = call(PORTS["shop"], made["key"], "/api/login", {"user": secrets["username"], "pass": secrets["password"]})
    assert login["name"] == secrets["username"] and login["admin"] is True


def test_restore_refuses_a_backup_from_a_newer_octoprint_and_names_the_pin(farm: Container) -> None:
    # The same zip with its metadata saying 1.99.0, as a newer OctoPrint would write it.
    farm.run(["python3", "-c", (
        "import zipfile,sys,json\n"
        "src=zipfile.ZipFile(sys.argv[1]); dst=zipfile.ZipFile('/root/newer.zip','w')\n"
        "[dst.writestr(i, json.dumps({'version':'1.99.0','excludes':[]}) if i.filename=='metadata.json' "
        "else src.read(i)) for i in src.infolist()]\ndst.close()\n"
    ), farm.run(["sh", "-c", "ls /var/backups/octobrix/shop/*.zip | head -1"]).stdout.strip()])  # fmt: skip
    pid_before = octoprint_pid(farm, "shop")
    result = farm.run(["octobrixctl", "restore", "shop", "/root/newer.zip"], check=False)
    assert result.returncode == 1
    assert "from OctoPrint 1.99.0, newer than the 1.11.8" in result.stderr, result.stderr
    assert 'hint: set octoprint = "octoprint==1.99.0" in [printers.shop]' in result.stderr, result.stderr
    assert octoprint_pid(farm, "shop") == pid_before


def test_the_same_zip_restores_through_octoprints_own_restore_api(farm: Container, made: dict[str, Any]) -> None:
    installs.wait_operational(farm, "plain", PORTS["plain"])
    zip_bytes = Path(farm.path(made["zip"])).read_bytes()
    pid_before = octoprint_pid(farm, "plain")
    upload(PORTS["plain"], key_of(farm, "plain"), "/plugin/backup/restore", filename="backup.zip", data=zip_bytes)
    # OctoPrint restarts itself after a restore (its restart command, run without a shell); it comes
    # back with shop's users and keys.
    wait_until(
        "plain OctoPrint to show the restored data",
        lambda: what_the_user_made(PORTS["plain"], made["key"]),
        timeout=180,
        until=lambda seen: UPLOAD in seen[0] and SECOND_USER in seen[1] and seen[2] == COLOUR,
        # Refused, reset, OctoPrint's start-up placeholder (not HTTP), not JSON yet, not restored yet.
        ignoring=(OSError, ValueError, KeyError, http.client.HTTPException, urllib.error.URLError),
        detail=lambda: farm.journal("octoprint@plain"),
    )
    assert octoprint_pid(farm, "plain") != pid_before


def test_restart_from_octoprints_system_menu_still_restarts_only_that_instance(farm: Container) -> None:
    # The same restart command, run by the system menu through a shell.
    installs.wait_operational(farm, "shop", PORTS["shop"])
    before = {name: octoprint_pid(farm, name) for name in PORTS}
    call(PORTS["shop"], key_of(farm, "shop"), "/api/system/commands/core/restart", {})
    wait_until(
        "shop's OctoPrint to run as a new process",
        lambda: octoprint_pid(farm, "shop") not in (before["shop"], 0),
        timeout=60,
        every=1,
        detail=lambda: farm.journal("octoprint@shop", 40),
    )
    assert octoprint_pid(farm, "plain") == before["plain"]
    installs.wait_operational(farm, "shop", PORTS["shop"])


def test_timer_is_set_up_and_its_service_keeps_the_last_n(farm: Container, made: dict[str, Any]) -> None:
    assert farm.systemctl("is-enabled", "octobrix-backup.timer", check=False).stdout.strip() == "enabled"
    assert farm.is_active("octobrix-backup.timer") == "active"
    calendar = farm.systemctl("show", "-p", "TimersCalendar", "--value", "octobrix-backup.timer").stdout
    assert "*-*-* 03:30:00" in calendar and calendar.count("OnCalendar=") == 1, calendar
    for _ in range(2):
        started = farm.systemctl("start", "octobrix-backup.service", check=False)
        assert started.returncode == 0, started.stderr + farm.journal("octobrix-backup.service", 40)
    for name in PORTS:
        zips = farm.run(["sh", "-c", f"ls /var/backups/octobrix/{name}/*.zip"]).stdout.split()
        sides = farm.run(["sh", "-c", f"ls /var/backups/octobrix/{name}/*.octobrix.json"]).stdout.split()
        assert len(zips) == 2 and len(sides) == 2, (zips, sides)
    # shop had the manual backup plus two scheduled ones: the manual, oldest, went.
    assert made["zip"] not in farm.run(["sh", "-c", "ls /var/backups/octobrix/shop/*.zip"]).stdout
    status = farm.run(["octobrixctl", "doctor"], check=False).stdout
    assert "[ ok ] backups: last backups all succeeded" in status, status


def test_the_backup_service_is_hardened(farm: Container) -> None:
    result = farm.run(["systemd-analyze", "security", "--no-pager", "octobrix-backup.service"], check=False)
    summary = next(line for line in result.stdout.splitlines() if "Overall exposure level" in line)
    print(f"\nsystemd-analyze security octobrix-backup.service: {summary.strip()}")
    assert float(summary.split(":")[1].split()[0]) <= 5.0, result.stdout


def test_a_failed_scheduled_backup_shows_in_status_and_doctor(farm: Container) -> None:
    # A file the instance's user cannot read: OctoPrint's backup of it fails.
    farm.run(["sh", "-c", "echo x > /var/lib/octobrix/shop/basedir/uploads/locked.gcode && "
              "chmod 600 /var/lib/octobrix/shop/basedir/uploads/locked.gcode"])  # fmt: skip
    try:
        started = farm.systemctl("start", "octobrix-backup.service", check=False)
        assert started.returncode != 0
        status = farm.run(["octobrixctl", "status"]).stdout
        assert "backup of shop failed at" in status, status
        assert json.loads(farm.run(["octobrixctl", "status", "--json"]).stdout)["backup_failures"]
        doctor = farm.run(["octobrixctl", "doctor"], check=False)
        assert doctor.returncode == 1 and "[FAIL] backups: shop: the backup of" in doctor.stdout, doctor.stdout
    finally:
        farm.run(["rm", "-f", "/var/lib/octobrix/shop/basedir/uploads/locked.gcode"])
    again = farm.run(["octobrixctl", "backup", "shop"], check=False, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "backup of shop failed" not in farm.run(["octobrixctl", "status"]).stdout


def test_a_backup_during_a_print_does_not_interrupt_it_and_a_restore_waits(farm: Container) -> None:
    key = key_of(farm, "shop")
    installs.wait_operational(farm, "shop", PORTS["shop"])
    # OctoPrint's virtual printer really waits on G4: a print of about 90 seconds.
    upload(PORTS["shop"], key, "/api/files/local", filename="slow.gcode", data=b"G4 P1000\n" * 90)
    call(PORTS["shop"], key, "/api/files/local/slow.gcode", {"command": "select", "print": True})
    wait_until(
        "shop to be printing",
        lambda: call(PORTS["shop"], key, "/api/job"),
        timeout=30,
        every=0.5,
        until=lambda job: job["state"] == "Printing",
    )
    pid = octoprint_pid(farm, "shop")
    try:
        during = farm.run(["octobrixctl", "backup", "shop"], check=False, timeout=600)
        assert during.returncode == 0, during.stderr
        job = call(PORTS["shop"], key, "/api/job")
        assert job["state"] == "Printing" and job["job"]["file"]["name"] == "slow.gcode", job
        assert octoprint_pid(farm, "shop") == pid
        # The newest backup (the timer's retention removed the first one).
        newest = farm.run(["sh", "-c", "ls /var/backups/octobrix/shop/*.zip | tail -1"]).stdout.strip()
        refused = farm.run(["octobrixctl", "restore", "shop", newest], check=False)
        assert refused.returncode == 1 and "shop is printing: a restore would stop the print" in refused.stderr
        assert "--force" in refused.stderr
        assert call(PORTS["shop"], key, "/api/job")["state"] == "Printing" and octoprint_pid(farm, "shop") == pid
    finally:
        call(PORTS["shop"], key, "/api/job", {"command": "cancel"})


def test_a_bundle_brings_the_same_farm_to_a_fresh_computer(
    farm: Container, made: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> None:
    bundle_args = ["octobrixctl", "backup", "--all", "--bundle", "/root/farm.bundle"]
    made_bundle = farm.run(bundle_args, check=False, timeout=900)
    assert made_bundle.returncode == 0, made_bundle.stdout + made_bundle.stderr
    assert farm.run(["stat", "-c", "%U %a", "/root/farm.bundle"]).stdout.strip() == "root 600"
    workdir = Path(tmp_path_factory.mktemp("fresh", numbered=True))
    shutil.copy(farm.path("/root/farm.bundle"), workdir / "farm.bundle")
    old_secrets = {name: farm.read_file(f"/var/lib/octobrix/.secrets/{name}.json") for name in PORTS}
    shop_before = what_the_user_made(PORTS["shop"], key_of(farm, "shop"))
    old_config = farm.read_file("/etc/octobrix.toml")
    # The old computer is gone (its ports free); this session still holds their locks.
    farm.stop()
    with booted(workdir / "ct", boot_timeout=120, base=farm_base) as fresh:
        fresh.write_file("/etc/octobrix.toml", "[octobrix]\n")
        installed = install_checkout(fresh)
        assert installed.returncode == 0, f"install.sh failed:\n{installed.stdout}\n{installed.stderr}"
        fresh.copy_in(workdir / "farm.bundle", "/root/farm.bundle")
        started = time.monotonic()
        restored = fresh.run(["octobrixctl", "restore", "--bundle", "/root/farm.bundle"], check=False, timeout=1500)
        print(f"\nbundle restore on a fresh install: {time.monotonic() - started:.1f} s")
        assert restored.returncode == 0, restored.stdout + restored.stderr
        assert fresh.read_file("/etc/octobrix.toml") == old_config
        for name, port in PORTS.items():
            # The same logins and keys as on the old computer, and octobrix's own settings.
            assert fresh.read_file(f"/var/lib/octobrix/.secrets/{name}.json") == old_secrets[name]
            connection = installs.wait_operational(fresh, name, port)
            assert connection["current"]["port"] == "VIRTUAL"
        assert what_the_user_made(PORTS["shop"], key_of(fresh, "shop")) == shop_before
        status = json.loads(fresh.run(["octobrixctl", "status", "--json"]).stdout)
        assert sorted(row["name"] for row in status["printers"]) == sorted(PORTS)
