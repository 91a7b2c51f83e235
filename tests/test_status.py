"""status rendering from systemd's properties and OctoPrint's answers (the real thing runs in the lab container)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from octobrixd.cli.status import format_table, to_json
from octobrixd.config.model import parse_config
from octobrixd.farm.status import collect, settling, unit_status
from octobrixd.instances.recovery import Retry
from octobrixd.system import paths
from octobrixd.system.paths import Layout
from octobrixd.system.systemd import UnitProperties
from tests.factories import systemd_says

CONFIG = parse_config(
    "[printers.demo]\nvirtual = true\nport = 5000\n"
    '[printers.prusa]\nserial = "PRN0001"\nport = 5001\n'
    '[cameras.cam1]\nserial = "CAM1"\nport = 8081\n',
    "/etc/octobrix.toml",
)
NOW = 10_000_000_000  # monotonic microseconds
SAID = {
    "octoprint@demo.service": {
        "Id": "octoprint@demo.service", "LoadState": "loaded", "ActiveState": "active", "SubState": "running",
        "MainPID": "4242", "ActiveEnterTimestampMonotonic": str(NOW - 3_600_000_000),
        "MemoryCurrent": str(90 * 1_048_576), "CPUUsageNSec": str(36 * 10**9),
    },
    "octoprint@prusa.service": {
        "Id": "octoprint@prusa.service", "LoadState": "loaded", "ActiveState": "failed", "SubState": "failed",
        "MainPID": "0", "ActiveEnterTimestampMonotonic": "0", "MemoryCurrent": "18446744073709551615",
        "CPUUsageNSec": "18446744073709551615",
    },
}  # fmt: skip
PROPS = systemd_says(SAID)


def fetch(name: str, port: int) -> tuple[str | None, float | None]:
    return ("Printing", 42.4) if (name, port) == ("demo", 5000) else ("Offline", None)


def test_rows_from_systemd_properties(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    printers, cameras = collect(CONFIG, layout, PROPS, {"demo": fetch, "prusa": fetch}, "farm", now_monotonic_usec=NOW)
    demo, prusa = printers
    assert (demo.state, demo.pid, demo.uptime_seconds) == ("active", 4242, 3600.0)
    assert demo.cpu_percent == 1.0, "36 s of CPU over an hour"
    assert demo.memory_bytes == 90 * 1_048_576
    assert (demo.device, demo.printer_state, demo.progress_percent) == ("virtual", "Printing", 42.4)
    assert (prusa.state, prusa.pid, prusa.memory_bytes, prusa.printer_state) == ("failed", None, None, None)
    assert prusa.device == "unplugged"
    assert cameras[0].state == "unknown"

    (tmp_path / "dev/octobrix").mkdir(parents=True)
    (tmp_path / "dev/octobrix/prusa").symlink_to("/dev/null")
    printers, _ = collect(CONFIG, layout, PROPS, {"demo": fetch, "prusa": fetch}, "farm", now_monotonic_usec=NOW)
    assert printers[1].device == "plugged"


def front_door_applied(root: Path) -> None:
    """The front door's nginx site, as apply leaves it: status leads through it only once it is there."""
    site = root / paths.NGINX_SITE
    site.parent.mkdir(parents=True, exist_ok=True)
    site.write_text("# octobrix\n")


def test_table_shows_what_matters_at_a_glance(tmp_path: Path) -> None:
    front_door_applied(tmp_path)
    printers, cameras = collect(
        CONFIG, Layout(tmp_path), PROPS, {"demo": fetch, "prusa": fetch}, "farm", now_monotonic_usec=NOW
    )
    table = format_table(printers, cameras).splitlines()
    assert table[0].split() == ["PRINTER", "SERVICE", "UP", "PID", "CPU", "MEMORY", "DEVICE", "STATE", "URL"]
    assert table[1].split() == [
        "demo", "active", "(running)", "1h00m", "4242", "1.0%", "90", "MB", "virtual", "Printing", "42%",
        "http://farm:15000/",
    ]  # fmt: skip
    # The front door is on (the default): its address, which other computers reach, not the direct port.
    assert table[2].split() == ["prusa", "failed", "-", "-", "-", "-", "unplugged", "-", "http://farm:15001/"]
    assert table[3].split()[0] == "CAMERA"
    assert table[4].split()[-1] == "http://farm/cam/cam1/stream"


