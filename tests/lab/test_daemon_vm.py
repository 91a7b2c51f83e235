"""octobrixd end to end in the VM: real udev, real systemd, real OctoPrint, a simulated printer on a
hot-plugged USB serial adapter. The test never talks to OctoPrint: it plugs cables, edits the
config and reads `octobrixctl status`, as a user would.

The VM has no network, so octobrix is installed with `packaging/install.sh --wheels DIR` from a
folder of wheels built on the host, and the config's `wheels` key makes instances install
OctoPrint from it too: the offline-farm path.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.lab.harness.guest_probe import assert_left_as_it_was, footprint, main_pid
from tests.lab.harness.offline_vm import SharedVm, offline_farm_vm
from tests.lab.harness.printer_sim import MarlinSim
from tests.lab.harness.project import WHEELS_IN_GUEST
from tests.lab.harness.vm import UsbSerialAdapter, Vm
from tests.lab.harness.waiting import wait_until

pytestmark = pytest.mark.lab

CONFIG = f"""\
[octobrix]
wheels = "{WHEELS_IN_GUEST}"

[printers.printer1]
serial = "PRN0001"
port = 5001
"""
DAEMON = "octobrixd.service"
# OctoPrint under software emulation starts in minutes, not seconds.
SLOW = 600.0


def status(vm: Vm) -> dict[str, dict[str, Any]]:
    body = json.loads(vm.run(["octobrixctl", "status", "--json"], timeout=60).stdout)
    return {row["name"]: row for row in body["printers"]}


def printer_state(vm: Vm, name: str) -> str | None:
    state = status(vm)[name]["printer_state"]
    return str(state) if state is not None else None


def exists(vm: Vm, path: str) -> bool:
    return vm.run(["test", "-e", path], check=False).returncode == 0


def daemon_status_line(vm: Vm) -> str:
    return vm.run(["systemctl", "show", "-p", "StatusText", "--value", "octobrixd.service"]).stdout.strip()


@pytest.fixture(scope="module")
def farm_vm(lab_ready: None, lab_vm: SharedVm) -> Iterator[Vm]:
    # On a loaded two-core machine the emulated install alone took longer than SLOW.
    with offline_farm_vm(lab_vm, CONFIG, install_timeout=2 * SLOW) as vm:
        yield vm


@pytest.fixture(autouse=True)
def guest_logs_on_failure(request: pytest.FixtureRequest, farm_vm: Vm) -> Iterator[None]:
    """What a user would look at (the daemon's journal, OctoPrint's log) when a test here fails."""
    yield
    report = getattr(request.node, "lab_report_call", None)
    if report is not None and report.failed and farm_vm.running:
        print("--- journalctl -u octobrixd ---\n" + farm_vm.journal("octobrixd.service", lines=60))
        log = farm_vm.run(["tail", "-n", "40", "/var/lib/octobrix/printer1/basedir/logs/octoprint.log"], check=False)
        print("--- octoprint.log (printer1) ---\n" + log.stdout)


def cable_out(vm: Vm, serial: str) -> Iterator[tuple[UsbSerialAdapter, MarlinSim]]:
    """A board with this serial number, its cable not plugged in yet; gone from the VM afterwards."""
    sim = MarlinSim()
    adapter = vm.plug_usb_serial(serial, sim, connect=False)
    yield adapter, sim
    adapter.remove()


@pytest.fixture(scope="module")
def printer1(farm_vm: Vm) -> Iterator[tuple[UsbSerialAdapter, MarlinSim]]:
    yield from cable_out(farm_vm, "PRN0001")


def test_plugged_printer_becomes_operational_by_itself(
    farm_vm: Vm, printer1: tuple[UsbSerialAdapter, MarlinSim]
) -> None:
    adapter, sim = printer1
    wait_until("OctoPrint of printer1 to answer", lambda: printer_state(farm_vm, "printer1") not in (None, "starting"))
    plugged_at = time.monotonic()
    adapter.plug()
    farm_vm.wait_for_path("/dev/octobrix/printer1", timeout=30)
    link_seconds = time.monotonic() - plugged_at
    wait_until("printer1 Operational", lambda: printer_state(farm_vm, "printer1") == "Operational")
    operational_seconds = time.monotonic() - plugged_at
    print(f"\nVM (TCG): plug -> link {link_seconds:.1f} s, plug -> Operational {operational_seconds:.1f} s")
    assert any(line.startswith("M115") or "M115" in line for line in sim.lines), "OctoPrint talked to the printer"
    assert status(farm_vm)["printer1"]["device"] == "plugged"


def test_unplug_then_replug_reconnects_the_same_octoprint(
    farm_vm: Vm, printer1: tuple[UsbSerialAdapter, MarlinSim]
) -> None:
    adapter, _sim = printer1
    adapter.plug()
    wait_until("printer1 Operational", lambda: printer_state(farm_vm, "printer1") == "Operational")
    pid = main_pid(farm_vm, "octoprint@printer1.service")
    adapter.pull()
    farm_vm.wait_for_path("/dev/octobrix/printer1", present=False, timeout=30)
    wait_until("status to show printer1 unplugged", lambda: status(farm_vm)["printer1"]["device"] == "unplugged")
    adapter.plug()
    wait_until("printer1 Operational again", lambda: printer_state(farm_vm, "printer1") == "Operational")
    assert main_pid(farm_vm, "octoprint@printer1.service") == pid, "OctoPrint was not restarted"


def test_twenty_plug_pull_cycles_leave_everything_in_order(
    farm_vm: Vm, printer1: tuple[UsbSerialAdapter, MarlinSim]
) -> None:
    """A cable storm, with reloads in it: OctoPrint ends up connected, nothing failed or leaked.

    This is also the soak of the reliability issue: plug/pull plus config reloads, then no failed
    units, no stray processes, no leaked descriptors in the daemon, its memory flat."""
    adapter, _sim = printer1
    adapter.plug()
    wait_until("printer1 Operational", lambda: printer_state(farm_vm, "printer1") == "Operational")
    instance_pid = main_pid(farm_vm, "octoprint@printer1.service")
    before = footprint(farm_vm, DAEMON)
    for cycle in range(20):
        adapter.pull()
        farm_vm.wait_for_path("/dev/octobrix/printer1", present=False, timeout=30)
        if cycle % 5 == 4:
            farm_vm.run(["systemctl", "reload", DAEMON], timeout=120)
        adapter.plug()
        farm_vm.wait_for_path("/dev/octobrix/printer1", timeout=30)
    storm_over = time.monotonic()
    wait_until("printer1 Operational after the storm", lambda: printer_state(farm_vm, "printer1") == "Operational")
    recovered = time.monotonic() - storm_over
    assert main_pid(farm_vm, "octoprint@printer1.service") == instance_pid, "OctoPrint was never restarted"
    after = assert_left_as_it_was(farm_vm, DAEMON, before)
    print(f"\nVM (TCG): storm over -> Operational {recovered:.1f} s; {before} -> {after}")


def test_discover_wait_names_the_new_board_without_opening_it(farm_vm: Vm) -> None:
    farm_vm.sh(
        "rm -f /tmp/discover.*; : > /tmp/discover.out;"
        " (strace -f -e trace=open,openat -o /tmp/discover.strace octobrixctl discover --wait --toml --timeout 600"
        " > /tmp/discover.out 2>&1; echo $? > /tmp/discover.rc) >/dev/null 2>&1 &"
    )
    # As the user does: plug in once it says it is waiting. Under strace in the emulated guest the
    # interpreter takes the better part of a minute to get there.
    wait_until(
        "discover to say it is waiting",
        lambda: b"Waiting for a printer board" in farm_vm.read_file("/tmp/discover.out"),
        timeout=300,
    )
    sim = MarlinSim()
    adapter = farm_vm.plug_usb_serial("PRN0042", sim)
    try:
        wait_until("discover to report the board", lambda: exists(farm_vm, "/tmp/discover.rc"), timeout=300)
        out = farm_vm.read_file("/tmp/discover.out").decode()
        assert farm_vm.read_file("/tmp/discover.rc").decode().strip() == "0", out
        assert 'serial = "PRN0042"' in out and "[printers." in out, out
        opened = [
            line for line in farm_vm.read_file("/tmp/discover.strace").decode().splitlines()
            if "/dev/ttyUSB" in line or "/dev/serial/" in line or "/dev/octobrix/" in line
        ]  # fmt: skip
        assert opened == [], opened
        assert sim.received == b"", "nothing was sent to the printer: its port was never opened"
    finally:
        adapter.remove()


def test_config_edits_are_followed_and_a_broken_one_changes_nothing(
    farm_vm: Vm, printer1: tuple[UsbSerialAdapter, MarlinSim]
) -> None:
    printer1_pid = main_pid(farm_vm, "octoprint@printer1.service")
    daemon_pid = main_pid(farm_vm, "octobrixd.service")
    with_printer2 = CONFIG + '\n[printers.printer2]\nserial = "PRN0002"\nport = 5002\n'

    farm_vm.write_file("/etc/octobrix.toml", with_printer2)
    wait_until("octoprint@printer2 to run", lambda: main_pid(farm_vm, "octoprint@printer2.service") > 0)
    printer2_pid = main_pid(farm_vm, "octoprint@printer2.service")
    assert main_pid(farm_vm, "octoprint@printer1.service") == printer1_pid

    farm_vm.write_file("/etc/octobrix.toml", with_printer2.replace("port = 5002", "port = 5001"))
    line = wait_until(
        "the daemon to report the error",
        lambda: "config error" in daemon_status_line(farm_vm) and daemon_status_line(farm_vm),
        timeout=120,
    )
    assert "printers.printer2.port" in line or "5001 is also used" in line, line
    assert main_pid(farm_vm, "octobrixd.service") == daemon_pid, "the daemon keeps running"
    assert main_pid(farm_vm, "octoprint@printer1.service") == printer1_pid
    assert main_pid(farm_vm, "octoprint@printer2.service") == printer2_pid

    edited_at = time.monotonic()
    farm_vm.write_file("/etc/octobrix.toml", with_printer2.replace("port = 5002", "port = 5003"))
    wait_until(
        "printer2 restarted on its new port",
        lambda: main_pid(farm_vm, "octoprint@printer2.service") not in (0, printer2_pid),
    )
    print(f"\nVM (TCG): config edit -> printer2 restarted {time.monotonic() - edited_at:.1f} s")
    wait_until("the error to clear", lambda: "config error" not in daemon_status_line(farm_vm), timeout=120)
    assert main_pid(farm_vm, "octoprint@printer1.service") == printer1_pid, "only what changed restarts"


# Run inside a unit's cgroup, as root: file modes do not stop root, so what it may open is exactly
# what the unit's device list (DevicePolicy=closed + DeviceAllow=) lets any process of that unit open.
_OPEN_PROBE = """
import errno, json, os, sys
cgroup, *nodes = sys.argv[1:]
if cgroup:
    with open("/sys/fs/cgroup" + cgroup + "/cgroup.procs", "w") as procs:
        procs.write(str(os.getpid()))
