"""The printer simulator on its own: protocol details OctoPrint relies on, and the pty transport.

Not lab tests: no root, no VM, milliseconds.
"""

from __future__ import annotations

import os
import select

import serial

from tests.lab.harness.printer_sim import MarlinSim, with_checksum
from tests.lab.harness.simlink import PtyLink, open_pty
from tests.lab.harness.waiting import wait_until


def lines(data: bytes) -> list[str]:
    return data.decode().splitlines()


def test_banner_on_connect() -> None:
    sim = MarlinSim()
    assert lines(sim.connected())[0] == "start"
    assert lines(MarlinSim(banner_on_connect=False).connected()) == []


def test_m115_reports_firmware_machine_and_uuid() -> None:
    sim = MarlinSim(uuid="1b5a-test", machine_type="Prusa i3 sim")
    reply = lines(sim.feed(b"M115\n"))
    assert "FIRMWARE_NAME:Marlin" in reply[0]
    assert "MACHINE_TYPE:Prusa i3 sim" in reply[0]
    assert "UUID:1b5a-test" in reply[0]
    assert any(line.startswith("Cap:AUTOREPORT_TEMP") for line in reply)
    assert reply[-1] == "ok"


def test_m105_temperatures_follow_targets() -> None:
    sim = MarlinSim()
    assert lines(sim.feed(b"M105\n")) == ["ok T:21.00 /0.00 B:21.00 /0.00 @:0 B@:0"]
    sim.feed(b"M104 S200\nM140 S60\n")
    sim.tick(100.0)
    sim.tick(101.0)  # one simulated second of heating
    reply = lines(sim.feed(b"M105\n"))[0]
    assert "T:46.00 /200.00" in reply
    assert "B:46.00 /60.00" in reply
    sim.feed(b"M109 S210\n")
    assert "T:210.00 /210.00" in lines(sim.feed(b"M105\n"))[0]


def test_line_numbers_and_checksums() -> None:
    sim = MarlinSim()
    assert lines(sim.feed(with_checksum("M110 N0", 0).encode() + b"\n")) == ["ok"]
    assert lines(sim.feed(with_checksum("M105", 1).encode() + b"\n"))[0].startswith("ok T:")
    assert sim.commands == ["M110 N0", "M105"]
    # A corrupted checksum asks for the same line again.
    bad = with_checksum("G1 X10", 2)[:-1] + "0\n"
    assert lines(sim.feed(bad.encode())) == ["Error:checksum mismatch, Last Line: 1", "Resend: 2", "ok"]
    # A skipped line number asks for the missing one.
    assert lines(sim.feed(with_checksum("G1 X10", 3).encode() + b"\n"))[1] == "Resend: 2"
    assert lines(sim.feed(with_checksum("G1 X10", 2).encode() + b"\n")) == ["ok"]
    assert sim.position["X"] == 10.0
    # M110 resets the counter, with or without a line number of its own.
    assert lines(sim.feed(b"M110 N41\n")) == ["ok"]
    assert lines(sim.feed(with_checksum("G28", 42).encode() + b"\n")) == ["ok"]


def test_sd_card_listing_and_print_progress() -> None:
    sim = MarlinSim(sd_files={"CUBE.GCO": 1000})
    assert lines(sim.feed(b"M21\n")) == ["echo:SD card ok", "ok"]
    assert lines(sim.feed(b"M20\n")) == ["Begin file list", "CUBE.GCO 1000", "End file list", "ok"]
    assert lines(sim.feed(b"M23 cube.gco\n"))[0] == "File opened: CUBE.GCO Size: 1000"
    sim.feed(b"M24\n")
    assert sim.printing
    sim.tick(0.0)
    sim.tick(0.5)
    assert lines(sim.feed(b"M27\n"))[0] == "SD printing byte 500/1000"
    assert lines(sim.tick(2.0)) == ["Done printing file"]
    assert not sim.printing


def test_start_sd_print_puts_the_printer_mid_job() -> None:
    sim = MarlinSim()
    job = sim.start_sd_print("BENCHY.GCO", bytes_per_second=10)
    job.pos = 1200
    assert lines(sim.feed(b"M27\n"))[0] == "SD printing byte 1200/2400000"


