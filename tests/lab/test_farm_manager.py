"""A farm into a real FDM Monster in one step (issue 18), for real.

octobrix installed by install.sh in a systemd container with two simulated printers on ptys
(OctoPrints on ports 5630/5631 of the shared network, the front door on 8630); FDM Monster from
npm (SQLite mode) on 127.0.0.1:4630 of this machine, its first-time setup done through its API.
`octobrixctl export fdm-monster`, run in the container, goes to FDM Monster's YAML import in one
call: both printers appear, and FDM Monster's own API says each is connected and Operational. A
print started from FDM Monster shows as Printing in `octobrixctl status`. `--revoke` takes FDM
Monster's key away (OctoPrint refuses it: 403) while octobrix's own key goes on working.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from octobrixd.config.model import default_door_port
from tests.lab.harness.container import Container
from tests.lab.harness.farm import pty_farm
from tests.lab.harness.fdm_monster import FdmMonster, fdm_monster
from tests.lab.harness.installs import api, wait_operational
from tests.lab.harness.waiting import wait_until

pytestmark = pytest.mark.lab

PORTS = {"alpha": 5630, "beta": 5631}
FRONT_DOOR = 8630
FDM_PORT = 4630
# alpha's moves take time, so that the print FDM Monster starts lasts beyond the test's look at it.
MOVE_SECONDS = {"alpha": 0.2, "beta": 0.0}
CONFIG = (
    # What FDM Monster, on this machine, reaches the container's OctoPrints by.
    f'[octobrix]\npublic_host = "127.0.0.1"\n\n[frontdoor]\nport = {FRONT_DOOR}\n\n'
    + "".join(
        f'[printers.{name}]\nserial = "PRN000{i}"\nport = {port}\n\n' for i, (name, port) in enumerate(PORTS.items())
    )
)


@pytest.fixture(scope="module")
def farm(lab_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    workdir = Path(tmp_path_factory.mktemp("farmmanager", numbered=True))
    with pty_farm(workdir, CONFIG, MOVE_SECONDS, ports=[*PORTS.values(), FDM_PORT], front_door_port=FRONT_DOOR) as box:
        for name, port in PORTS.items():
            wait_operational(box, name, port)
        yield box


@pytest.fixture(scope="module")
def fdm(farm: Container) -> Iterator[FdmMonster]:
    with fdm_monster(FDM_PORT) as server:
        yield server


@pytest.fixture(scope="module")
def imported(farm: Container, fdm: FdmMonster) -> dict[str, dict[str, Any]]:
    """The printers FDM Monster has after importing the export once, by name."""
    export = farm.run(["octobrixctl", "export", "fdm-monster"], check=False)
    assert export.returncode == 0, export.stderr
    answer = fdm.upload("/api/server/yaml-import", [("file", export.stdout, "octobrix.yaml")])
    assert answer["success"] is True, answer
    return {printer["name"]: printer for printer in fdm.get("/api/printer")}


def status_rows(box: Container) -> dict[str, dict[str, Any]]:
    body = json.loads(box.run(["octobrixctl", "status", "--json"]).stdout)
    return {row["name"]: row for row in body["printers"]}


def printer_state(fdm: FdmMonster, printer_id: int) -> str | None:
    """What FDM Monster last heard from that OctoPrint over its live socket."""
    events = fdm.get(f"/api/printer/{printer_id}/socket")
    current = (events.get("current") or {}).get("payload") or {}
    return (current.get("state") or {}).get("text")


def octoprint_answer(port: int, api_key: str, path: str) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"X-Api-Key": api_key})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_status_shows_the_front_door_addresses(farm: Container) -> None:
    rows = status_rows(farm)
    assert {name: row["url"] for name, row in rows.items()} == {
        name: f"http://127.0.0.1:{default_door_port(port)}/" for name, port in PORTS.items()
    }


def test_one_import_brings_every_printer_connected_and_operational(
    farm: Container, fdm: FdmMonster, imported: dict[str, dict[str, Any]]
) -> None:
    assert sorted(imported) == sorted(PORTS)
    own_keys = {json.loads(farm.read_file(f"/var/lib/octobrix/.secrets/{name}.json"))["api_key"] for name in PORTS}
    for name, port in PORTS.items():
        printer = imported[name]
        assert printer["printerURL"] == f"http://127.0.0.1:{port}" and printer["enabled"] is True
        assert printer["apiKey"] not in own_keys, "a key of FDM Monster's own, not octobrix's"
        printer_id = int(printer["id"])
        try:
            wait_until(
                f"FDM Monster to see {name} Operational",
                lambda: printer_state(fdm, printer_id) == "Operational",  # noqa: B023 (called at once)
                timeout=120,
            )
        except AssertionError as error:
            raise AssertionError(f"{error}\nFDM Monster's log:\n{fdm.log_tail()}") from None
    # The same file again updates the printers it brought (matched by URL): none twice.
    second = farm.run(["octobrixctl", "export", "fdm-monster"], check=False)
    assert second.returncode == 0, second.stderr
    again = second.stdout
    answer = fdm.upload("/api/server/yaml-import", [("file", again, "octobrix.yaml")])
    assert len(answer["spec"]["updateByPropertyPrinters"]) == len(PORTS) and answer["spec"]["insertPrinters"] == []
    assert sorted(p["name"] for p in fdm.get("/api/printer")) == sorted(PORTS)


def test_a_print_started_from_fdm_monster_shows_as_printing_in_status(
    farm: Container, fdm: FdmMonster, imported: dict[str, dict[str, Any]]
) -> None:
    gcode = "G28\nG90\n" + "".join(f"G1 X{i % 200} Y{(i * 7) % 200} F3000\n" for i in range(3000))
    alpha = imported["alpha"]["id"]
    fdm.upload(f"/api/printer-files/{alpha}/upload", [("file", gcode, "cube.gcode"), ("startPrint", "true", None)])
    try:
        row = wait_until(
            "status to say alpha prints",
            lambda: str((r := status_rows(farm)["alpha"])["printer_state"]).startswith("Printing") and r,
            timeout=90,
        )
        assert row["restart_pending"] is False
        assert status_rows(farm)["beta"]["printer_state"] == "Operational", "only the printer FDM Monster told"
    finally:
        fdm.post(f"/api/printer/{alpha}/job/cancel", {})
    wait_until("alpha to stop printing", lambda: status_rows(farm)["alpha"]["printer_state"] == "Operational", 90)


def test_revoke_takes_fdm_monsters_access_away_and_nothing_else(
    farm: Container, fdm: FdmMonster, imported: dict[str, dict[str, Any]]
) -> None:
    fdm_keys = {name: printer["apiKey"] for name, printer in imported.items()}
    # FDM Monster lists a printer's files by asking its OctoPrint: fine before the revoke.
    files = f"/api/printer-files/{imported['alpha']['id']}"
    fdm.get(files)
    assert all(octoprint_answer(PORTS[name], key, "/api/job") == 200 for name, key in fdm_keys.items())
    revoked = farm.run(["octobrixctl", "export", "fdm-monster", "--revoke"], check=False)
    assert revoked.returncode == 0, revoked.stderr
    assert revoked.stdout.splitlines() == [f"{name}: FDM Monster's key revoked" for name in sorted(PORTS)]
    for name, key in fdm_keys.items():
        assert octoprint_answer(PORTS[name], key, "/api/job") in (401, 403), f"{name} still takes FDM Monster's key"
        # octobrix's own key, the front door's and the overview's: untouched.
        assert api(farm, PORTS[name], name, "/api/job")["state"] == "Operational"
    # FDM Monster's own calls to the printers are refused now.
    with pytest.raises(urllib.error.HTTPError) as refused:
        fdm.get(files)
    # It passes OctoPrint's refusal on: 403, "External API call failed", OctoPrint's "permission" text.
    answer = refused.value.read().decode(errors="replace")
    assert refused.value.code == 403 and "External API call failed" in answer and "permission" in answer, answer
    assert all(row["printer_state"] == "Operational" for row in status_rows(farm).values())
