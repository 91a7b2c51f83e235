"""Producers hand their consumers records, not prose to take apart again; what a user reads stays
what it was. Each test puts the old way of reading the text beside the record's field."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from octobrixd.cameras.bandwidth import Cap, Placement, advise, effective_cap
from octobrixd.config.model import parse_config
from octobrixd.devices.inventory import Device, complete
from octobrixd.devices.suggestions import one_line_entry, suggest_entries
from octobrixd.farm.status import fetch_printer_state
from octobrixd.instances import api as octoprint_api
from octobrixd.kmod.status import FIX_PARAM
from octobrixd.system.paths import Layout
from tests.factories import camera, printer
from tests.httpstub import QuietHandler, serving
from tests.test_bandwidth import fake_module

EXISTING = '[printers.printer1]\nserial = "OLD"\nport = 5001\n'


def _journal_line_the_old_way(device: Device, config_text: str) -> str:
    """What octobrixd journalled: the suggested entry with its comment lines taken out."""
    entry = suggest_entries([device], parse_config(config_text, "/etc/octobrix.toml"), target="/etc/octobrix.toml")
    return " ".join(line for line in entry.splitlines() if line and not line.startswith("#"))


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        (printer("/dev/ttyACM0", "1-1", "SN42"), '[printers.printer2] serial = "SN42" port = 5002'),
        (printer("/dev/ttyACM0", "1-4", "0001"), '[printers.printer2] usb_port = "1-4" port = 5002'),
        (printer("/dev/ttyUSB0", "1-1.2.3.4.5.6.7.8", None), ""),  # a port path too deep to bind
        (camera("/dev/video0", "2-1", "C1"), None),  # formats unknown: a guessed mode after comments
    ],
)
def test_the_daemons_journal_line_for_an_unknown_device_is_the_entry_without_its_comments(
    tmp_path: Path, device: Device, expected: str | None
) -> None:
    (tmp_path / "proc").mkdir()
    (device,) = complete([device], config=None, layout=Layout(tmp_path), query_formats=None).devices
    line = one_line_entry(device, parse_config(EXISTING, "/etc/octobrix.toml"))
    assert line == _journal_line_the_old_way(device, EXISTING)
    if expected is not None:
        assert line == expected
    else:
        assert line.startswith('[cameras.cam1] serial = "C1" resolution = ') and "#" not in line


def _bandwidth_cases() -> list[tuple[str, Cap, dict[str, Placement]]]:
    ports = ["1-3.1", "1-3.2", "1-3.3"]
    mjpeg = "".join(f'[cameras.cam{n}]\nusb_port = "{p}"\nresolution = "1280x720"\nfps = 15\nport = {8080 + n}\n'
                    for n, p in enumerate(ports, 1))  # fmt: skip
    yuyv = mjpeg.replace("fps = 15", 'fps = 30\nformat = "yuyv"')
    where = {f"cam{n}": Placement(p, 480, "xhci_hcd", True) for n, p in enumerate(ports, 1)}
    big = '[cameras.cam1]\nusb_port = "1-3.1"\nresolution = "1920x1080"\nfps = 30\nport = 8081\n'
    # Over a shared budget (with and without the MJPEG remark), and one camera's own problem.
    return [(mjpeg, Cap(0, "stock"), where), (yuyv, Cap(0, "stock"), where), (big, Cap(512, "x"), where)]


@pytest.mark.parametrize(("toml", "cap", "where"), _bandwidth_cases())
def test_the_advisor_warnings_read_as_before_and_doctor_gets_their_parts(
    toml: str, cap: Cap, where: dict[str, Placement]
) -> None:
    advice = advise(parse_config(toml, "/etc/octobrix.toml"), where, cap)
    findings = advice.findings()
    assert findings, "each case warns"
    assert advice.warnings() == [str(w) for w in findings]
    default = "see `octobrixctl discover` for where each camera is and what it reserves"
    for warning in findings:
        # What doctor made of the text before it had the record.
        problem, _, helps = str(warning).removeprefix("USB bandwidth: ").partition(". What helps: ")
        assert (warning.problem, warning.fix or default) == (problem, helps or default)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_an_octoprint_that_does_not_answer_is_not_busy_and_status_says_not_answering() -> None:
    port = _closed_port()
    with pytest.raises(octoprint_api.ApiError) as raised:
        octoprint_api.request(port, "key", "/api/job")
    assert str(raised.value).startswith("not answering (") and raised.value.summary == "not answering"
    assert raised.value.failure is octoprint_api.Failure.NOT_ANSWERING
    assert octoprint_api.is_busy(port, "key") is False
    assert fetch_printer_state("key")("p1", port) == ("not answering", None)


@pytest.mark.parametrize(("code", "busy"), [(409, False), (500, True)])
def test_an_http_error_is_read_by_its_status_code(code: int, busy: bool) -> None:
    """409: OctoPrint has no printer connected, so nothing prints; another error may hide a print."""

    class Answer(QuietHandler):
        def do_GET(self) -> None:
            self.reply(code, b'{"error": "Printer is not operational"}')

    with serving(Answer) as port:
        with pytest.raises(octoprint_api.ApiError) as raised:
            octoprint_api.request(port, "key", "/api/job")
        assert str(raised.value) == f"HTTP {code} from /api/job" == raised.value.summary
        assert raised.value.conflict is (code == 409)
        assert octoprint_api.is_busy(port, "key") is busy
        assert fetch_printer_state("key")("p1", port) == (f"HTTP {code} from /api/job", None)


def test_the_note_on_an_ignored_uvcvideo_setting_says_which_as_a_field(tmp_path: Path) -> None:
    fake_module(tmp_path, param=None)  # the stock uvcvideo is the one loaded
    layout = Layout(tmp_path)
    fix = effective_cap(parse_config("[uvcvideo]\nuncompressed_bandwidth_fix = true\n", "/x"), layout)
    payload = effective_cap(parse_config("[uvcvideo]\nmax_compressed_payload = 1024\n", "/x"), layout)
    # The advisor used to look for the setting's name in the note.
    assert fix.note is not None and FIX_PARAM in fix.note and fix.note_is_fix
    assert payload.note is not None and FIX_PARAM not in payload.note and not payload.note_is_fix
