"""Running octobrixctl against umockdev recordings from a test (see tests/umockbed.py)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
RECORDINGS = REPO / "tests" / "data" / "umockdev"
C270_FORMATS = RECORDINGS / "c270-list-formats-ext.txt"

PRUSA = RECORDINGS / "prusa-mk3-cdc-acm.umockdev"
CREALITY = RECORDINGS / "creality-ch340-no-serial.umockdev"
TWO_CH340 = RECORDINGS / "two-identical-ch340-on-hub.umockdev"
FTDI = RECORDINGS / "ftdi-ft232r.umockdev"
STM32 = RECORDINGS / "stm32-cdc-acm.umockdev"
C270 = RECORDINGS / "logitech-c270-uvc.umockdev"
ALL = [PRUSA, CREALITY, TWO_CH340, FTDI, STM32, C270]
# Cameras that are not on USB: bound by their V4L2 name, not in ALL (ALL is what USB discovery sees).
LOOPBACK = RECORDINGS / "v4l2loopback-virtual.umockdev"
PLATFORM_CAMERA = RECORDINGS / "platform-camera.umockdev"
LOOPBACK_NAME = "Dummy video device (0x0000)"


def umockdev_missing() -> str | None:
    """Why umockdev cannot run from this Python (its GObject bindings), or None."""
    probe = subprocess.run(
        [sys.executable, "-c", "import gi; gi.require_version('UMockdev', '1.0'); from gi.repository import UMockdev"],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        return f"{sys.executable} has no UMockdev bindings (make the venv with --system-site-packages)"
    return None


# Tests that run umockdev fail without it, as every test whose tool is missing does (conftest.umockdev).
needs_umockdev = pytest.mark.usefixtures("umockdev")


def bed(
    devices: Sequence[Path],
    *args: str | Path,
    plug: Sequence[Path] = (),
    formats: dict[str, Path] | None = None,
    prefix: Sequence[str] = (),
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """`octobrixctl ARGS` in a testbed holding these recordings; prefix wraps it (e.g. strace)."""
    argv = [*prefix, "umockdev-wrapper", sys.executable, str(REPO / "tests" / "umockbed.py")]
    for device in devices:
        argv += ["--device", str(device)]
    for device in plug:
        argv += ["--plug", str(device)]
    for node, path in (formats or {}).items():
        argv += ["--formats", f"{node}={path}"]
    argv += [str(arg) for arg in args]
    return subprocess.run(argv, capture_output=True, text=True, check=False, cwd=REPO, timeout=timeout)


def stm32_twin(target: Path) -> Path:
    """The STM32 board's identical twin in root-hub port 7 (ttyACM2): same descriptors and serial.

    Cheap boards built from one firmware image often share a serial number like this.
    """
    text = STM32.read_text(encoding="utf-8")
    for old, new in [
        ("1-5", "1-7"),
        ("usb-0:5", "usb-0:7"),
        ("usb-0_5", "usb-0_7"),
        ("devpath=5\n", "devpath=7\n"),
        ("usb1-port5", "usb1-port7"),
        ("ttyACM1", "ttyACM2"),
        ("dev=166:1\n", "dev=166:2\n"),
        ("MINOR=1\n", "MINOR=2\n"),
        ("001/008", "001/010"),
        ("DEVNUM=008", "DEVNUM=010"),
        ("devnum=8\n", "devnum=10\n"),
        ("dev=189:7\n", "dev=189:9\n"),
        ("MINOR=7\n", "MINOR=9\n"),
    ]:
        assert old in text, old
        text = text.replace(old, new)
    target.write_text(text, encoding="utf-8")
    return target


def loopback_twin(target: Path, video: int = 11) -> Path:
    """A second v4l2loopback device with the first one's V4L2 name (`card_label` given twice, or two
    cameras of one model on one capture card): /dev/videoN beside LOOPBACK's /dev/video10."""
    text = LOOPBACK.read_text(encoding="utf-8")
    for old, new in [
        ("video10", f"video{video}"),
        ("dev=81:10\n", f"dev=81:{video}\n"),
        ("MINOR=10\n", f"MINOR={video}\n"),
    ]:
        assert old in text, old
        text = text.replace(old, new)
    target.write_text(text, encoding="utf-8")
    return target


def stm32_two_ports(target: Path) -> Path:
    """A second serial port on the STM32 board (a second CDC ACM function, interface 02: ttyACM3),
    as boards with a console and a data port have. Load it with STM32: it adds the tty and its
    interface only, under the same USB device 1-5 (same serial number, same port)."""
    tty, interface = _blocks(STM32)[:2]
    text = "\n\n".join([tty, interface]) + "\n"
    for old, new in [
        ("1-5:1.0", "1-5:1.2"),
        ("ttyACM1", "ttyACM3"),
        ("-if00", "-if02"),
        ("usb-0:5:1.0", "usb-0:5:1.2"),
        ("usb-0_5_1_0", "usb-0_5_1_2"),
        ("ID_USB_INTERFACE_NUM=00", "ID_USB_INTERFACE_NUM=02"),
        ("bInterfaceNumber=00", "bInterfaceNumber=02"),
        ("MINOR=1\n", "MINOR=3\n"),
        ("dev=166:1\n", "dev=166:3\n"),
        ("in00", "in02"),
    ]:
        assert old in text, old
        text = text.replace(old, new)
    target.write_text(text, encoding="utf-8")
    return target


# ---------------------------------------------------------------------------------------------
# USB topologies for the bandwidth advisor, made from the recordings above: the C270 moved to
# other ports, behind the GL850G hub of TWO_CH340, or onto a second (EHCI) controller.


