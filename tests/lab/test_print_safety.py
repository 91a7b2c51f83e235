"""No print interrupted (issue #10): while a printer prints, nothing octobrix does restarts its OctoPrint.

For real: octobrix installed by install.sh in a systemd container, octobrixd running as its
service, the `bench` printer a simulated Marlin on a pty whose moves take time, so that a print
streamed to it by its OctoPrint lasts minutes. The test presses Print like a user does (uploads a
G-code file through OctoPrint's REST API), then changes that printer's settings in
/etc/octobrix.toml and runs `octobrixctl apply`, `systemctl reload octobrixd` and `systemctl
restart octobrixd`: the instance's main process stays the same through all of them, status says
the restart is pending, and the change waits until the print ends; then octobrixd restarts it by
itself (it looks again every DEFERRED_RETRY_SECONDS) and the new setting is in force. The `demo`
printer, idle, gets its change at once. `octobrixctl apply --force` restarts a printing instance.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from octobrixd.daemon import DEFERRED_RETRY_SECONDS
from tests.lab.harness.container import Container
from tests.lab.harness.farm import moves_gcode, pty_farm
from tests.lab.harness.guest_probe import octoprint_pid
from tests.lab.harness.installs import api, upload_gcode, wait_operational
from tests.lab.harness.waiting import wait_until

pytestmark = pytest.mark.lab

PORTS = {"demo": 5000, "bench": 5001}
# Each move of the simulated board takes this long: the print below lasts about 20 minutes, far
# longer than the test, which ends it.
MOVE_SECONDS = 0.2
MOVES = 6000
# octobrixd applies a change to an idle printer in seconds; well under its retry period.
RIGHT_AWAY = 45.0
HELD_BACK_LOG = "bench is printing: not restarting octoprint@bench.service"


def config(bench_nice: int, demo_nice: int, bench_port: int | None = 5001) -> str:
    """The farm's config; bench_port None: bench is not in it."""
    demo = f"[printers.demo]\nvirtual = true\nport = 5000\nnice = {demo_nice}\n"
    if bench_port is None:
        return demo
    bench = f'[printers.bench]\nserial = "PRN0001"\nport = {bench_port}\nbaudrate = 250000\nnice = {bench_nice}\n'
    return f"{demo}\n{bench}"