answers = {}
for node in nodes:
    try:
        os.close(os.open(node, os.O_RDWR | os.O_NONBLOCK | os.O_NOCTTY))
        answers[node] = "opened"
    except OSError as error:
        answers[node] = errno.errorcode[error.errno]
print(json.dumps(answers))
"""


def set_at_runtime(vm: Vm, unit: str) -> bool:
    """`systemctl set-property --runtime` was run on unit (octobrixd re-resolving its device link):
    systemd keeps what it set in a drop-in under /run/systemd/system.control."""
    drop_ins = vm.run(["systemctl", "show", "-P", "DropInPaths", unit]).stdout
    return "/run/systemd/system.control/" in drop_ins


def open_probe(vm: Vm, unit: str | None, nodes: list[str]) -> dict[str, str]:
    """What a process of unit (None: outside every printer's unit) gets opening each node."""
    cgroup = ""
    if unit is not None:
        cgroup = vm.run(["systemctl", "show", "-P", "ControlGroup", unit]).stdout.strip()
        assert cgroup.endswith(f"/{unit}"), cgroup
    answer: dict[str, str] = json.loads(vm.run(["python3", "-c", _OPEN_PROBE, cgroup, *nodes]).stdout)
    return answer


def test_each_printers_octoprint_may_open_only_its_own_board(
    farm_vm: Vm, printer1: tuple[UsbSerialAdapter, MarlinSim]
) -> None:
    """Two simulated boards, printer1's and printer2's (the config the test before left): each
    printer's unit opens its own node and not the other's, even as root. printer2's board is plugged
    while its OctoPrint runs: octobrixd lets that unit open it without a restart."""
    printer1[0].plug()
    assert main_pid(farm_vm, "octoprint@printer2.service") > 0, "the test before left printer2 running"
    printer2_pid = main_pid(farm_vm, "octoprint@printer2.service")
    assert not set_at_runtime(farm_vm, "octoprint@printer2.service"), "no board of printer2's was seen yet"
    board = farm_vm.plug_usb_serial("PRN0002", MarlinSim())
    try:
        nodes = ["/dev/octobrix/printer1", "/dev/octobrix/printer2"]
        for node in nodes:
            farm_vm.wait_for_path(node, timeout=30)
        wait_until(
            "octobrixd to let printer2's unit open its board",
            lambda: set_at_runtime(farm_vm, "octoprint@printer2.service"),
            timeout=SLOW,
        )
        # Positive control: outside any printer's unit, root opens both boards.
        assert open_probe(farm_vm, None, nodes) == dict.fromkeys(nodes, "opened")
        assert open_probe(farm_vm, "octoprint@printer1.service", nodes) == {
            "/dev/octobrix/printer1": "opened",
            "/dev/octobrix/printer2": "EPERM",
        }
        assert open_probe(farm_vm, "octoprint@printer2.service", nodes) == {
            "/dev/octobrix/printer1": "EPERM",
            "/dev/octobrix/printer2": "opened",
        }
        assert main_pid(farm_vm, "octoprint@printer2.service") == printer2_pid, "not restarted for its board"
    finally:
        board.remove()
        farm_vm.wait_for_path("/dev/octobrix/printer2", present=False, timeout=30)


def test_killed_daemon_comes_back_and_instances_keep_running(farm_vm: Vm) -> None:
    daemon_pid = main_pid(farm_vm, "octobrixd.service")
    instance_pid = main_pid(farm_vm, "octoprint@printer1.service")
    farm_vm.run(["kill", "-9", str(daemon_pid)])
    wait_until(
        "systemd to restart octobrixd",
        lambda: main_pid(farm_vm, "octobrixd.service") not in (0, daemon_pid),
        timeout=60,
    )
    wait_until(
        "octobrixd active",
        lambda: farm_vm.run(["systemctl", "is-active", "octobrixd.service"], check=False).stdout.strip() == "active",
        timeout=SLOW,
    )
    assert main_pid(farm_vm, "octoprint@printer1.service") == instance_pid


# ---------------------------------------------------------------------------------------------
# Plug it in, click Add (octobrixd/adding): the web service's API with the farm login, as the
# overview page uses it, and `octobrixctl add` in the terminal.

STARTER = (Path(__file__).parents[2] / "packaging" / "octobrix.toml").read_text(encoding="utf-8")
DEMO_ENTRY = "[printers.demo]\nvirtual = true\nport = 5000\n"
# The starter file with every comment, without the demo (no OctoPrint but the added ones runs under
# emulation), and the offline wheels.
ADD_CONFIG = STARTER.replace(DEMO_ENTRY, "").replace("[octobrix]\n", f'[octobrix]\nwheels = "{WHEELS_IN_GUEST}"\n', 1)
ADD_SOCKET = "/run/octobrix/add.sock"


def comment_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.lstrip().startswith("#")]