def test_without_the_front_door_urls_are_the_direct_ports(tmp_path: Path) -> None:
    off = CONFIG.model_copy(update={"frontdoor": CONFIG.frontdoor.model_copy(update={"enabled": False})})
    printers, cameras = collect(off, Layout(tmp_path), PROPS, {"demo": fetch, "prusa": fetch}, "farm")
    assert [p.url for p in printers] == ["http://farm:5000/", "http://farm:5001/"]
    assert cameras[0].url == "http://farm:8081/stream"


def test_json_schema_is_stable(tmp_path: Path) -> None:
    printers, cameras = collect(
        CONFIG, Layout(tmp_path), PROPS, {"demo": fetch, "prusa": fetch}, "farm", names=["demo"]
    )
    body = json.loads(to_json(printers, cameras))
    assert body["version"] == 1
    assert [p["name"] for p in body["printers"]] == ["demo"] and body["cameras"] == []
    assert sorted(body["printers"][0]) == sorted([
        "name", "unit", "state", "sub_state", "pid", "uptime_seconds", "cpu_percent", "memory_bytes",
        "device", "device_path", "url", "api_base", "printer_state", "progress_percent", "restart_pending",
        "octoprint_version", "octoprint_requirement", "drift", "plugins", "result", "failure",
    ])  # fmt: skip


def test_unknown_unit_is_not_installed() -> None:
    said = UnitProperties.parse({"LoadState": "not-found", "ActiveState": "inactive"})
    status = unit_status("octoprint@x.service", said, NOW)
    assert status.state == "not-installed"


def test_settling_names_instances_that_do_not_answer_yet(tmp_path: Path) -> None:
    """What `status --wait` waits for: an OctoPrint still starting, or a virtual printer not yet
    connected; never a real printer's connection (unplugged, it would stay Offline for ever)."""
    layout = Layout(tmp_path)
    props = systemd_says({**SAID, "octoprint@prusa.service": SAID["octoprint@demo.service"]})

    def answers(demo: str, prusa: str) -> list[str]:
        states = {"demo": demo, "prusa": prusa}
        printers, _cameras = collect(
            CONFIG, layout, props, {n: lambda name, _port: (states[name], None) for n in states}, "farm",
            now_monotonic_usec=NOW,
        )  # fmt: skip
        return settling(printers)

    assert answers("starting", "Offline") == ["demo"]
    assert answers("not answering (connection refused)", "Offline") == ["demo"]
    assert answers("Offline", "Offline") == ["demo"]  # the virtual printer connects by itself
    assert answers("Connecting", "Operational") == ["demo"]
    assert answers("Operational", "starting") == ["prusa"]
    assert answers("Operational", "Opening serial connection") == []
    assert answers("Operational", "Offline") == []
    assert answers("Printing", "Operational") == []
    stopped = systemd_says({**SAID, "octoprint@demo.service": SAID["octoprint@prusa.service"]})
    fetchers = {"demo": fetch, "prusa": fetch}
    printers, _cameras = collect(CONFIG, layout, stopped, fetchers, "farm", now_monotonic_usec=NOW)
    assert "demo" not in settling(printers)


def test_a_held_back_port_change_shows_where_the_printing_octoprint_still_is(tmp_path: Path) -> None:
    # demo prints on 5000; its config now says 5050 and its restart waits for the print.
    moved = parse_config("[printers.demo]\nvirtual = true\nport = 5050\n", "/etc/octobrix.toml")
    cmdline = tmp_path / "proc/4242/cmdline"
    cmdline.parent.mkdir(parents=True)
    cmdline.write_bytes(b"/var/lib/octobrix/demo/venv/bin/python3\0/var/lib/octobrix/demo/venv/bin/octoprint\0serve\0"
                        b"--basedir\0/var/lib/octobrix/demo/basedir\0--host\0::\0--port\x005000\0")  # fmt: skip
    layout = Layout(tmp_path)
    front_door_applied(tmp_path)
    (demo,), _ = collect(moved, layout, PROPS, {"demo": fetch}, "farm", deferred=["octoprint@demo.service"])
    assert (demo.url, demo.printer_state, demo.restart_pending) == ("http://farm:5000/", "Printing", True)
    # Once restarted it is where the config says, and the front door leads there again.
    (demo,), _ = collect(moved, layout, PROPS, {"demo": fetch}, "farm")
    assert (demo.url, demo.printer_state) == ("http://farm:15050/", "Offline")


