"""A small printer farm in a systemd container: octobrix installed by its own installer from this
checkout, OctoPrints on the shared network's ports 5000/5001, and printers simulated on ptys.

The container has no udev and no USB, so a simulated Marlin (tests/lab/pty_printer.py) runs inside
it as a transient unit and serves a pty at /dev/octobrix/NAME, owned by the instance's user as the
udev rule would make it. A pty is a "char-pts" device, not "char-ttyUSB"/"char-ttyACM" like a real
adapter, so only that instance also gets `DeviceAllow=char-pts rw`. Used by test_instances.py and
test_print_safety.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

from tests.lab.harness.container import Container, booted
from tests.lab.harness.installed import farm_base, install_checkout
from tests.lab.harness.installs import FRONT_DOOR_PORT, holding_printer_ports
from tests.lab.harness.project import REPO

SIM_DIR = "/opt/labsim"


def simulator_log(name: str) -> str:
    """The file inside the container where pty printer NAME appends every line it receives."""
    return f"/run/lab-{name}.log"


def serve_pty_printer(box: Container, name: str, *, move_seconds: float = 0.0) -> None:
    """A simulated Marlin at /dev/octobrix/NAME (unit lab-printer-NAME), before octobrix is installed.
    move_seconds: how long each move takes, so that a print lasts (MarlinSim.move_seconds)."""
    start_pty_printer(box, name, f"/dev/octobrix/{name}", move_seconds=move_seconds)
    box.write_file(
        f"/etc/systemd/system/octoprint@{name}.service.d/90-lab-pty.conf", "[Service]\nDeviceAllow=char-pts rw\n"
    )


def start_pty_printer(
    box: Container, name: str, link: str, *, user: str | None = None, move_seconds: float = 0.0
) -> None:
    """A simulated Marlin on a pty that LINK points at (unit lab-printer-NAME), run as user (its pty is
    then that user's, as Klipper's klippy.serial is its user's)."""
    for script in ("tests/lab/pty_printer.py", "tests/lab/harness/printer_sim.py"):
        box.copy_in(REPO / script, f"{SIM_DIR}/{Path(script).name}")
    as_user = [f"--uid={user}"] if user else []
    if user:
        box.run(["install", "-o", user, "-m", "644", "/dev/null", simulator_log(name)])
    box.run(["systemd-run", f"--unit=lab-printer-{name}", *as_user, "/usr/bin/python3", f"{SIM_DIR}/pty_printer.py",
             link, simulator_log(name), str(move_seconds)])  # fmt: skip


def moves_gcode(moves: int) -> str:
    """A print of `moves` moves (each lasts the pty printer's move_seconds)."""
    return "G28\nG90\n" + "".join(f"G1 X{i % 200} Y{(i * 7) % 200} F3000\n" for i in range(moves))


@contextlib.contextmanager
def pty_farm(
    workdir: Path,
    config: str,
    pty_printers: Mapping[str, float],
    ports: Iterable[int] = (5000, 5001),
    *,
    front_door_port: int | None = FRONT_DOOR_PORT,
    before_install: Callable[[Container], None] | None = None,
) -> Iterator[Container]:
    """A booted container on the installed layer, with config in /etc/octobrix.toml applied by the
    install command's second run (tests.lab.harness.installed); pty_printers maps
    each simulated printer's name to its move_seconds. Holds the host-wide lock on the printer ports
    and waits until the ports the test's OctoPrints may use are free; front_door_port is the one
    config's [frontdoor] listens on (None when it is off); before_install prepares what the config
    needs in the container (a wheels folder, say)."""
    with (
        holding_printer_ports(ports, front_door_port=front_door_port),
        booted(workdir / "ct", boot_timeout=120, base=farm_base) as box,
    ):
        box.write_file("/etc/octobrix.toml", config)
        for name, move_seconds in pty_printers.items():
            serve_pty_printer(box, name, move_seconds=move_seconds)
        if before_install is not None:
            before_install(box)
        installed = install_checkout(box)
        assert installed.returncode == 0, f"install.sh failed:\n{installed.stdout}\n{installed.stderr}"
        for name in pty_printers:
            # What the udev rule's OWNER= does for a real adapter; the instance started without it.
            box.run(["sh", "-c", f"chown octobrix-{name}:dialout $(readlink -f /dev/octobrix/{name})"])
            box.systemctl("restart", f"octoprint@{name}.service")
        yield box