class FarmPage:
    """The overview's API in the guest, logged in with the farm login as a browser is (curl's jar)."""

    def __init__(self, vm: Vm) -> None:
        self.vm = vm
        line = next(ln for ln in vm.run(["octobrixctl", "credentials"]).stdout.splitlines() if "farm login" in ln)
        user, password = line.split("  user ", 1)[1].split("  password ", 1)
        vm.run(["curl", "-sS", "-o", "/dev/null", "-c", "/root/farm.jar", "--data-urlencode", f"username={user}",
                "--data-urlencode", f"password={password.strip()}", "http://127.0.0.1/login"])  # fmt: skip

    def get(self, path: str) -> Any:
        return json.loads(self.vm.run(["curl", "-sS", "-b", "/root/farm.jar", f"http://127.0.0.1{path}"]).stdout)

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        out = self.vm.run(["curl", "-sS", "-b", "/root/farm.jar", "-H", "Content-Type: application/json",
                           "-w", "\n%{http_code}", "--data-binary", json.dumps(body),
                           f"http://127.0.0.1{path}"], timeout=120).stdout  # fmt: skip
        text, _, code = out.rpartition("\n")
        return int(code), json.loads(text)

    def found(self, serial: str) -> list[dict[str, Any]]:
        return [f for f in self.get("/api/found")["found"] if f["serial"] == serial]


