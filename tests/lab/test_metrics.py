"""Prometheus monitors the farm, for real: octobrix installed by install.sh in a systemd container,
three printers that are simulated Marlins on ptys (ports 5620-5622), the front door on 8620 with
`[frontdoor] metrics = true`, and Debian's own Prometheus running on this machine (loopback 9620)
scraping the front door's /metrics every second with the metrics token from the farm.

A print started through OctoPrint's API makes PromQL's `octobrix_printer_printing` 1 for that
printer (and no other), cancelling it makes it 0 again; `promtool check metrics` passes on what
the endpoint serves; without the token (or with a wrong one) the endpoint refuses.
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.harness.container import Container
from tests.lab.harness.farm import moves_gcode, pty_farm
from tests.lab.harness.installs import api, upload_gcode, wait_operational
from tests.lab.harness.prometheus import Scrape, query
from tests.lab.harness.prometheus import prometheus as prometheus_scraping
from tests.lab.harness.waiting import wait_until

pytestmark = pytest.mark.lab

PORTS = {"alpha": 5620, "beta": 5621, "gamma": 5622}
SERIALS = {"alpha": "PRNM001", "beta": "PRNM002", "gamma": "PRNM003"}
FRONT_DOOR = 8620
PROMETHEUS = 9620
# Each simulated move takes this long: the print lasts far longer than the test, which cancels it.
MOVE_SECONDS = 0.2
CONFIG = f"[frontdoor]\nport = {FRONT_DOOR}\nmetrics = true\n\n" + "".join(
    f'[printers.{name}]\nserial = "{SERIALS[name]}"\nport = {port}\n\n' for name, port in PORTS.items()
)
METRICS_URL = f"http://127.0.0.1:{FRONT_DOOR}/metrics"


@pytest.fixture(scope="module")
def farm(lab_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    workdir = Path(tmp_path_factory.mktemp("metrics", numbered=True))
    pty = dict.fromkeys(PORTS, MOVE_SECONDS)
    with pty_farm(workdir, CONFIG, pty, ports=[*PORTS.values(), PROMETHEUS], front_door_port=FRONT_DOOR) as box:
        for name, port in PORTS.items():
            wait_operational(box, name, port)
        yield box


@pytest.fixture(scope="module")
def token(farm: Container) -> str:
    return farm.read_file("/var/lib/octobrix/.secrets/metrics-token").strip()


@pytest.fixture(scope="module")
def prometheus(token: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Prometheus scraping the farm every second; yields its HTTP API's base URL."""
    work = Path(tmp_path_factory.mktemp("prometheus", numbered=True))
    with prometheus_scraping(work, PROMETHEUS, {"octobrix": Scrape(f"127.0.0.1:{FRONT_DOOR}", token)}) as base:
        yield base


def scrape(headers: dict[str, str]) -> tuple[int, str]:
    request = urllib.request.Request(METRICS_URL, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_prometheus_sees_a_print_start_and_its_cancel(farm: Container, prometheus: str) -> None:
    printing = 'octobrix_printer_printing{printer="beta"}'
    assert query(prometheus, printing) == 0.0
    assert query(prometheus, 'octobrix_printer_state{printer="beta",state="operational"}') == 1.0
    upload_gcode(farm, PORTS["beta"], "beta", "long.gcode", moves_gcode(6000), print_it=True)
    wait_until("Prometheus to see beta printing", lambda: query(prometheus, printing) == 1.0, timeout=60, every=1)
    assert query(prometheus, "sum(octobrix_printer_printing)") == 1.0, "only beta prints"
    progress = query(prometheus, 'octobrix_printer_progress_ratio{printer="beta"}')
    assert progress is not None and 0.0 <= progress < 1.0
    api(farm, PORTS["beta"], "beta", "/api/job", {"command": "cancel"})
    wait_until("Prometheus to see beta stop", lambda: query(prometheus, printing) == 0.0, timeout=60, every=1)
    assert query(prometheus, "sum(octobrix_printer_up)") == 3.0, "every OctoPrint answered the scrapes"


def test_promtool_passes_what_the_endpoint_serves(farm: Container, token: str) -> None:
    status, text = scrape({"Authorization": f"Bearer {token}"})
    assert status == 200, text
    checked = subprocess.run(["promtool", "check", "metrics"], input=text, check=False,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert checked.returncode == 0, f"{checked.stdout}{checked.stderr}"
    # Every printer's state, temperatures and counters are there.
    for name in PORTS:
        assert f'octobrix_printer_up{{printer="{name}"}} 1.0' in text
        assert f'octobrix_printer_temperature_celsius{{heater="bed",printer="{name}"}}' in text
        assert f'octobrix_printer_restarts_total{{printer="{name}"}}' in text
        assert f'octobrix_printer_device_plugged{{printer="{name}"}} 1.0' in text
    assert "octobrix_config_valid 1.0" in text
    assert "octobrix_last_apply_timestamp_seconds " in text


def counters(text: str) -> dict[str, str]:
    return {line.rsplit(" ", 1)[0]: line.rsplit(" ", 1)[1] for line in text.splitlines()
            if line.startswith(("octobrix_printer_restarts_total", "octobrix_printer_plugs_total"))}  # fmt: skip


def test_counters_survive_a_restart_of_the_web_service(farm: Container, token: str) -> None:
    bearer = {"Authorization": f"Bearer {token}"}
    before = counters(scrape(bearer)[1])
    assert len(before) == 2 * len(PORTS)
    farm.systemctl("restart", "octobrix-web.service")
    wait_until("the web service back after its restart", lambda: scrape(bearer)[0] == 200, timeout=60, every=0.5)
    assert counters(scrape(bearer)[1]) == before


def test_the_endpoint_refuses_without_the_token_and_opens_to_the_farm_login(farm: Container, token: str) -> None:
    assert scrape({})[0] == 401
    assert scrape({"Authorization": "Bearer not-" + token})[0] == 401
    assert scrape({"Authorization": f"Basic {token}"})[0] == 401
    # The web service holds only the token's digest, root alone its clear text.
    digest = farm.read_file("/var/lib/octobrix/.secrets/web/metrics.json")
    assert token not in digest
    mode = farm.run(["stat", "-c", "%a %U", "/var/lib/octobrix/.secrets/metrics-token"]).stdout.split()
    assert mode == ["600", "root"]
    # The farm login opens it too, as it opens the overview.
    login = json.loads(farm.read_file("/var/lib/octobrix/.secrets/farm.json"))
    form = urllib.parse.urlencode({"username": login["username"], "password": login["password"], "next": "/"})
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    opener.open(f"http://127.0.0.1:{FRONT_DOOR}/login", data=form.encode(), timeout=30).read()
    with opener.open(METRICS_URL, timeout=30) as response:
        assert response.status == 200 and b"octobrix_printer_up" in response.read()
