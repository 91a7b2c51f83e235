"""Real udev in the VM applies octobrix's rendered rules to hot-plugged USB serial printers.

printer1 is matched by its USB serial number wherever it is plugged; printer2 by the port it is
plugged into, whatever board is on it. The adapters are QEMU usb-serial devices (FTDI 0403:6001)
whose other end is a simulated Marlin printer on the host, so bytes written to
/dev/octobrix/<name> in the guest are checked where they arrive: at the printer.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.harness.printer_sim import MarlinSim
from tests.lab.harness.project import render
from tests.lab.harness.vm import Vm

pytestmark = pytest.mark.lab

# QEMU port "2" on the xhci controller is the guest's usb_port (KERNELS) "1-2": its USB 2 root
# hub is bus 1. UsbSerialAdapter.guest_port says so too, and the test checks it against sysfs.
PRINTER2_QEMU_PORT = "2"
CONFIG = """\
[printers.printer1]
serial = "PRN0001"
port = 5001

[printers.printer2]
usb_port = "1-2"
port = 5002
"""
RULES = "/etc/udev/rules.d/99-octobrix.rules"
LINK1, LINK2 = "/dev/octobrix/printer1", "/dev/octobrix/printer2"


@pytest.fixture
def octobrix_rules(vm: Vm, tmp_path: Path) -> Iterator[Path]:
    """The rendered rules and users installed in the (shared) VM; removed again afterwards."""
    root = render(CONFIG, tmp_path)
    # Users first: udevd resolves OWNER= when it loads the rules, and drops an unknown user for
    # good (until the next reload); it may load them as soon as the file appears.
    vm.copy_in(root / "etc/sysusers.d/octobrix.conf", "/etc/sysusers.d/octobrix.conf")
    vm.run(["systemd-sysusers"])
    vm.copy_in(root / RULES.lstrip("/"), RULES)
    vm.run(["udevadm", "control", "--reload"])
    yield root
    vm.run(["rm", "-f", RULES, "/etc/sysusers.d/octobrix.conf"])
    vm.run(["udevadm", "control", "--reload"])


def link_target(vm: Vm, link: str) -> str:
    return vm.run(["readlink", "-f", link]).stdout.strip()


def exists(vm: Vm, path: str) -> bool:
    return vm.run(["test", "-e", path], check=False).returncode == 0


def test_printer_matched_by_serial_number(vm: Vm, octobrix_rules: Path) -> None:
    sim = MarlinSim(uuid="2f0c1a66-prn0001", machine_type="Sim i3")
    adapter = vm.plug_usb_serial("PRN0001", sim, port="1")
    vm.wait_for_path(LINK1, timeout=20)
    tty = adapter.guest_tty()
    assert link_target(vm, LINK1) == tty
    assert not exists(vm, LINK2), "a serial-matched board must not take the port-matched name"

    # The rule's other effects: the instance's user owns the node, ModemManager keeps off it.
    owner = vm.run(["stat", "-c", "%U:%G %a", tty]).stdout.split()
    assert owner == ["octobrix-printer1:dialout", "660"]
    props = vm.run(["udevadm", "info", "--query=property", tty]).stdout.splitlines()
    assert "ID_MM_DEVICE_IGNORE=1" in props
    assert "OCTOBRIX_NAME=printer1" in props

    # Bytes written to the stable name reach the printer, and its answers come back.
    vm.serial_write(LINK1, "M117 hello from the guest")
    assert sim.wait_for_command("M117", timeout=10) == "M117 hello from the guest"
    reply = vm.serial_ask(LINK1, "M115", expect="FIRMWARE_NAME")
    assert any("UUID:2f0c1a66-prn0001" in line for line in reply), reply

    # Pull the cable: the link goes; plug it back: it returns.
    adapter.pull()
    vm.wait_for_path(LINK1, present=False, timeout=20)
    adapter.plug()
    vm.wait_for_path(LINK1, timeout=20)

    # Matched by serial, the printer keeps its name on any other port.
    adapter.remove()
    vm.wait_for_path(LINK1, present=False, timeout=20)
    moved = vm.plug_usb_serial("PRN0001", sim, port="3")
    vm.wait_for_path(LINK1, timeout=20)
    assert link_target(vm, LINK1) == moved.guest_tty()
    vm.serial_write(LINK1, "G28")
    assert sim.wait_for_command("G28", timeout=10) == "G28"
    moved.remove()
    vm.wait_for_path(LINK1, present=False, timeout=20)


def test_printer_matched_by_usb_port(vm: Vm, octobrix_rules: Path) -> None:
    first, second = MarlinSim(), MarlinSim()
    adapter = vm.plug_usb_serial("BOARD-A", first, port=PRINTER2_QEMU_PORT)
    vm.wait_for_path(LINK2, timeout=20)
    tty = adapter.guest_tty()
    assert link_target(vm, LINK2) == tty
    assert not exists(vm, LINK1)
    kernels = vm.run(["udevadm", "info", "--attribute-walk", tty]).stdout
    assert f'KERNELS=="{adapter.guest_port}"' in kernels
    assert adapter.guest_port == "1-2"

    vm.serial_write(LINK2, "M105")
    first.wait_for_command("M105", timeout=10)
    assert "M105" not in second.commands

    # Pull and re-plug the same board (cable out, cable in).
    adapter.pull()
    vm.wait_for_path(LINK2, present=False, timeout=20)
    adapter.plug()
    vm.wait_for_path(LINK2, timeout=20)

    # Another board on that port takes the name: the name follows the port, not the board.
    adapter.remove()
    vm.wait_for_path(LINK2, present=False, timeout=20)
    other = vm.plug_usb_serial("BOARD-B", second, port=PRINTER2_QEMU_PORT)
    vm.wait_for_path(LINK2, timeout=20)
    vm.serial_write(LINK2, "M115")
    second.wait_for_command("M115", timeout=10)
    assert "M115" not in first.commands

    # The same board on another port is not printer2.
    other.remove()
    vm.wait_for_path(LINK2, present=False, timeout=20)
    elsewhere = vm.plug_usb_serial("BOARD-B", second, port="4")
    elsewhere.guest_tty()
    vm.run(["udevadm", "settle", "--timeout=10"])
    assert not exists(vm, LINK2)