@pytest.fixture(scope="module")
def farm_page(farm_vm: Vm) -> FarmPage:
    farm_vm.write_file("/etc/octobrix.toml", ADD_CONFIG)
    units = ("octoprint@printer1.service", "octoprint@printer2.service")
    wait_until("the starter-based config applied", lambda: all(main_pid(farm_vm, unit) == 0 for unit in units))
    return FarmPage(farm_vm)


@pytest.fixture(scope="module")
def ender(farm_vm: Vm) -> Iterator[tuple[UsbSerialAdapter, MarlinSim]]:
    yield from cable_out(farm_vm, "PRN0100")


def test_a_plugged_board_is_found_and_added_from_the_page_untouched_until_octoprint(
    farm_vm: Vm, farm_page: FarmPage, ender: tuple[UsbSerialAdapter, MarlinSim]
) -> None:
    adapter, sim = ender
    plugged_at = time.monotonic()
    adapter.plug()
    (item,) = wait_until("the board to be listed as found", lambda: farm_page.found("PRN0100"), timeout=60, every=0.5)
    found_seconds = time.monotonic() - plugged_at
    assert (item["kind"], item["bound_by"], item["match"], item["driver"]) == (
        "printer",
        "serial",
        "PRN0100",
        "ftdi_sio",
    )
    assert 5001 <= item["proposed_port"] < 5010, item
    assert sim.received == b"", "finding it sent nothing to the printer"

    code, answer = farm_page.post("/api/add", {"device": item["id"], "name": "ender"})
    assert (code, answer["ok"]) == (200, True), answer
    assert sim.received == b"", "adding it sent nothing to the printer"
    wait_until(
        "ender Operational",
        lambda: "ender" in status(farm_vm) and printer_state(farm_vm, "ender") == "Operational",
        timeout=SLOW,
    )
    operational_seconds = time.monotonic() - plugged_at
    print(f"\nVM (TCG): plug -> found {found_seconds:.1f} s, plug -> added and Operational {operational_seconds:.1f} s")
    # The first bytes the printer ever got are OctoPrint's handshake.
    assert "M110" in sim.lines[0] or "M115" in sim.lines[0], sim.lines[:3]
    text = farm_vm.read_file("/etc/octobrix.toml").decode()
    assert comment_lines(STARTER) == [ln for ln in comment_lines(text) if ln in comment_lines(STARTER)]
    assert set(comment_lines(STARTER)) <= set(comment_lines(text)), "every comment of the starter file kept"
    assert f'[printers.ender]\nserial = "PRN0100"\nport = {item["proposed_port"]}\n' in text
    assert farm_page.found("PRN0100") == [], "an added board is no longer found"
    cards = {card["name"]: card for card in farm_page.get("/api/farm")["printers"]}
    assert cards["ender"]["state"] == "operational"


