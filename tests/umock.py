"""Running octobrixctl against umockdev recordings from a test (see tests/umockbed.py)."""

from __future__ import annotations

import shutil
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


def _umockdev_missing() -> str | None:
    if shutil.which("umockdev-wrapper") is None:
        return "umockdev-wrapper is not installed (tests/deps/devices.sh installs it)"
    probe = subprocess.run(
        [sys.executable, "-c", "import gi; gi.require_version('UMockdev', '1.0'); from gi.repository import UMockdev"],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        return f"{sys.executable} has no UMockdev bindings (make the venv with --system-site-packages)"
    return None


_MISSING = _umockdev_missing()
needs_umockdev = pytest.mark.skipif(_MISSING is not None, reason=_MISSING or "")


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
