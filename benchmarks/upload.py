"""A slicer's upload-and-print through the front door against the printer's own port: a 200 MB
G-code file sent as PrusaSlicer and Cura send it (multipart, `select` and `print` set, the API key in
X-Api-Key), timed until OctoPrint answers; then the print is cancelled and the file deleted. Both
ways in one lab container in the same run, alternating, so load from elsewhere hits both alike.

    sudo .venv/bin/python -m benchmarks.upload [--megabytes 200] [--rounds 3]

Reports each way's median seconds and MB/s, and the ratio (front door / own port).
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from octobrixd.config.model import default_door_port
from tests.lab.harness.container import Container, booted
from tests.lab.harness.installed import farm_base, install_checkout
from tests.lab.harness.installs import holding_printer_ports, stream_upload, wait_operational

NAME, PORT = "bench-upload", 5500
DOOR = default_door_port(PORT)


def upload(port: int, key: str, size: int) -> tuple[float, str]:
    """Seconds from the first byte sent to OctoPrint's answer, and the file's name."""
    filename = f"bench-{uuid.uuid4().hex[:8]}.gcode"
    status, body, seconds = stream_upload(port, key, filename, size, print_it=True)
    if status != 201:
        raise SystemExit(f"upload to :{port} answered {status}: {body[:300]!r}")
    return seconds, filename


def api(port: int, key: str, method: str, path: str, body: dict[str, str] | None = None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    data = json.dumps(body).encode() if body is not None else None
    conn.request(method, path, body=data, headers={"X-Api-Key": key, "Content-Type": "application/json"})
    status = conn.getresponse().status
    conn.close()
    return status


def tidy(box: Container, key: str, filename: str) -> None:
    """Cancel the print the upload started and delete its file, so every round starts alike."""
    api(PORT, key, "POST", "/api/job", {"command": "cancel"})
    deadline = time.monotonic() + 60
    while api(PORT, key, "DELETE", f"/api/files/local/{filename}") == 409:  # still printing it
        if time.monotonic() > deadline:
            raise SystemExit(f"{filename} was still printing a minute after its cancel")
        time.sleep(0.5)
    if box.path(f"/var/lib/octobrix/{NAME}/basedir/uploads/{filename}").exists():
        raise SystemExit(f"{filename} was not deleted")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--megabytes", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    size = args.megabytes * 1024**2
    with tempfile.TemporaryDirectory(prefix="octobrix-bench-upload-") as scratch, \
            holding_printer_ports([PORT]), \
            booted(Path(scratch) / "ct", boot_timeout=120, base=farm_base) as box:  # fmt: skip
        box.write_file("/etc/octobrix.toml", f"[printers.{NAME}]\nvirtual = true\nport = {PORT}\n")
        installed = install_checkout(box)
        if installed.returncode != 0:
            raise SystemExit(f"install.sh failed:\n{installed.stdout}\n{installed.stderr}")
        wait_operational(box, NAME, PORT)
        key = json.loads(box.read_file(f"/var/lib/octobrix/.secrets/{NAME}.json"))["api_key"]
        times: dict[str, list[float]] = {"own port": [], "front door": []}
        for _ in range(args.rounds):
            for label, port in (("own port", PORT), ("front door", DOOR)):
                seconds, filename = upload(port, key, size)
                times[label].append(seconds)
                tidy(box, key, filename)

    print(f"upload-and-print of {args.megabytes} MB, {args.rounds} rounds each, alternating")
    for label, samples in times.items():
        median = statistics.median(samples)
        print(f"{label:<11} median {median:6.2f} s   {size / median / 1e6:6.1f} MB/s   all: "
              + ", ".join(f"{s:.2f}" for s in samples))  # fmt: skip
    ratio = statistics.median(times["front door"]) / statistics.median(times["own port"])
    print(f"front door / own port: {ratio:.2f}x")


if __name__ == "__main__":
    main()
