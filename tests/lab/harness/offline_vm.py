"""A VM of a test module's own with octobrix installed the offline farm's way: the VM has no
network, so `packaging/install.sh --wheels DIR` installs from a folder of wheels built on the host,
and the config's `wheels` key makes instances install OctoPrint from it too."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator, Mapping
from typing import Protocol

from tests.lab.harness.installs import holding_printer_ports
from tests.lab.harness.procs import lab_tempdir
from tests.lab.harness.project import install_offline
from tests.lab.harness.vm import Vm
from tests.lab.harness.wheelhouse import wheelhouse


class Stoppable(Protocol):
    """The session's shared VM (conftest's SharedVm): it boots again when next needed."""

    def stop(self) -> None: ...


@contextlib.contextmanager
def offline_farm_vm(
    shared: Stoppable, config: str, *, kind: str, install_timeout: float, forward: Mapping[int, int] | None = None
) -> Iterator[Vm]:
    """A booted VM with config as /etc/octobrix.toml and this checkout installed; stopped and
    removed afterwards. A failure before the module's tests run (the install, or the caller's own
    set-up inside the with block) prints the guest's journal. forward: host loopback port -> guest
    port (held host-wide while the VM runs)."""
    # Unix socket paths (QMP, agent, USB) must stay short: not under pytest's deep basetemp.
    workdir = lab_tempdir(kind)
    # Two TCG guests on two cores slow both: the shared VM boots again when next needed.
    shared.stop()
    vm = Vm(workdir, forward=dict(forward or {}))
    holding = contextlib.ExitStack()
    try:
        if forward:
            holding.enter_context(holding_printer_ports(list(forward), front_door_port=None))
        vm.start()
        vm.write_file("/etc/octobrix.toml", config)
        install_offline(vm, workdir, wheelhouse(), timeout=install_timeout)
        yield vm
    except BaseException:
        if vm.running:
            print(f"--- VM journal ---\n{vm.journal(lines=150)}")
        raise
    finally:
        vm.stop()
        holding.close()
        shutil.rmtree(workdir, ignore_errors=True)
