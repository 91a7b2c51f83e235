"""`octobrixctl status` wall time with 1 and 16 printers, in a real systemd container (the lab's).

    sudo .venv/bin/python -m benchmarks.status [--printers 1 16]

Each farm is installed with packaging/install.sh and every printer is a running OctoPrint on the
virtual printer, so status really asks systemd and every OctoPrint. The baseline, measured in the
same container, is the obvious way: one `systemctl show` per unit.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from tests.lab.harness.container import Container, booted
from tests.lab.harness.farm import install_checkout as install_octobrix

RUNS = 7


def farm_config(printers: int) -> str:
    return "".join(f"[printers.p{i}]\nvirtual = true\nport = {5100 + i}\n\n" for i in range(printers))


def median_seconds(box: Container, argv: list[str]) -> float:
    samples = []
    for _ in range(RUNS):
        started = time.perf_counter()
        box.run(argv)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def wait_operational(box: Container, printers: int, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = box.run(["octobrixctl", "status"], check=False).stdout
        if out.count("Operational") == printers:
            return
        time.sleep(5)
    raise RuntimeError(f"not every printer became Operational:\n{out}")


def measure(printers: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory(prefix="octobrix-bench-") as scratch, booted(Path(scratch) / "ct") as box:
        box.write_file("/etc/octobrix.toml", farm_config(printers))
        installed = install_octobrix(box)
        if installed.returncode != 0:
            raise RuntimeError(installed.stderr)
        wait_operational(box, printers)
        ours = median_seconds(box, ["octobrixctl", "status"])
        units = [f"octoprint@p{i}.service" for i in range(printers)]
        script = "; ".join(f"systemctl show {unit} >/dev/null" for unit in units)
        per_unit = median_seconds(box, ["sh", "-c", script])
        return ours, per_unit


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--printers", type=int, nargs="+", default=[1, 16])
    args = parser.parse_args()
    for count in args.printers:
        ours, baseline = measure(count)
        print(
            f"status with {count:2d} running printers: {ours:5.2f} s (median of {RUNS}); "
            f"one `systemctl show` per unit alone: {baseline:5.2f} s (ratio {baseline / ours:4.2f})"
        )


if __name__ == "__main__":
    main()
