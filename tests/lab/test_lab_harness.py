"""The lab's own promises: pristine containers that leave nothing behind, and the VM's file and USB helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.lab.harness.container import Container, LabError
from tests.lab.harness.printer_sim import MarlinSim
from tests.lab.harness.procs import lab_tempdir
from tests.lab.harness.vm import Vm

pytestmark = pytest.mark.lab


def pids_in_namespace(leader: int) -> set[int]:
    """Host pids of every process in the pid namespace whose init is leader."""
    namespace = Path(f"/proc/{leader}/ns/pid").readlink()
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "ns/pid").readlink() == namespace:
                    found.add(int(entry.name))
            except OSError:
                continue
    return found


def test_container_is_pristine_and_leaves_nothing_running(lab_ready: None) -> None:
    workdir = lab_tempdir("ct") / "ct"
    box = Container(workdir)
    with box:
        assert not box.path("/etc/lab-was-here").exists(), "a previous container's change leaked into the rootfs"
        box.write_file("/etc/lab-was-here", "yes\n")
        # A service and a stray background process, as a test might leave them.
        box.run(["systemd-run", "--unit=lab-sleeper", "sleep", "1000"])
        box.run(["sh", "-c", "setsid sleep 1000 >/dev/null 2>&1 < /dev/null &"])
        inside = pids_in_namespace(box.leader)
        assert len(inside) >= 3
    for pid in inside:
        assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    assert not workdir.exists()
    assert str(workdir) not in Path("/proc/self/mountinfo").read_text()

    with Container(lab_tempdir("ct") / "ct") as second:
        assert not second.path("/etc/lab-was-here").exists()


def test_vm_files_in_and_out(vm: Vm, tmp_path: Path) -> None:
    payload = os.urandom(300_000)
    vm.write_file("/tmp/lab/blob", payload, mode=0o600)
    assert vm.read_file("/tmp/lab/blob") == payload
    assert vm.run(["stat", "-c", "%a", "/tmp/lab/blob"]).stdout.strip() == "600"

    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub/file.txt").write_text("hello\n")
    (tree / "run.sh").write_text("#!/bin/sh\necho ran\n")
    (tree / "run.sh").chmod(0o755)
    vm.copy_in(tree, "/tmp/lab/tree")
    assert vm.run(["/tmp/lab/tree/run.sh"]).stdout == "ran\n"
    assert vm.read_file("/tmp/lab/tree/sub/file.txt") == b"hello\n"
    vm.run(["rm", "-rf", "/tmp/lab"])

    failed = vm.run(["sh", "-c", "echo out; echo err >&2; exit 3"], check=False)
    assert (failed.returncode, failed.stdout, failed.stderr) == (3, "out\n", "err\n")
    assert vm.run(["cat"], input="piped\n").stdout == "piped\n"


def test_usb_adapter_lifecycle(vm: Vm) -> None:
    sim = MarlinSim()
    adapter = vm.plug_usb_serial("LIFECYCLE1", sim, port="3", connect=False)
    by_id = "/dev/serial/by-id/usb-QEMU_QEMU_USB_SERIAL_LIFECYCLE1-if00-port0"
    vm.run(["udevadm", "settle"])
    assert vm.run(["test", "-e", by_id], check=False).returncode != 0, "attached before the cable was in"
    adapter.plug()
    vm.wait_for_path(by_id)
    assert adapter.guest_tty().startswith("/dev/ttyUSB")
    adapter.pull()
    vm.wait_for_path(by_id, present=False)
    adapter.remove()  # device_del of an adapter whose cable is out
    assert adapter not in vm.adapters
    adapter.plug()  # adds it again
    vm.wait_for_path(by_id)
    vm.serial_write(by_id, "M105")
    sim.wait_for_command("M105")
    assert sim.connections == 2


def test_usb_adapters_without_a_port_take_free_ones_and_a_held_port_is_refused(vm: Vm) -> None:
    named = vm.plug_usb_serial("PORTS-A", MarlinSim(), port="1")
    picked = [vm.plug_usb_serial(f"PORTS-{n}", MarlinSim()) for n in ("B", "C")]
    assert [a.port for a in picked] == ["2", "3"], picked
    for adapter in (named, *picked):
        sysfs = f"/sys/bus/usb/devices/{adapter.guest_port}/serial"
        vm.wait_for_path(sysfs)
        assert vm.read_file(sysfs).decode().strip() == adapter.serial
    with pytest.raises(LabError, match=r"USB port 2 of the VM is held by .*PORTS-B"):
        vm.plug_usb_serial("PORTS-D", MarlinSim(), port="2")
    picked[0].remove()
    assert vm.plug_usb_serial("PORTS-E", MarlinSim()).port == "2", "a freed port is taken again first"
