"""octobrixd's idle footprint: RSS and CPU time over a minute with 4 printers configured.

    .venv/bin/python -m benchmarks.daemon_idle [--seconds 60]

Runs the real daemon under --root with a real sd_notify socket and a 30 s watchdog, as systemd
would start it, so the only timer is the watchdog. The baseline, measured in the same run, is an
idle `python3 -c 'import time; time.sleep(...)'`: the cost of merely being a Python process.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

CONFIG = "".join(f'[printers.p{i}]\nserial = "PRN000{i}"\nport = {5001 + i}\n\n' for i in range(4))


def measure(argv: list[str], seconds: float, env: dict[str, str]) -> tuple[float, float, int]:
    proc = subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL)
    try:
        time.sleep(5)  # start-up and first apply are not idling
        handle = psutil.Process(proc.pid)
        before = handle.cpu_times()
        time.sleep(seconds)
        after = handle.cpu_times()
        cpu = (after.user + after.system) - (before.user + before.system)
        rss = handle.memory_info().rss
        wakeups = handle.num_ctx_switches().voluntary
        return cpu, rss / 1_048_576, wakeups
    finally:
        proc.terminate()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        config = Path(scratch) / "octobrix.toml"
        config.write_text(CONFIG)
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(str(Path(scratch) / "notify"))
        env = dict(os.environ, NOTIFY_SOCKET=str(Path(scratch) / "notify"), WATCHDOG_USEC="30000000")
        daemon = [sys.executable, "-m", "octobrixd.daemon", "--config", str(config), "--root", f"{scratch}/root"]
        cpu, rss, switches = measure(daemon, args.seconds, env)
        base_cpu, base_rss, _ = measure([sys.executable, "-c", "import time; time.sleep(1e6)"], args.seconds, env)
    per_minute = cpu * 60 / args.seconds
    print(f"octobrixd idle, 4 printers: RSS {rss:.1f} MiB (target <= 40), CPU {per_minute:.3f} s per idle minute "
          f"(target <= 0.1), {switches} voluntary wake-ups in total")  # fmt: skip
    print(f"bare idle python for comparison: RSS {base_rss:.1f} MiB, CPU {base_cpu * 60 / args.seconds:.3f} s/min; "
          f"octobrixd uses {rss / base_rss:.1f}x its memory")  # fmt: skip


if __name__ == "__main__":
    main()