def test_forged_unseen_and_hostile_requests_are_refused_and_write_nothing(farm_vm: Vm, farm_page: FarmPage) -> None:
    before = farm_vm.read_file("/etc/octobrix.toml")
    forged = (
        "import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]);"
        ' s.sendall(b\'{"op": "remove", "kind": "printer", "name": "printer1"}\\n\');'
        " print(s.makefile().readline())"
    )
    reply = json.loads(farm_vm.run(["python3", "-c", forged, ADD_SOCKET]).stdout)
    assert reply["ok"] is False and "refused" in reply["error"] and "uid 0" in reply["error"], reply
    mode = farm_vm.run(["stat", "-c", "%U:%G %a", ADD_SOCKET]).stdout.split()
    assert mode == ["root:octobrix_web", "660"]
    code, unseen = farm_page.post("/api/add", {"device": "0123456789abcdef", "name": "ghost"})
    assert code == 409 and "has not seen that device" in unseen["error"] and unseen["hint"], unseen
    code, hostile = farm_page.post("/api/add", {"device": "0123456789abcdef", "name": 'x"]\n[printers.evil'})
    assert code == 409 and "is not a valid name" in hostile["error"], hostile
    code, taken = farm_page.post("/api/remove", {"kind": "printer", "name": "nope"})
    assert code == 409 and "no such entry" in taken["error"], taken
    assert farm_vm.read_file("/etc/octobrix.toml") == before


