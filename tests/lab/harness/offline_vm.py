"""The session's VM (one TCG guest at a time: two would share the two cores), and octobrix installed
in it the offline farm's way, once per session.

The VM has no network, so `packaging/install.sh --wheels DIR` installs from a folder of wheels built
on the host, and the config's `wheels` key makes instances install OctoPrint from it too. The first
module that asks for the farm VM pays the boot and the install, over an empty farm; each module then
writes its config and runs install.sh again (its second run: octobrix is in place, the config is
applied and the services started), and at its end the farm is emptied again: the services off, an
empty farm applied (its printers' and cameras' units stopped and gone), no config. What else a module
changes in the guest it undoes itself, as the lab's rules say.

A module that needs the plain VM (the `vm` fixture) gets one without octobrix: the farm VM is stopped
and a plain one booted, and the other way round.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Iterator

from tests.lab.harness.installs import OCTOBRIX_SERVICES, holding_printer_ports
from tests.lab.harness.procs import lab_tempdir
from tests.lab.harness.project import WHEELS_IN_GUEST, install_offline, run_offline_install
from tests.lab.harness.vm import Vm
from tests.lab.harness.wheelhouse import wheelhouse

log = logging.getLogger(__name__)

# The farm VM's front door for a browser on the host: host 127.0.0.1:FARM_DOOR -> the guest's port 80.
FARM_DOOR = 8660
# The VM modules' printers' own origins on the front door, forwarded as they are (the farm page sends
# the browser to the same port number on the same host): set as `door_port` in their configs, apart
# from every port a container test's printers use (the containers share the host's network).
PRINTER_DOORS = (8661,)
EMPTY_FARM = f'[octobrix]\nwheels = "{WHEELS_IN_GUEST}"\n'


class SharedVm:
    """The session's VM: plain (`get`) or with octobrix installed (`farm`), booted on first use and
    again if a test left it dead or the other kind is wanted."""

    def __init__(self) -> None:
        self.vm: Vm | None = None
        self.installed = False
        self._holding = contextlib.ExitStack()

    def get(self) -> Vm:
        """The plain VM: the image as built, without octobrix."""
        if self.installed:
            self.stop()
        return self._running()

    def farm(self, install_timeout: float) -> Vm:
        """The VM with octobrix installed over an empty farm (its services off, no config)."""
        if self.installed and self.vm is not None and self.vm.running:
            return self.vm
        self.stop()
        # The forwarded port is held host-wide while this VM runs, like a container's printer ports.
        self._holding.enter_context(holding_printer_ports([FARM_DOOR, *PRINTER_DOORS], front_door_port=None))
        machine = self._running(forward={FARM_DOOR: 80, **{port: port for port in PRINTER_DOORS}})
        workdir = machine.workdir
        try:
            machine.write_file("/etc/octobrix.toml", EMPTY_FARM)
            install_offline(machine, workdir, wheelhouse(), timeout=install_timeout)
            self._empty(machine)
        except BaseException:
            if machine.running:
                print(f"--- VM journal (installing octobrix) ---\n{machine.journal(lines=150)}")
            self.stop()
            raise
        self.installed = True
        return machine

    def empty_farm(self) -> None:
        """After a farm module: back to octobrix installed over an empty farm, or a VM that boots anew."""
        machine = self.vm
        if machine is None or not self.installed:
            return
        try:
            if not machine.running:
                raise RuntimeError("the VM is not running")
            self._empty(machine)
        except Exception as error:
            log.warning("could not empty the farm VM (%s); the next module boots a new one", error)
            self.stop()

    def _empty(self, machine: Vm) -> None:
        machine.run(["systemctl", "disable", "--now", *OCTOBRIX_SERVICES], timeout=300)
        machine.write_file("/etc/octobrix.toml", EMPTY_FARM)
        emptied = machine.run(["octobrixctl", "apply"], check=False, timeout=600)
        if emptied.returncode != 0:
            raise RuntimeError(f"apply of an empty farm failed: {emptied.stdout}\n{emptied.stderr}")
        machine.run(["rm", "-f", "/etc/octobrix.toml"])

    def _running(self, *, forward: dict[int, int] | None = None) -> Vm:
        if self.vm is not None and not self.vm.running:
            log.warning("the shared lab VM died; booting a new one")
            self.stop()
        if self.vm is None:
            self.vm = Vm(lab_tempdir("vm"), forward=forward)
            self.vm.start()
        return self.vm

    def stop(self) -> None:
        if self.vm is not None:
            workdir = self.vm.workdir
            self.vm.stop()
            self.vm = None
            shutil.rmtree(workdir, ignore_errors=True)
        self.installed = False
        self._holding.close()


@contextlib.contextmanager
def offline_farm_vm(shared: SharedVm, config: str, *, install_timeout: float) -> Iterator[Vm]:
    """The session's farm VM with config as /etc/octobrix.toml, applied by install.sh's second run;
    the farm emptied again afterwards. A failure before the module's tests run (the install, or the
    caller's own set-up inside the with block) prints the guest's journal."""
    machine = shared.farm(install_timeout)
    try:
        machine.write_file("/etc/octobrix.toml", config)
        run_offline_install(machine, timeout=install_timeout)
        yield machine
    except BaseException:
        if machine.running:
            print(f"--- VM journal ---\n{machine.journal(lines=150)}")
        raise
    finally:
        shared.empty_farm()
