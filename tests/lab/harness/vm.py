"""The lab VM: QEMU booting the cached image's own Debian kernel, with real udev and USB hotplug.

Commands run through qemu-guest-agent (no network in the guest: -nic none, unless a test forwards
host ports to it: then QEMU's user networking with restrict=on, which reaches nothing but the
forwarded ports, and nothing outside). Disk writes go to a
throwaway overlay (-snapshot), so every boot starts from the pristine image. Host files reach the
guest through the agent (write_file) or a 9p share of `share_dir` mounted at /mnt/host (copy_in).
A login prompt (root, no password) is on the serial console: `socat -,raw,echo=0 UNIX-CONNECT:<workdir>/serial.sock`.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.lab.harness import build
from tests.lab.harness.container import GUEST_PATH, LabError
from tests.lab.harness.printer_sim import MarlinSim
from tests.lab.harness.procs import REAPER
from tests.lab.harness.qmp import GuestAgent, Qmp, QmpError
from tests.lab.harness.simlink import SimLink, connect_unix

log = logging.getLogger(__name__)

XHCI_BUS = "xhci.0"
# qemu-xhci's first ports are USB 2 (a full-speed usb-serial lands there); the guest numbers the
# controller's USB 2 root hub as bus 1, so QEMU port "2" is the guest's KERNELS=="1-2".
GUEST_USB2_BUS = 1
# QEMU's default of 4 root ports held a module's two boards plus a test's twins only by luck: its
# own choice for a device without a port reuses a freed port last, so it took the port a later
# test named ("usb port 3 not found (in use?)"). Eight ports, and the harness picks them itself.
USB_PORTS = 8


def free_usb_port(held: Iterable[str]) -> str:
    """The lowest root port of the xhci controller that no added adapter holds."""
    taken = set(held)
    for number in range(1, USB_PORTS + 1):
        if str(number) not in taken:
            return str(number)
    raise LabError(f"all {USB_PORTS} USB ports of the VM hold an adapter: remove one first")


# QEMU user networking's defaults, spelled out: the guest's address is where hostfwd delivers.
GUEST_NET = "10.0.2.0/24"
GUEST_ADDRESS = "10.0.2.15"


def accelerator() -> list[str]:
    """KVM only where the CPU advertises it; the nested /dev/kvm of our CI VMs cannot boot Debian."""
    forced = os.environ.get("OCTOBRIX_LAB_ACCEL")
    flags = Path("/proc/cpuinfo").read_text()
    use_kvm = forced == "kvm" or (forced is None and Path("/dev/kvm").exists() and (" vmx" in flags or " svm" in flags))
    if use_kvm:
        return ["-accel", "kvm", "-cpu", "host"]
    return ["-accel", "tcg,thread=multi", "-cpu", "max"]


class Vm:
    def __init__(
        self,
        workdir: Path,
        *,
        memory_mb: int = 2048,
        cpus: int = 2,
        boot_timeout: float = 240.0,
        forward: Mapping[int, int] | None = None,
    ) -> None:
        """forward: {host port on 127.0.0.1: guest TCP port}, e.g. a browser on the host reaching the
        guest's front door. Hold the host ports (installs.holding_printer_ports) while it runs."""
        self.workdir = workdir
        self.forward = dict(forward or {})
        self.memory_mb = memory_mb
        self.cpus = cpus
        self.boot_timeout = boot_timeout
        self.share_dir = workdir / "share"
        self.serial_log = workdir / "serial.log"
        self.serial_socket = workdir / "serial.sock"
        self.image: build.VmImage | None = None
        self.qmp: Qmp | None = None
        self.agent: GuestAgent | None = None
        self.adapters: list[UsbSerialAdapter] = []
        self.boot_seconds = 0.0
        self._proc: subprocess.Popen[bytes] | None = None
        self._ids = itertools.count(1)
        self._share_mounted = False

    # --- lifecycle ---

    def start(self) -> Vm:
        self.image = image = build.vm_image()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.share_dir.mkdir(exist_ok=True)
        qmp_sock, qga_sock = self.workdir / "qmp.sock", self.workdir / "qga.sock"
        append = "root=/dev/vda rw console=ttyS0,115200 panic=1 net.ifnames=0 systemd.show_status=0"
        argv: list[str | Path] = [
            "qemu-system-x86_64", *accelerator(), "-m", str(self.memory_mb), "-smp", str(self.cpus),
            "-nodefaults", "-no-user-config", "-display", "none", "-vga", "none", *self._network(),
            "-no-reboot",  # with panic=1 a guest kernel panic ends QEMU instead of hanging the test
            "-kernel", image.kernel, "-initrd", image.initrd, "-append", append,
            "-drive", f"file={image.image},if=virtio,format=raw,cache=unsafe,snapshot=on",
            "-chardev", f"socket,id=serial0,path={self.serial_socket},server=on,wait=off,logfile={self.serial_log}",
            "-serial", "chardev:serial0",
            "-qmp", f"unix:{qmp_sock},server=on,wait=off",
            "-chardev", f"socket,path={qga_sock},server=on,wait=off,id=qga0",
            "-device", "virtio-serial", "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
            "-virtfs", f"local,path={self.share_dir},mount_tag={build.SHARE_TAG},security_model=none,id=share0",
            "-device", f"qemu-xhci,id=xhci,p2={USB_PORTS},p3={USB_PORTS}",
        ]  # fmt: skip
        started = time.monotonic()
        with (self.workdir / "qemu.log").open("wb") as qemu_log:
            self._proc = REAPER.spawn(argv, stdout=qemu_log)
        try:
            self.qmp = Qmp(qmp_sock)
            self.agent = GuestAgent(qga_sock)
            self._wait_booted(started)
        except BaseException:
            self.stop()
            raise
        self.boot_seconds = time.monotonic() - started
        log.info("VM booted in %.1fs (%s)", self.boot_seconds, image.kernel_version)
        return self

    def _network(self) -> list[str]:
        if not self.forward:
            return ["-nic", "none"]
        rules = "".join(
            f",hostfwd=tcp:127.0.0.1:{host}-{GUEST_ADDRESS}:{guest}" for host, guest in self.forward.items()
        )
        return ["-netdev", f"user,id=net0,restrict=on,net={GUEST_NET}{rules}", "-device", "virtio-net-pci,netdev=net0"]

    def _configure_network(self) -> None:
        """The image has no DHCP client: the address slirp forwards to, set by hand."""
        self.run(["udevadm", "settle"], timeout=60)
        self.run(["ip", "link", "set", "eth0", "up"])
        self.run(["ip", "addr", "add", f"{GUEST_ADDRESS}/24", "dev", "eth0"])

    def _wait_booted(self, started: float) -> None:
        assert self.agent is not None and self._proc is not None
        deadline = started + self.boot_timeout
        while True:
            if self._proc.poll() is not None:
                raise LabError(f"QEMU exited with {self._proc.returncode} while booting:\n{self.console()}")
            if time.monotonic() > deadline:
                raise LabError(f"VM guest agent did not answer within {self.boot_timeout}s:\n{self.console()}")
            try:
                self.agent.sync(timeout=3.0)
                break
            except QmpError:
                continue
        remaining = max(5.0, deadline - time.monotonic())
        state = self.run(["systemctl", "is-system-running", "--wait"], check=False, timeout=remaining).stdout.strip()
        if state == "degraded":
            failed = self.run(["systemctl", "--failed", "--no-legend", "--plain"], check=False).stdout
            log.warning("VM booted degraded; failed units:\n%s", failed)
        elif state != "running":
            raise LabError(f"VM did not finish booting (state {state!r}):\n{self.console()}")
        self._share_mounted = self.run(["mountpoint", "-q", build.SHARE_MOUNT], check=False).returncode == 0
        if self.forward:
            self._configure_network()

    def stop(self) -> None:
        for adapter in list(self.adapters):
            adapter.close_link()
        qmp, agent, self.qmp, self.agent = self.qmp, self.agent, None, None
        if agent is not None:
            with contextlib.suppress(OSError):
                agent.close()
        if self._proc is not None:
            proc, self._proc = self._proc, None

            def quit_qemu() -> None:
                # -snapshot: the guest's disk is thrown away, so there is nothing to shut down cleanly.
                if qmp is not None:
                    with contextlib.suppress(QmpError, OSError):
                        qmp.execute("quit", timeout=5)
                if proc.poll() is None:
                    proc.terminate()

            REAPER.stop(proc, graceful=quit_qemu, grace=10.0)
        if qmp is not None:
            with contextlib.suppress(OSError):
                qmp.close()
        self.adapters.clear()

    def __enter__(self) -> Vm:
        return self.start() if self._proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # --- running things in the guest ---

    def run(
        self,
        argv: Sequence[str],
        *,
        check: bool = True,
        input: str | bytes | None = None,
        timeout: float = 120.0,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv in the guest as root (via the guest agent); text output, like subprocess.run."""
        if self.agent is None:
            raise LabError("VM is not running")
        guest_env = {"PATH": GUEST_PATH, "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb"}
        guest_env.update(env or {})
        stdin = input.encode() if isinstance(input, str) else input
        # The agent cannot kill what it started: let the guest's timeout(1) do it.
        wrapped = ["timeout", "--kill-after=5", str(max(1, math.ceil(timeout))), *argv]
        code, out, err = self.agent.exec(
            wrapped, stdin=stdin, env=[f"{k}={v}" for k, v in guest_env.items()], timeout=timeout + 15
        )
        result = subprocess.CompletedProcess(
            list(argv), code, out.decode(errors="replace"), err.decode(errors="replace")
        )
        if check and code != 0:
            raise subprocess.CalledProcessError(code, list(argv), result.stdout, result.stderr)
        return result

    def sh(self, script: str, *, check: bool = True, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return self.run(["sh", "-c", script], check=check, timeout=timeout)

    def write_file(self, guest_path: str, data: str | bytes, *, mode: int = 0o644) -> None:
        assert self.agent is not None
        self.run(["mkdir", "-p", str(Path(guest_path).parent)])
        self.agent.write_file(guest_path, data.encode() if isinstance(data, str) else data)
        self.run(["chmod", f"{mode:o}", guest_path])

    def read_file(self, guest_path: str) -> bytes:
        assert self.agent is not None
        return self.agent.read_file(guest_path)

    def copy_in(self, src: Path, guest_dest: str) -> None:
        """Copy a host file or folder to guest_dest (the full destination path, not its parent)."""
        if not self._share_mounted:
            if src.is_dir():
                raise LabError("copying a folder needs the 9p share, which is not mounted in the guest")
            self.write_file(guest_dest, src.read_bytes(), mode=src.stat().st_mode & 0o7777)
            return
        staged = self.share_dir / f"copy-{next(self._ids)}"
        if src.is_dir():
            shutil.copytree(src, staged, symlinks=True)
        else:
            shutil.copy2(src, staged)
        try:
            parent = str(Path(guest_dest).parent)
            self.run(["mkdir", "-p", parent])
            self.run(["cp", "-a", "-T", f"{build.SHARE_MOUNT}/{staged.name}", guest_dest])
        finally:
            if staged.is_dir():
                shutil.rmtree(staged)
            else:
                staged.unlink()

    def wait_for_path(self, guest_path: str, *, present: bool = True, timeout: float = 20.0) -> float:
        """Wait in the guest (one agent round trip) until guest_path exists or is gone; returns seconds."""
        test = '[ -e "$1" ] || [ -L "$1" ]' if present else '! { [ -e "$1" ] || [ -L "$1" ]; }'
        script = f'start=$(date +%s.%N); until {test}; do sleep 0.05; done; echo "$start $(date +%s.%N)"'
        result = self.run(["sh", "-c", script, "sh", guest_path], check=False, timeout=timeout)
        if result.returncode != 0:
            state = "appear" if present else "disappear"
            raise TimeoutError(f"{guest_path} did not {state} in the guest within {timeout}s")
        begin, end = (float(x) for x in result.stdout.split())
        return end - begin

    def serial_write(self, device: str, text: str) -> None:
        """Write text plus a newline to a serial port in the guest, as a raw line (no tty echo)."""
        self.run(["sh", "-c", 'stty -F "$1" 115200 raw -echo && printf "%s\\n" "$2" > "$1"', "sh", device, text])

    def serial_ask(self, device: str, command: str, expect: str, timeout: float = 15.0) -> list[str]:
        """Send command to a serial port in the guest and read lines up to the "ok" that follows the
        first line containing expect (earlier lines, e.g. a banner or stale replies, are returned too).
        Uses pyserial in the guest, like OctoPrint does."""
        result = self.run(
            ["python3", "-c", _SERIAL_ASK, device, command, expect, str(timeout)], check=False, timeout=timeout + 10
        )
        if result.returncode != 0:
            raise AssertionError(f"no {expect!r} reply to {command!r} on {device}: {result.stdout}{result.stderr}")
        return result.stdout.splitlines()

    def journal(self, unit: str | None = None, lines: int = 200) -> str:
        argv = ["journalctl", "--no-pager", "-n", str(lines)] + (["-u", unit] if unit else [])
        return self.run(argv, check=False).stdout

    def console(self, lines: int = 60) -> str:
        try:
            text = self.serial_log.read_text(errors="replace")
        except FileNotFoundError:
            return "(no serial log)"
        return "\n".join(text.splitlines()[-lines:])

    # --- USB hotplug ---

    def plug_usb_serial(
        self, serial: str, sim: MarlinSim | None = None, *, port: str | None = None, connect: bool = True
    ) -> UsbSerialAdapter:
        """Add an FTDI USB serial adapter with this serial number, its host side driven by sim.

        port is QEMU's port path on the xhci controller ("2", or "1.3" behind a hub); the guest
        then sees it at usb_port f"{GUEST_USB2_BUS}-{port}". Without one, the lowest port no adapter
        holds (so `guest_port` is always known); a port another adapter holds is refused, naming it.
        The adapter is attached in the guest only while the simulator is connected (connect=False:
        added but the cable is not in yet).
        """
        if port is None:
            port = free_usb_port(a.port for a in self.adapters if a.added)
        adapter = UsbSerialAdapter(self, serial, sim if sim is not None else MarlinSim(), port, next(self._ids))
        adapter.add_device()
        if connect:
            adapter.plug()
        return adapter

    def unplug_all(self) -> None:
        for adapter in list(self.adapters):
            adapter.remove()


class UsbSerialAdapter:
    """A hot-pluggable usb-serial device whose other end is a printer simulator.

    plug()/pull() connect/close the simulator's side of the chardev: QEMU attaches and detaches the
    device with it, like a cable. remove() is device_del: the adapter is gone from the VM.
    """

    def __init__(self, vm: Vm, serial: str, sim: MarlinSim, port: str, number: int) -> None:
        self.vm = vm
        self.serial = serial
        self.sim = sim
        self.port = port
        self.chardev_id = f"usbchr{number}"
        self.device_id = f"usbser{number}"
        self.socket_path = vm.workdir / f"usb{number}.sock"
        self.link: SimLink | None = None
        self.added = False

    @property
    def guest_port(self) -> str:
        """The guest's KERNELS value for this adapter (what `usb_port` in the config matches)."""
        return f"{GUEST_USB2_BUS}-{self.port}"

    def add_device(self) -> None:
        qmp = self._qmp()
        holder = next((a for a in self.vm.adapters if a.added and a.port == self.port and a is not self), None)
        if holder is not None:
            raise LabError(f"USB port {self.port} of the VM is held by {holder!r}: remove() it first or pass no port")
        qmp.execute(
            "chardev-add",
            {
                "id": self.chardev_id,
                "backend": {
                    "type": "socket",
                    "data": {"addr": {"type": "unix", "data": {"path": str(self.socket_path)}},
                             "server": True, "wait": False},
                },
            },
        )  # fmt: skip
        device: dict[str, Any] = {"driver": "usb-serial", "bus": XHCI_BUS, "chardev": self.chardev_id,
                                  "serial": self.serial, "id": self.device_id, "port": self.port}  # fmt: skip
        try:
            qmp.execute("device_add", device)
        except QmpError:
            qmp.execute("chardev-remove", {"id": self.chardev_id})
            raise
        self.added = True
        if self not in self.vm.adapters:
            self.vm.adapters.append(self)

    def plug(self) -> UsbSerialAdapter:
        """Connect the cable: the simulator connects and the guest enumerates the adapter."""
        if not self.added:
            self.add_device()
        if self.link is None or not self.link.connected:
            self.close_link()
            self.link = connect_unix(self.sim, self.socket_path)
        return self

    def pull(self) -> None:
        """Pull the cable: the simulator disconnects and the device detaches from the guest."""
        self.close_link()

    def remove(self) -> None:
        """device_del: the adapter leaves the VM for good (until plug() adds it again)."""
        self.close_link()
        if self.added and self.vm.qmp is not None:
            qmp = self.vm.qmp
            qmp.execute("device_del", {"id": self.device_id})
            qmp.wait_event("DEVICE_DELETED", lambda e: e.get("data", {}).get("device") == self.device_id)
            qmp.execute("chardev-remove", {"id": self.chardev_id})
            self.added = False
        with contextlib.suppress(ValueError):
            self.vm.adapters.remove(self)

    def close_link(self) -> None:
        if self.link is not None:
            self.link.close()
            self.link = None

    def guest_tty(self, timeout: float = 20.0) -> str:
        """The /dev/ttyUSBn the guest made for this adapter (waits for enumeration)."""
        script = (
            'for i in $(seq 200); do for d in /sys/class/tty/ttyUSB*; do [ -e "$d" ] || continue; '
            's=$(cat "$d/device/../../serial" 2>/dev/null); '
            '[ "$s" = "$1" ] && { echo "/dev/${d##*/}"; exit 0; }; done; sleep 0.1; done; exit 1'
        )
        result = self.vm.run(["sh", "-c", script, "sh", self.serial], check=False, timeout=timeout)
        if result.returncode != 0:
            raise TimeoutError(f"no ttyUSB with serial {self.serial!r} appeared in the guest")
        return result.stdout.strip()

    def _qmp(self) -> Qmp:
        if self.vm.qmp is None:
            raise LabError("VM is not running")
        return self.vm.qmp

    def __repr__(self) -> str:
        return f"UsbSerialAdapter(serial={self.serial!r}, port={self.port!r}, plugged={self.link is not None})"


_SERIAL_ASK = """
import sys, time, serial
device, command, expect, timeout = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
seen, lines = False, []
deadline = time.monotonic() + timeout
with serial.Serial(device, 115200, timeout=1) as port:
    port.write(command.encode() + b"\\n")
    while time.monotonic() < deadline:
        line = port.readline().decode(errors="replace").strip()
        if not line:
            continue
        lines.append(line)
        seen = seen or expect in line
        if seen and line.startswith("ok"):
            print("\\n".join(lines))
            sys.exit(0)
print("\\n".join(lines))
sys.exit(1)
"""


def shell_command(vm: Vm) -> str:
    return shlex.join(["socat", "-,raw,echo=0", f"UNIX-CONNECT:{vm.serial_socket}"])
