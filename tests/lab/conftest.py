"""Fixtures of the test lab (see tests/lab/README.md).

- `container` (function scope): a pristine systemd-nspawn container booted with real systemd.
- `vm` (function scope view of one VM per session): QEMU with the image's Debian kernel, real
  udev, USB hotplug. The VM is shared by the session's tests: each test's USB adapters are removed
  when it ends, but files it wrote in the guest stay. A test that must start from a clean guest
  uses `fresh_vm` (a VM of its own; ~25 s more).
- `printer_sim` (function scope): a MarlinSim; plug it with vm.plug_usb_serial(...) or
  serve it on a pty with `printer_pty`.

Every test using these is marked `lab` automatically, so `pytest -m "not lab"` never boots anything.
Every lab test is in one xdist group, so `-n 2 --dist loadgroup` (tests/run) runs them one after
the other on one worker while the unit tests use the other.
Lab tests need root: without it they fail (never skip) with the reason.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Generator, Iterator
from types import FrameType

import pytest

from tests.conftest import require_programs
from tests.lab.harness.container import Container
from tests.lab.harness.offline_vm import SharedVm
from tests.lab.harness.printer_sim import MarlinSim
from tests.lab.harness.procs import lab_tempdir, sweep_stale
from tests.lab.harness.simlink import PtyLink, open_pty
from tests.lab.harness.vm import Vm

log = logging.getLogger(__name__)

LAB_FIXTURES = {"container", "vm", "fresh_vm", "lab_vm", "lab_ready"}
# The xdist groups (lanes) of the lab tests: see pytest_collection_modifyitems.
VM_LANE, CONTAINER_LANE = "lab-vm", "lab-containers"
HOST_TOOLS = ("systemd-nspawn", "debootstrap", "qemu-system-x86_64", "nsenter", "mkfs.ext4", "mount")


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    # SIGTERM/SIGHUP (a CI timeout, a closed terminal) would kill pytest without running any
    # finalizer; as KeyboardInterrupt, fixtures tear down and the atexit reaper runs.
    raise KeyboardInterrupt(f"received signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, _interrupt)


# First: -m "not lab" must see the marker, and xdist must see the group (it names the item after it).
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    grouped = config.pluginmanager.hasplugin("xdist")
    for item in items:
        if LAB_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.lab)
        if grouped and item.get_closest_marker("lab") is not None:
            # Under `-n N --dist loadgroup` (tests/run) the lab runs in two lanes, each on one worker
            # in file order: the VM's tests (one TCG guest at a time, about one core) beside the
            # containers' (which share the host's ports, held by the port locks).
            uses_vm = "lab_vm" in getattr(item, "fixturenames", ())
            item.add_marker(pytest.mark.xdist_group(VM_LANE if uses_vm else CONTAINER_LANE))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    # Lets fixtures know at teardown whether their test failed, to attach guest logs.
    report = yield
    setattr(item, f"lab_report_{report.when}", report)
    return report


def _failed(request: pytest.FixtureRequest) -> bool:
    report = getattr(request.node, "lab_report_call", None)
    return bool(report is not None and report.failed)


@pytest.fixture(scope="session")
def lab_ready() -> None:
    """Fail (not skip) with the reason when this machine cannot run the lab."""
    if os.geteuid() != 0:
        pytest.fail(
            "lab tests need root (systemd-nspawn, mount, QEMU): run the suite as root, "
            "or deselect them with -m 'not lab'",
            pytrace=False,
        )
    sweep_stale()
    require_programs(*HOST_TOOLS, deps="lab.sh")


# --- container -----------------------------------------------------------------------------


@pytest.fixture
def container(lab_ready: None, request: pytest.FixtureRequest) -> Iterator[Container]:
    """A freshly booted container on a pristine copy of the lab rootfs; stopped after the test."""
    box = Container(lab_tempdir("ct") / "ct")
    request.addfinalizer(box.stop)
    box.start()
    yield box
    if _failed(request):
        print(f"--- container journal ({box.name}) ---\n{box.journal(lines=150)}")


# --- VM ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def lab_vm(lab_ready: None, request: pytest.FixtureRequest) -> Iterator[SharedVm]:
    holder = SharedVm()
    request.addfinalizer(holder.stop)
    yield holder


def _vm_teardown(vm: Vm, request: pytest.FixtureRequest) -> None:
    if _failed(request) and vm.running:
        with contextlib.suppress(Exception):
            print(f"--- VM journal ---\n{vm.journal(lines=150)}")
        print(f"--- VM serial console ---\n{vm.console(lines=40)}")
    if vm.running:
        vm.unplug_all()


@pytest.fixture
def vm(lab_vm: SharedVm, request: pytest.FixtureRequest) -> Iterator[Vm]:
    """The session's VM; USB adapters the test plugged are removed afterwards."""
    machine = lab_vm.get()
    yield machine
    _vm_teardown(machine, request)


@pytest.fixture
def fresh_vm(lab_vm: SharedVm, request: pytest.FixtureRequest) -> Iterator[Vm]:
    """A VM of the test's own, booted from the pristine image and stopped afterwards."""
    # Two TCG guests on two cores would slow both down: the shared one reboots when next needed.
    lab_vm.stop()
    machine = Vm(lab_tempdir("vm"))
    request.addfinalizer(machine.stop)
    machine.start()
    yield machine
    _vm_teardown(machine, request)


# --- printer simulator ---------------------------------------------------------------------


@pytest.fixture
def printer_sim() -> MarlinSim:
    """A simulated Marlin printer (state only; attach with vm.plug_usb_serial or printer_pty)."""
    return MarlinSim()


@pytest.fixture
def printer_pty(printer_sim: MarlinSim) -> Iterator[PtyLink]:
    """printer_sim served on a pty: open link.slave_path like a printer's serial port."""
    link = open_pty(printer_sim)
    yield link
    link.close()