@pytest.fixture(scope="module")
def farm(lab_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    workdir = Path(tmp_path_factory.mktemp("printsafety", numbered=True))
    # bench moves to port 5002 in the last test.
    with pty_farm(workdir, config(bench_nice=5, demo_nice=5), {"bench": MOVE_SECONDS}, (5000, 5001, 5002)) as box:
        yield box


# --- what the user does and sees ---------------------------------------------------------------


def edit_config(box: Container, text: str) -> None:
    """Save /etc/octobrix.toml as `sudo tee` would, inside the container (the path unit sees it)."""
    box.run(["tee", "/etc/octobrix.toml"], input=text)


def press_print(box: Container, name: str) -> None:
    """Upload a G-code file and print it, as OctoPrint's Upload-and-Print does (a multipart POST)."""
    upload_gcode(box, PORTS[name], name, "long.gcode", moves_gcode(MOVES), print_it=True)


def status_json(box: Container) -> dict[str, dict[str, Any]]:
    body = json.loads(box.run(["octobrixctl", "status", "--json"]).stdout)
    return {row["name"]: row for row in body["printers"]}


def status_row(box: Container, name: str) -> str:
    text = box.run(["octobrixctl", "status"]).stdout
    return next((line for line in text.splitlines() if line.startswith(f"{name} ")), text)


def process_nice(box: Container, pid: int) -> int:
    """The niceness the running process really has (field 19 of /proc/PID/stat)."""
    stat = box.run(["cat", f"/proc/{pid}/stat"]).stdout
    return int(stat.rpartition(")")[2].split()[16])


def held_back_count(box: Container) -> int:
    """How often octobrixd has logged that it held bench's restart back."""
    return box.journal("octobrixd.service", lines=5000).count(HELD_BACK_LOG)


def held_back_since(box: Container, count: int) -> bool:
    return held_back_count(box) > count


def printing(box: Container, name: str) -> bool:
    return str(status_json(box)[name]["printer_state"]).startswith("Printing")


def restarted(box: Container, name: str, old_pid: int) -> int:
    pid = octoprint_pid(box, name)
    return pid if pid not in (0, old_pid) and box.is_active(f"octoprint@{name}.service") == "active" else 0


def assert_still_printing(box: Container, pid: int, step: str) -> None:
    assert octoprint_pid(box, "bench") == pid, (
        f"{step} restarted bench mid-print:\n{box.journal('octobrixd.service', 60)}"
    )
    row = status_json(box)["bench"]
    assert str(row["printer_state"]).startswith("Printing"), f"after {step}: {row}"
    assert row["restart_pending"] is True, f"after {step}: {row}"


# --- the tests ---------------------------------------------------------------------------------


def test_changes_wait_for_the_print_to_end(farm: Container) -> None:
    wait_operational(farm, "demo", PORTS["demo"])
    wait_operational(farm, "bench", PORTS["bench"])
    press_print(farm, "bench")
    wait_until("bench to be printing", lambda: printing(farm, "bench"), timeout=60)
    bench_pid, demo_pid = octoprint_pid(farm, "bench"), octoprint_pid(farm, "demo")
    assert process_nice(farm, bench_pid) == 5

    # The user saves a change to both printers. octobrixd follows the file: the idle demo printer
    # gets its change at once, the printing one not.
    held = held_back_count(farm)
    edit_config(farm, config(bench_nice=10, demo_nice=8))
    new_demo = wait_until("demo to be restarted with its change", lambda: restarted(farm, "demo", demo_pid), RIGHT_AWAY)
    assert process_nice(farm, new_demo) == 8
    wait_until("octobrixd to hold bench's restart back", partial(held_back_since, farm, held), timeout=30)
    wait_until("status to show bench's restart pending", lambda: status_json(farm)["bench"]["restart_pending"], 30)
    assert_still_printing(farm, bench_pid, "an edit of /etc/octobrix.toml")
    row = status_row(farm, "bench")
    assert "Printing" in row and "(restart pending)" in row, row
    assert "pending" not in status_row(farm, "demo")

    # `octobrixctl apply` says it held the restart back, and how to force it.
    applied = farm.run(["octobrixctl", "apply"])
    assert "held back octoprint@bench.service" in applied.stdout, applied.stdout
    assert "when the print ends" in applied.stdout and "octobrixctl apply --force" in applied.stdout, applied.stdout
    assert "restarted" not in applied.stdout and "wrote 0 files" not in applied.stdout, applied.stdout
    assert_still_printing(farm, bench_pid, "`octobrixctl apply`")

    # A reload and a restart of octobrixd each apply the config again, and hold back again.
    for action in ("reload", "restart"):
        held = held_back_count(farm)
        farm.systemctl(action, "octobrixd.service")
        assert farm.wait_active("octobrixd.service") == "active", farm.journal("octobrixd.service", 60)
        wait_until(f"octobrixd to apply the config after its {action}", partial(held_back_since, farm, held), 60)
        assert_still_printing(farm, bench_pid, f"systemctl {action} octobrixd")
    # An OctoPrint too busy to answer in time (here: frozen) might be printing: it is not restarted either.
    held = held_back_count(farm)
    farm.run(["kill", "-STOP", str(bench_pid)])
    try:
        farm.systemctl("reload", "octobrixd.service")
        wait_until("octobrixd to hold back the silent bench", partial(held_back_since, farm, held), 60)
    finally:
        farm.run(["kill", "-CONT", str(bench_pid)], check=False)
    assert_still_printing(farm, bench_pid, "a reload while bench's OctoPrint did not answer")
    # The old setting is still what the printing OctoPrint runs with.
    assert process_nice(farm, bench_pid) == 5
    assert octoprint_pid(farm, "demo") == new_demo

    # The print ends (the user cancels it): octobrixd restarts bench by itself, with the new setting.
    api(farm, PORTS["bench"], "bench", "/api/job", {"command": "cancel"})
    ended = time.monotonic()
    wait_until("bench's print to end", lambda: not printing(farm, "bench"), timeout=60)
    new_bench = wait_until(
        "octobrixd to restart bench after its print",
        lambda: restarted(farm, "bench", bench_pid),
        timeout=DEFERRED_RETRY_SECONDS + 60,
    )
    waited = time.monotonic() - ended
    print(f"\nbench restarted {waited:.0f}s after its print was cancelled (octobrixd looks every "
          f"{DEFERRED_RETRY_SECONDS:.0f}s)")  # fmt: skip
    assert process_nice(farm, new_bench) == 10
    assert farm.systemctl("show", "-p", "Nice", "--value", "octoprint@bench.service").stdout.strip() == "10"
    wait_until("status to show no restart pending", lambda: not status_json(farm)["bench"]["restart_pending"], 30)
    assert "pending" not in status_row(farm, "bench")
    assert octoprint_pid(farm, "demo") == new_demo


def test_apply_force_restarts_a_printing_printer(farm: Container) -> None:
    wait_operational(farm, "bench", PORTS["bench"])
    press_print(farm, "bench")
    wait_until("bench to be printing", lambda: printing(farm, "bench"), timeout=60)
    bench_pid = octoprint_pid(farm, "bench")
    edit_config(farm, config(bench_nice=12, demo_nice=8))
    wait_until("status to show bench's restart pending", lambda: status_json(farm)["bench"]["restart_pending"], 60)
    assert octoprint_pid(farm, "bench") == bench_pid

    forced = farm.run(["octobrixctl", "apply", "--force"])
    assert "restarted octoprint@bench.service" in forced.stdout, forced.stdout
    assert "held back" not in forced.stdout, forced.stdout
    new_bench = wait_until("bench to run again", lambda: restarted(farm, "bench", bench_pid), timeout=60)
    assert process_nice(farm, new_bench) == 12
    assert status_json(farm)["bench"]["restart_pending"] is False
    assert not printing(farm, "bench")


def test_a_port_change_or_removal_waits_for_the_print_too(farm: Container) -> None:
    """Both restart or stop the instance, so both wait. Whether it prints is asked of the OctoPrint
    that runs, on its old port, however often octobrixd looks again."""
    wait_operational(farm, "bench", PORTS["bench"])
    press_print(farm, "bench")
    wait_until("bench to be printing", lambda: printing(farm, "bench"), timeout=60)
    bench_pid = octoprint_pid(farm, "bench")

    held = held_back_count(farm)
    edit_config(farm, config(bench_nice=12, demo_nice=8, bench_port=5002))
    wait_until("octobrixd to hold back bench's new port", partial(held_back_since, farm, held), timeout=60)
    held = held_back_count(farm)
    farm.systemctl("reload", "octobrixd.service")
    wait_until("octobrixd to look again after a reload", partial(held_back_since, farm, held), timeout=60)
    assert_still_printing(farm, bench_pid, "a port change")
    # Until it restarts, status shows where this OctoPrint really is.
    assert status_json(farm)["bench"]["url"].endswith(":5001/")

    held = held_back_count(farm)
    edit_config(farm, config(bench_nice=12, demo_nice=8, bench_port=None))
    wait_until("octobrixd to hold back bench's removal", partial(held_back_since, farm, held), timeout=60)
    applied = farm.run(["octobrixctl", "apply"])
    assert "held back octoprint@bench.service" in applied.stdout, applied.stdout
    assert octoprint_pid(farm, "bench") == bench_pid, farm.journal("octobrixd.service", 60)
    assert api(farm, PORTS["bench"], "bench", "/api/job")["state"].startswith("Printing")
    # Out of the config but still printing: status keeps it in sight until its stop.
    removed = status_json(farm)["bench"]
    assert (removed["device"], removed["restart_pending"]) == ("removed", True), removed
    assert removed["url"].endswith(":5001/") and removed["printer_state"].startswith("Printing"), removed
    assert "(stop pending)" in status_row(farm, "bench")

    api(farm, PORTS["bench"], "bench", "/api/job", {"command": "cancel"})
    ended = time.monotonic()
    wait_until(
        "octobrixd to stop the removed bench after its print",
        lambda: farm.is_active("octoprint@bench.service") == "inactive",
        timeout=DEFERRED_RETRY_SECONDS + 60,
    )
    print(f"\nremoved bench stopped {time.monotonic() - ended:.0f}s after its print was cancelled")
    assert farm.systemctl("is-enabled", "octoprint@bench.service", check=False).stdout.strip() != "enabled"
