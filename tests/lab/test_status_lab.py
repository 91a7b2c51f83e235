"""status always shows the farm, for real: octobrix installed by its own installer into a systemd
container, two OctoPrints on the virtual printer (ports 5400/5401 of the shared network).

A mistake saved into /etc/octobrix.toml keeps the farm running on the last good config, and
`status --json` still lists every printer, with the mistake in `errors`. A user without sudo sees
each unit's state and one line saying what sudo adds; `credentials` says it needs root.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.harness import installs
from tests.lab.harness.container import Container
from tests.lab.harness.farm import pty_farm
from tests.lab.harness.waiting import wait_until

pytestmark = pytest.mark.lab

PORTS = {"alpha": 5400, "beta": 5401}
CONFIG = "".join(f"[printers.{name}]\nvirtual = true\nport = {port}\n\n" for name, port in PORTS.items())
# A typo in a new printer: the whole file is refused.
BROKEN = CONFIG + "[printers.gamma]\nvirtual = true\nport = 5402\nbaudrat = 115200\n"
BROKEN_LINE = BROKEN.splitlines().index("baudrat = 115200") + 1
# The nobody user: no sudo, no group of octobrix's.
AS_USER = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]


@pytest.fixture(scope="module")
def farm(lab_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    workdir = Path(tmp_path_factory.mktemp("statusfarm", numbered=True))
    with pty_farm(workdir, CONFIG, {}, ports=PORTS.values()) as box:
        for name, port in PORTS.items():
            installs.wait_operational(box, name, port)
        yield box


def status_json(box: Container, *argv: str) -> tuple[int, dict[str, object]]:
    result = box.run([*argv, "octobrixctl", "status", "--json"], check=False)
    assert result.stdout.strip(), f"no JSON on stdout (rc {result.returncode}):\n{result.stderr}"
    return result.returncode, json.loads(result.stdout)


def test_a_broken_config_still_lists_every_running_printer_with_the_error(farm: Container) -> None:
    farm.write_file("/etc/octobrix.toml", BROKEN)
    try:
        # octobrixd sees the edit (a path unit) and keeps the last good config: nothing restarts.
        wait_until(
            "octobrixd's status to say config error",
            lambda: "config error" in farm.run(["systemctl", "show", "-p", "StatusText", "octobrixd"]).stdout,
            timeout=30,
            every=0.5,
            detail=lambda: farm.journal("octobrixd.service", 40),
        )
        rc, body = status_json(farm)
        assert rc == 3, "exit 3: listed from the last config that applied, the config has errors"
        printers = {p["name"]: p for p in body["printers"]}  # type: ignore[attr-defined]
        assert sorted(printers) == ["alpha", "beta"], "the running farm, not the broken file's"
        assert all(p["state"] == "active" and p["printer_state"] == "Operational" for p in printers.values())
        errors = body["errors"]
        assert isinstance(errors, list) and len(errors) == 1
        assert errors[0].startswith(f"/etc/octobrix.toml:{BROKEN_LINE}: printers.gamma.baudrat: unknown key")
        table = farm.run(["octobrixctl", "status"], check=False)
        assert table.returncode == 3
        lines = table.stdout.splitlines()
        assert "printers.gamma.baudrat" in lines[0] and lines[1].startswith("hint: ")
        assert lines[2].split()[0] == "PRINTER" and [line.split()[0] for line in lines[3:5]] == ["alpha", "beta"]
    finally:
        farm.write_file("/etc/octobrix.toml", CONFIG)
    rc, body = status_json(farm)
    assert (rc, body["errors"]) == (0, [])


def test_without_root_status_shows_the_units_and_says_what_sudo_adds(farm: Container) -> None:
    result = farm.run([*AS_USER, "octobrixctl", "status"], check=False)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    rows = {line.split()[0]: line.split() for line in lines[1:3]}
    assert rows["alpha"][1:3] == ["active", "(running)"] and rows["beta"][1:3] == ["active", "(running)"]
    notes = [line for line in lines if line.startswith("note: ")]
    assert len(notes) == 1 and "`sudo octobrixctl status` adds them" in notes[0], result.stdout
    rc, body = status_json(farm, *AS_USER)
    assert rc == 0 and len(body["notes"]) == 1  # type: ignore[arg-type]
    # As root the same command has the printer states, and no note.
    rc, body = status_json(farm)
    assert body["notes"] == [] and all(p["printer_state"] == "Operational" for p in body["printers"])  # type: ignore[attr-defined]


def test_credentials_without_root_says_it_needs_root(farm: Container) -> None:
    result = farm.run([*AS_USER, "octobrixctl", "credentials"], check=False)
    assert result.returncode == 1
    assert result.stderr.splitlines()[0].startswith("octobrixctl: credentials needs root"), result.stderr
    assert "hint: sudo octobrixctl credentials" in result.stderr
    assert "remove" not in result.stderr and ".secrets/alpha.json" not in result.stderr
    # ...and the logins are untouched: root still reads them.
    assert "alpha: http://" in farm.run(["octobrixctl", "credentials"]).stdout