def _blocks(path: Path) -> list[str]:
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if not line.startswith("#")]
    return [block.strip() for block in "\n".join(lines).split("\n\n") if block.strip()]


def _relink_drivers(block: str) -> str:
    """A sysfs driver link climbs to /sys from its device's own depth: keep it right after a move."""
    sys_path = block.split("\n", 1)[0].removeprefix("P: ").strip()
    depth = len(sys_path.strip("/").split("/"))
    out = []
    for line in block.splitlines():
        if not line.startswith("L: driver="):
            out.append(line)
            continue
        target = line.removeprefix("L: driver=")
        while target.startswith("../"):
            target = target[3:]
        out.append("L: driver=" + "../" * depth + target)
    return "\n".join(out)


def _ehci(text: str, bus: int) -> str:
    """Move xHCI controller 0000:00:14.0 / bus 1 to an EHCI controller 0000:00:1d.0 / bus N."""
    for old, new in [
        ("0000:00:14.0", "0000:00:1d.0"),
        ("0000_00_14_0", "0000_00_1d_0"),
        ("../1-0:1.0/usb1-port", f"../{bus}-0:1.0/usb{bus}-port"),
        ("/usb1", f"/usb{bus}"),
        ("BUSNUM=001", f"BUSNUM={bus:03d}"),
        ("busnum=1\n", f"busnum={bus}\n"),
        ("bus/usb/001/", f"bus/usb/{bus:03d}/"),
        ("xhci_hcd", "ehci-pci"),
        ("xhci-hcd", "ehci_hcd"),
        ("xHCI", "EHCI"),
        ("Cannon Lake PCH USB 3.1 EHCI Host Controller", "82801 USB2 Enhanced Host Controller"),
        ("PCI_CLASS=C0330", "PCI_CLASS=C0320"),
        ("class=0x0c0330", "class=0x0c0320"),
    ]:
        text = text.replace(old, new)
    return text


def c270_at(
    target: Path, port: str, serial: str, video: int, devnum: int, *, via_hub: bool = False, ehci: bool = False
) -> Path:
    """The C270 recording moved to `port` ("1-3.2" behind the hub in 1-3 when via_hub; "3-1" on bus 3
    with ehci) with its own serial number, /dev/videoN pair and USB device number."""
    bus, _, path = port.partition("-")
    assert bus == ("3" if ehci else "1"), "the recordings' controllers: xHCI bus 1, EHCI bus 3"
    parent = "usb1/" + port.rsplit(".", 1)[0] + "/" if via_hub else "usb1/"
    # sysfs "port" link: the parent hub's interface and its port, e.g. 1-3:1.0/1-3-port2 or 1-0:1.0/usb1-port6.
    hub = port.rsplit(".", 1)[0]
    port_link = f"../{hub}:1.0/{hub}-port{port.rsplit('.', 1)[1]}" if via_hub else f"../1-0:1.0/usb1-port{path}"
    blocks = []
    for original in _blocks(C270):
        if "/1-6" not in original.split("\n", 1)[0]:
            # The controller and its root hub: shared with the other recordings.
            blocks.append(_ehci(original, 3) if ehci else original)
            continue
        block = original
        for old, new in [
            ("usb1/1-6", f"{parent}1-6"),
            ("1-6", port),
            ("usb-0:6", f"usb-0:{path}"),
            ("usb-0_6", "usb-0_" + path.replace(".", "_")),
            ("8D6E3B10", serial),
            ("devpath=6\n", f"devpath={path}\n"),
            ("port=../1-0:1.0/usb1-port6", "port=" + port_link),
            ("001/009", f"001/{devnum:03d}"),
            ("DEVNUM=009", f"DEVNUM={devnum:03d}"),
            ("devnum=9\n", f"devnum={devnum}\n"),
            ("dev=189:8\n", f"dev=189:{devnum - 1}\n"),
            ("MINOR=8\n", f"MINOR={devnum - 1}\n"),
            ("video1", f"video{video + 1}"),
            ("dev=81:1\n", f"dev=81:{video + 1}\n"),
            ("MINOR=1\n", f"MINOR={video + 1}\n"),
            ("video0", f"video{video}"),
            ("dev=81:0\n", f"dev=81:{video}\n"),
            ("MINOR=0\n", f"MINOR={video}\n"),
        ]:
            block = block.replace(old, new)
        moved = _relink_drivers(block + "\n")
        blocks.append(_ehci(moved, 3) if ehci else moved)
    if via_hub:
        blocks += [b for b in _blocks(TWO_CH340) if b.startswith("P: /devices/pci0000:00/0000:00:14.0/usb1/1-3\n")]
    target.write_text("\n\n".join(b.strip() for b in blocks) + "\n", encoding="utf-8")
    return target


def three_c270_on_a_hub(folder: Path) -> list[Path]:
    """Three C270s in ports 1-3.1, 1-3.2 and 1-3.3 of one USB 2 hub: /dev/video0, video2, video4."""
    return [
        c270_at(folder / f"c270-hub-{n}.umockdev", f"1-3.{n}", f"CAMHUB{n}", 2 * (n - 1), 10 + n, via_hub=True)
        for n in (1, 2, 3)
    ]


def c270_per_bus(folder: Path) -> list[Path]:
    """One C270 on the xHCI bus 1 (port 1-6, /dev/video0) and one on an EHCI bus 3 (port 3-1, /dev/video2)."""
    return [C270, c270_at(folder / "c270-ehci.umockdev", "3-1", "CAMEHCI1", 2, 5, ehci=True)]