def test_two_boards_with_one_serial_are_both_proposed_by_usb_port(farm_vm: Vm, farm_page: FarmPage) -> None:
    # No port named: the harness puts them on two ports no other board of this module holds.
    twins = [farm_vm.plug_usb_serial("DUP0001", MarlinSim()) for _ in range(2)]
    try:
        both = wait_until(
            "both twins found", lambda: len(farm_page.found("DUP0001")) == 2 and farm_page.found("DUP0001")
        )
        assert sorted(f["match"] for f in both) == sorted(twin.guest_port for twin in twins)
        for item in both:
            assert item["bound_by"] == "usb_port", item
            assert "also reported by" in item["why_port"] and "follows the cable" in item["port_note"], item
        assert len({f["proposed_name"] for f in both}) == 2 and len({f["proposed_port"] for f in both}) == 2
        assert all(twin.sim.received == b"" for twin in twins), "finding them sent nothing to either board"
    finally:
        for twin in twins:
            twin.remove()


def test_remove_from_the_page_keeps_the_data_then_octobrixctl_add_with_a_plug_brings_it_back(
    farm_vm: Vm, farm_page: FarmPage, ender: tuple[UsbSerialAdapter, MarlinSim]
) -> None:
    adapter, _sim = ender
    code, removed = farm_page.post("/api/remove", {"kind": "printer", "name": "ender"})
    assert (code, removed["ok"]) == (200, True), removed
    wait_until("ender's OctoPrint stopped", lambda: main_pid(farm_vm, "octoprint@ender.service") == 0)
    assert exists(farm_vm, "/var/lib/octobrix/ender/basedir/config.yaml"), "its data is kept"
    adapter.pull()
    farm_vm.sh(
        "rm -f /tmp/add.*; : > /tmp/add.out;"
        " (octobrixctl add --name ender --timeout 600 > /tmp/add.out 2>&1; echo $? > /tmp/add.rc) >/dev/null 2>&1 &"
    )
    wait_until(
        "add to say plug in", lambda: b"Plug in the printer board" in farm_vm.read_file("/tmp/add.out"), timeout=300
    )
    adapter.plug()
    wait_until("add to finish", lambda: exists(farm_vm, "/tmp/add.rc"), timeout=300)
    out = farm_vm.read_file("/tmp/add.out").decode()
    assert farm_vm.read_file("/tmp/add.rc").decode().strip() == "0", out
    assert "added [printers.ender]" in out and "PRN0100" in out, out
    wait_until(
        "ender Operational again",
        lambda: "ender" in status(farm_vm) and printer_state(farm_vm, "ender") == "Operational",
        timeout=SLOW,
    )
    assert '[printers.ender]\nserial = "PRN0100"\n' in farm_vm.read_file("/etc/octobrix.toml").decode()