def test_moves_take_move_seconds_and_hold_back_later_replies() -> None:
    sim = MarlinSim(move_seconds=0.5)
    assert sim.feed(b"G1 X10\n", now=100.0) == b""
    # Marlin answers in order: a query behind the move waits for it too.
    assert sim.feed(b"M105\n", now=100.1) == b""
    assert sim.tick(100.4) == b""
    assert lines(sim.tick(100.5)) == ["ok", "ok T:21.00 /0.00 B:21.00 /0.00 @:0 B@:0"]
    # Moves queue up: the second ends move_seconds after the first.
    sim.feed(b"G1 X20\nG0 X30\n", now=101.0)
    assert lines(sim.tick(101.5)) == ["ok"]
    assert lines(sim.tick(102.0)) == ["ok"]
    assert sim.position["X"] == 30.0
    # Without moves nothing waits.
    assert lines(sim.feed(b"M105\n", now=102.0))[0].startswith("ok T:")


def test_replies_and_noise_are_recorded_but_not_answered() -> None:
    # A guest tty left in echo mode sends our own replies back: answering them would loop forever.
    sim = MarlinSim()
    assert sim.feed(b"ok T:21.00 /0.00\nstart\necho:busy\n\n") == b""
    assert sim.lines == ["ok T:21.00 /0.00", "start", "echo:busy"]
    assert sim.commands == []


def test_unknown_command_and_kill() -> None:
    sim = MarlinSim()
    assert lines(sim.feed(b"M9999\n")) == ['echo:Unknown command: "M9999"', "ok"]
    assert lines(sim.feed(b"M112\n")) == ["Error:Printer halted. kill() called!"]
    assert sim.feed(b"M105\n") == b""
    assert lines(sim.feed(b"M999\n"))[-1] == "ok"


def test_partial_lines_and_crlf() -> None:
    sim = MarlinSim()
    assert sim.feed(b"M1") == b""
    assert lines(sim.feed(b"05\r\nG28\r")) == ["ok T:21.00 /0.00 B:21.00 /0.00 @:0 B@:0", "ok"]
    assert sim.received == bytearray(b"M105\r\nG28\r")


def test_autoreport_temperatures() -> None:
    sim = MarlinSim()
    sim.feed(b"M155 S2\n")
    assert lines(sim.tick(10.0))[0].startswith("T:")
    assert sim.tick(11.0) == b""
    assert lines(sim.tick(12.0))[0].startswith("T:")


def test_pty_transport_round_trip() -> None:
    sim = MarlinSim(uuid="pty-uuid")
    with open_pty(sim) as link, serial.Serial(link.slave_path, 115200, timeout=5) as port:
        assert port.readline() == b"start\n"
        port.write(with_checksum("M115", 1).encode() + b"\n")
        reply = b""
        while not reply.endswith(b"ok\n"):
            chunk = port.readline()
            assert chunk, f"no reply from the simulator, got {reply!r}"
            reply += chunk
        assert b"UUID:pty-uuid" in reply
        assert sim.wait_for_command("M115", timeout=1) == "M115"


def went_round(link: PtyLink, rounds: int) -> None:
    """The link's pump has gone round `rounds` more times: it has seen whatever happened before this."""
    start = link.rounds
    wait_until(f"the link to go round {rounds} more times", lambda: link.rounds >= start + rounds, 5, 0.01)


def test_pty_link_survives_client_reopen() -> None:
    sim = MarlinSim(banner_on_connect=False)
    with open_pty(sim) as link:
        for _ in range(2):
            fd = os.open(link.slave_path, os.O_RDWR | os.O_NOCTTY)
            try:
                os.write(fd, b"M105\n")
                ready, _, _ = select.select([fd], [], [], 5)
                assert ready
                assert os.read(fd, 100).startswith(b"ok T:")
            finally:
                os.close(fd)
            # The client is gone: the link has gone round at least once since, seeing that.
            went_round(link, 2)
        assert link.connected
        assert sim.commands == ["M105", "M105"]