def test_a_printer_removed_while_it_prints_is_listed_until_its_held_back_stop(tmp_path: Path) -> None:
    # demo was taken out of the config while printing on 5000; its stop waits for the print.
    without_demo = parse_config('[printers.prusa]\nserial = "PRN0001"\nport = 5001\n', "/etc/octobrix.toml")
    cmdline = tmp_path / "proc/4242/cmdline"
    cmdline.parent.mkdir(parents=True)
    cmdline.write_bytes(b"/var/lib/octobrix/demo/venv/bin/octoprint\0serve\0--port\x005000\0")
    layout = Layout(tmp_path)
    fetchers = {"demo": fetch, "prusa": fetch}
    printers, _ = collect(without_demo, layout, PROPS, fetchers, "farm", deferred=["octoprint@demo.service"])
    demo = next(p for p in printers if p.name == "demo")
    assert (demo.device, demo.url, demo.printer_state, demo.restart_pending) == (
        "removed",
        "http://farm:5000/",
        "Printing",
        True,
    )
    row = next(line for line in format_table(printers, []).splitlines() if line.startswith("demo "))
    assert "removed" in row and "Printing 42% (stop pending)" in row, row
    # Once stopped, it is gone from the list.
    printers, _ = collect(without_demo, layout, PROPS, fetchers, "farm")
    assert [p.name for p in printers] == ["prusa"]


def test_a_failed_instance_is_shown_with_its_cause_its_log_and_the_next_retry(tmp_path: Path) -> None:
    crashed = {**SAID["octoprint@prusa.service"], "Result": "exit-code", "ExecMainCode": "1", "ExecMainStatus": "1",
               "NRestarts": "5"}  # fmt: skip
    props = systemd_says({**SAID, "octoprint@prusa.service": crashed})
    log = ["Dec 01 08:29:57 farm octoprint[55]: ImportError: cannot import name 'x'"]
    retries = {"octoprint@prusa.service": Retry(attempts=2, next_try=time.time() + 40, last_start=time.time() - 60)}
    printers, cameras = collect(
        CONFIG, Layout(tmp_path), props, {"demo": fetch, "prusa": fetch}, "farm", now_monotonic_usec=NOW,
        journal=lambda unit, lines: log if unit == "octoprint@prusa.service" else [], retries=retries,
    )  # fmt: skip
    demo, prusa = printers
    assert demo.failure is None and demo.result is None
    assert prusa.result == "exit-code" and prusa.failure is not None
    assert prusa.failure.cause == "exited with status 1 (5 starts in a row)"
    assert prusa.failure.octobrixd_retries == 2
    assert prusa.failure.next_retry_seconds is not None and 35 < prusa.failure.next_retry_seconds <= 40
    body = json.loads(to_json(printers, cameras))["printers"][1]["failure"]
    assert body["log"] == log and body["cause"] == "exited with status 1 (5 starts in a row)"
    assert "sudo systemctl reset-failed octoprint@prusa.service" in body["fix"]
    table = format_table(printers, cameras)
    below = table.split("\n\n", 1)[1].splitlines()
    assert below[0].startswith(
        "prusa: octoprint@prusa.service has failed: its OctoPrint exited with status 1 (5 starts in a row); "
        "octobrixd starts it again in "
    )
    assert below[1:3] == ["  last lines of its log (`journalctl -u octoprint@prusa.service`):", f"    {log[0]}"]
    assert below[3].startswith("  fix: the lines above")
