"""The front door's cost: `GET /api/job` on the printer's own origin of the front door (nginx, the
farm login's check by the web service, only that OctoPrint's cookies passed on) against the same
request on the printer's own port, both with the same API key, on one lab container in the same run.

    sudo .venv/bin/python -m benchmarks.frontdoor [--requests 300]

install.sh in a pristine container, one virtual printer; requests one after another on fresh
connections (as a browser tab's polling or a slicer does), alternating the two ways so that load
from elsewhere on the machine hits both alike. Reports median and 95th percentile, and the ratio.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import tempfile
import time
import urllib.parse
from pathlib import Path

from octobrixd.config.model import default_door_port
from tests.lab.harness.container import booted
from tests.lab.harness.installed import install_checkout
from tests.lab.harness.installs import holding_printer_ports, wait_operational

NAME, PORT = "bench-1", 5500
DOOR = default_door_port(PORT)  # its own origin on the front door


def timed_get(port: int, path: str, headers: dict[str, str]) -> float:
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    response.read()
    conn.close()
    elapsed = time.perf_counter() - started
    if response.status != 200:
        raise SystemExit(f"GET :{port}{path} answered {response.status}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="octobrix-bench-frontdoor-") as scratch, \
            holding_printer_ports([80, *range(5500, 5510)]), \
            booted(Path(scratch) / "ct", boot_timeout=120) as box:  # fmt: skip
        box.write_file("/etc/octobrix.toml", f"[printers.{NAME}]\nvirtual = true\nport = {PORT}\n")
        installed = install_checkout(box)
        if installed.returncode != 0:
            raise SystemExit(f"install.sh failed:\n{installed.stdout}\n{installed.stderr}")
        wait_operational(box, NAME, PORT)
        key = json.loads(box.read_file(f"/var/lib/octobrix/.secrets/{NAME}.json"))["api_key"]
        farm = json.loads(box.read_file("/var/lib/octobrix/.secrets/farm.json"))
        conn = http.client.HTTPConnection("127.0.0.1", 80, timeout=30)
        form = urllib.parse.urlencode({"username": farm["username"], "password": farm["password"]})
        conn.request("POST", "/login", body=form, headers={"Content-Type": "application/x-www-form-urlencoded"})
        cookie = str(conn.getresponse().headers["Set-Cookie"]).split(";", 1)[0]
        conn.close()
        front: list[float] = []
        direct: list[float] = []
        for _ in range(20):  # warm-up: OctoPrint's first answers are slower
            timed_get(PORT, "/api/job", {"X-Api-Key": key})
            timed_get(DOOR, "/api/job", {"Cookie": cookie, "X-Api-Key": key})
        for _ in range(args.requests):
            direct.append(timed_get(PORT, "/api/job", {"X-Api-Key": key}))
            front.append(timed_get(DOOR, "/api/job", {"Cookie": cookie, "X-Api-Key": key}))

    def line(label: str, samples: list[float]) -> str:
        p95 = statistics.quantiles(samples, n=20)[-1]
        return f"{label:<34} median {statistics.median(samples) * 1000:6.2f} ms   p95 {p95 * 1000:6.2f} ms"

    print(f"GET /api/job, {args.requests} requests each, fresh connection per request")
    print(line("direct port (X-Api-Key)", direct))
    print(line("front door (farm login, nginx)", front))
    ratio = statistics.median(front) / statistics.median(direct)
    extra = (statistics.median(front) - statistics.median(direct)) * 1000
    print(f"front door / direct: {ratio:.2f}x median ({extra:+.2f} ms per request)")


if __name__ == "__main__":
    main()
