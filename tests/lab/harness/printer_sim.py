"""A simulated Marlin printer: enough of the protocol for OctoPrint to connect and stay Operational.

MarlinSim is only the protocol and the printer's state: bytes in, bytes out, no I/O and no threads
of its own. simlink.SimLink attaches it to a transport (the host side of a QEMU usb-serial chardev,
or a pty for the nspawn container). Everything received is recorded so a test can assert what
reached the printer; the state (temperatures, SD card, a print in progress) lives in plain
attributes a test may read or set.

Standard library only, and no imports from the rest of the harness: tests copy this file into a
guest and run it there with the guest's own python3.
"""

from __future__ import annotations

import re
import threading
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field

AMBIENT = 21.0
HEAT_RATE = 25.0  # degrees per second, so a test waiting for M109 does not wait long

# A line the printer acts on: optional line number, then a G/M/T command. Anything else (the
# echo of our own "ok T:..." by a guest tty left in echo mode, "start", noise on a fresh
# connection) is recorded but not answered; answering it would ping-pong with the echo forever.
_COMMAND = re.compile(r"^(N-?\d+\s*)?[GMT]\d", re.IGNORECASE)
_HEAD = re.compile(r"^([GMT])(\d+)(.*)$", re.IGNORECASE)
_WORD = re.compile(r"([A-Z])\s*(-?\d*\.?\d*)")


@dataclass
class Heater:
    temp: float = AMBIENT
    target: float = 0.0

    def step(self, seconds: float) -> None:
        goal = self.target if self.target > 0 else AMBIENT
        delta = HEAT_RATE * seconds
        if abs(goal - self.temp) <= delta:
            self.temp = goal
        else:
            self.temp += delta if goal > self.temp else -delta


@dataclass
class SdPrint:
    """A print from the simulated SD card; progress advances with time in tick()."""

    name: str
    size: int
    pos: int = 0
    active: bool = True
    bytes_per_second: float = 1000.0


@dataclass
class MarlinSim:
    uuid: str = field(default_factory=lambda: str(uuidlib.uuid4()))
    machine_type: str = "octobrix-sim"
    firmware_name: str = "Marlin 2.1.2.1 (octobrix sim)"
    sd_files: dict[str, int] = field(default_factory=lambda: {"CUBE.GCO": 120_000, "BENCHY.GCO": 2_400_000})
    # Marlin boards send "start" after the reset that opening the port causes; QEMU cannot tell us
    # when the guest opens the port (no DTR over a socket), so by default it is sent on connect.
    banner_on_connect: bool = True
    # Seconds each move (G0/G1) takes. Like a board whose planner is full, the move's "ok" and
    # every reply after it come only when the move is done: a streamed print then lasts
    # about lines x move_seconds. 0: at once.
    move_seconds: float = 0.0

    def __post_init__(self) -> None:
        self.cond = threading.Condition()
        self.received = bytearray()  # every byte that reached the printer
        self.lines: list[str] = []  # every complete line, as received (stripped)
        self.commands: list[str] = []  # accepted commands without line number and checksum
        self.sent = bytearray()
        self.hotend = Heater()
        self.bed = Heater()
        self.position = {"X": 0.0, "Y": 0.0, "Z": 0.0, "E": 0.0}
        self.relative = False
        self.last_line = 0
        self.sd_ready = True
        self.selected: str | None = None
        self.sd_print: SdPrint | None = None
        self.halted = False
        self.temp_report_interval = 0.0
        self.connections = 0
        self._partial = b""
        self._last_tick: float | None = None
        self._last_temp_report = 0.0
        self._pending: list[str] = []
        self._busy_until = 0.0
        self._moved = False
        self._delayed: list[tuple[float, list[str]]] = []  # replies held back by moves, in order

    # --- the transport's side --------------------------------------------------------------

    def connected(self) -> bytes:
        """Called by the transport when a host connects (cable plugged); returns what to send first."""
        with self.cond:
            self.connections += 1
            self._partial = b""
            self.halted = False
            self.last_line = 0
            # A reset empties the planner: moves in progress are forgotten, with their replies.
            self._delayed.clear()
            self._busy_until = 0.0
            if not self.banner_on_connect:
                return b""
            return self._out(
                ["start", f"echo:{self.firmware_name}", "echo: Free Memory: 4096  PlannerBufferBytes: 1232"]
            )

    def feed(self, data: bytes, now: float | None = None) -> bytes:
        """Bytes from the host; returns the printer's reply bytes (those a move holds back come from tick())."""
        now = time.monotonic() if now is None else now
        with self.cond:
            self.received.extend(data)
            buffer = self._partial + data
            *complete, self._partial = re.split(rb"\r\n|\r|\n", buffer)
            out: list[str] = []
            for raw in complete:
                line = raw.decode("ascii", errors="replace").strip()
                if not line:
                    continue
                self.lines.append(line)
                self._moved = False
                replies = self._handle(line)
                if self._moved and self.move_seconds:
                    self._busy_until = max(now, self._busy_until) + self.move_seconds
                if self._busy_until > now:
                    self._delayed.append((self._busy_until, replies))
                else:
                    out += replies
            self.cond.notify_all()
            return self._out(out)

    def tick(self, now: float | None = None) -> bytes:
        """Advance simulated time; returns unsolicited output (autoreports, print finished)."""
        now = time.monotonic() if now is None else now
        with self.cond:
            out, self._pending = self._pending, []
            while self._delayed and self._delayed[0][0] <= now:
                out += self._delayed.pop(0)[1]
            seconds = 0.0 if self._last_tick is None else now - self._last_tick
            self._last_tick = now
            self.hotend.step(seconds)
            self.bed.step(seconds)
            job = self.sd_print
            if job and job.active and not self.halted:
                job.pos = min(job.size, job.pos + int(job.bytes_per_second * seconds))
                if job.pos >= job.size:
                    job.active = False
                    out += ["Done printing file"]
            if self.temp_report_interval and now - self._last_temp_report >= self.temp_report_interval:
                self._last_temp_report = now
                out.append(self._temperatures().strip())
            if out:
                self.cond.notify_all()
            return self._out(out)

    def say(self, line: str) -> None:
        """Queue an unsolicited line (an 'echo:busy', an error) for the next tick."""
        with self.cond:
            self._pending.append(line)

    def _out(self, lines: list[str]) -> bytes:
        data = "".join(f"{line}\n" for line in lines).encode()
        self.sent.extend(data)
        return data

    # --- what a test asks ------------------------------------------------------------------

    def wait_for(self, predicate: Callable[[MarlinSim], bool], timeout: float = 10.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: predicate(self), timeout=timeout)

    def wait_for_command(self, prefix: str, timeout: float = 10.0) -> str:
        """The first accepted command starting with prefix (case-insensitive); raises on timeout."""
        wanted = prefix.upper()
        found: list[str] = []

        def seen(sim: MarlinSim) -> bool:
            found[:] = [c for c in sim.commands if c.upper().startswith(wanted)]
            return bool(found)

        if not self.wait_for(seen, timeout):
            raise TimeoutError(f"printer never received {prefix!r} within {timeout}s; got lines {self.lines[-20:]}")
        return found[0]

    def wait_for_bytes(self, data: bytes, timeout: float = 10.0) -> None:
        if not self.wait_for(lambda sim: data in sim.received, timeout):
            raise TimeoutError(f"printer never received {data!r}; got {bytes(self.received[-200:])!r}")

    @property
    def printing(self) -> bool:
        return bool(self.sd_print and self.sd_print.active)

    def start_sd_print(self, name: str = "CUBE.GCO", bytes_per_second: float = 1000.0) -> SdPrint:
        """Put the printer mid-print, as if the user had started a job from the SD card."""
        with self.cond:
            self.selected = name
            self.sd_print = SdPrint(name, self.sd_files[name], bytes_per_second=bytes_per_second)
            return self.sd_print

    # --- the protocol ----------------------------------------------------------------------

    def _handle(self, line: str) -> list[str]:
        if self.halted:
            # A killed Marlin answers nothing until it is reset (M999 on the same line is the exception).
            if "M999" in line.upper():
                self.halted = False
                return ["Resend: 1", "ok"]
            return []
        line = line.split(";", 1)[0].strip()
        if not _COMMAND.match(line):
            return []
        number: int | None = None
        if "*" in line:
            body, _, checksum = line.rpartition("*")
            if not checksum.strip().isdigit() or _checksum(body) != int(checksum):
                return self._resend("checksum mismatch")
            line = body.strip()
        elif line[:1] in "Nn":
            return self._resend("No Checksum with line number")
        if line[:1] in "Nn":
            head, _, rest = line.partition(" ")
            number = int(head[1:])
            line = rest.strip()
            is_m110 = line.upper().startswith("M110")
            if number != self.last_line + 1 and not is_m110:
                return self._resend("Line Number is not Last Line Number+1")
            self.last_line = number
        self.commands.append(line)
        code, words, args = _parse(line)
        handler = getattr(self, f"_{code}", None)
        if handler is None:
            return [f'echo:Unknown command: "{line}"', "ok"]
        return list(handler(words, args, number))

    def _resend(self, why: str) -> list[str]:
        return [f"Error:{why}, Last Line: {self.last_line}", f"Resend: {self.last_line + 1}", "ok"]

    def _temperatures(self) -> str:
        h, b = self.hotend, self.bed
        return f" T:{h.temp:.2f} /{h.target:.2f} B:{b.temp:.2f} /{b.target:.2f} @:0 B@:0"

    # Handlers: _<CODE>(words, argument text, line number) -> output lines. Words map letter->value.

    def _M110(self, w: dict[str, float], _args: str, number: int | None) -> list[str]:
        self.last_line = int(w["N"]) if "N" in w else (number or 0)
        return ["ok"]

    def _M115(self, _w: dict[str, float], _args: str, _n: int | None) -> list[str]:
        return [
            f"FIRMWARE_NAME:{self.firmware_name} SOURCE_CODE_URL:github.com/MarlinFirmware/Marlin "
            f"PROTOCOL_VERSION:1.0 MACHINE_TYPE:{self.machine_type} EXTRUDER_COUNT:1 UUID:{self.uuid}",
            "Cap:SERIAL_XON_XOFF:0", "Cap:EEPROM:1", "Cap:AUTOREPORT_TEMP:1", "Cap:AUTOREPORT_SD_STATUS:0",
            "Cap:BUSY_PROTOCOL:0", "Cap:EMERGENCY_PARSER:1", "Cap:EXTENDED_M20:0", "ok",
        ]  # fmt: skip

    def _M105(self, _w: dict[str, float], _args: str, _n: int | None) -> list[str]:
        return ["ok" + self._temperatures()]

    def _M155(self, w: dict[str, float], _args: str, _n: int | None) -> list[str]:
        self.temp_report_interval = w.get("S", 0.0)
        return ["ok"]

    def _set_target(self, heater: Heater, w: dict[str, float], wait: bool) -> list[str]:
        heater.target = w.get("S", w.get("R", heater.target))
        if wait:
            heater.temp = heater.target if heater.target > 0 else heater.temp
        return ["ok"]

    def _M104(self, w: dict[str, float], _args: str, _n: int | None) -> list[str]:
        return self._set_target(self.hotend, w, wait=False)

    def _M109(self, w: dict[str, float], _args: str, _n: int | None) -> list[str]:
        return self._set_target(self.hotend, w, wait=True)

    def _M140(self, w: dict[str, float], _args: str, _n: int | None) -> list[str]:
        return self._set_target(self.bed, w, wait=False)

    def _M190(self, w: dict[str, float], _args: str, _n: int | None) -> list[str]:
        return self._set_target(self.bed, w, wait=True)

    def _M21(self, _w: dict[str, float], _args: str, _n: int | None) -> list[str]:
        self.sd_ready = True
        return ["echo:SD card ok", "ok"]

    def _M22(self, _w: dict[str, float], _args: str, _n: int | None) -> list[str]:
        self.sd_ready = False
        return ["echo:SD card released", "ok"]

    def _M20(self, _w: dict[str, float], _args: str, _n: int | None) -> list[str]:
        if not self.sd_ready:
            return ["echo:No SD card", "ok"]
        listing = [f"{name} {size}" for name, size in sorted(self.sd_files.items())]
        return ["Begin file list", *listing, "End file list", "ok"]

    def _M23(self, _w: dict[str, float], args: str, _n: int | None) -> list[str]:
        name = args.upper()
        if name not in self.sd_files:
            return [f"open failed, File: {name}.", "ok"]
        self.selected = name
        self.sd_print = SdPrint(name, self.sd_files[name], active=False)
        return [f"File opened: {name} Size: {self.sd_files[name]}", "File selected", "ok"]

    def _M24(self, _w: dict[str, float], _args: str, _n: int | None) -> list[str]:
        if self.sd_print:
            self.sd_print.active = True
        return ["ok"]

    def _M25(self, _w: dict[str, float], _args: str, _n: int | None) -> list[str]:
        if self.sd_print:
            self.sd_print.active = False
        return ["ok"]

    def _M26(self, w: dict[str, float], _args: str, _n: int | None) -> list[str]:
        if self.sd_print:
            self.sd_print.pos = int(w.get("S", 0))
        return ["ok"]

    def _M27(self, _w: dict[str, float], _args: str, _n: int | None) -> list[str]:
        job = self.sd_print
        if job and job.active:
            return [f"SD printing byte {job.pos}/{job.size}", "ok"]
        return ["Not SD printing", "ok"]

    def _M524(self, _w: dict[str, float], _args: str, _n: int | None) -> list[str]:
        self.sd_print = None
        return ["ok"]

    def _M112(self, _w: dict[str, float], _args: str, _n: int | None) -> list[str]:
        self.halted = True
        self.sd_print = None
        self.hotend.target = self.bed.target = 0.0
        return ["Error:Printer halted. kill() called!"]

    def _M114(self, _w: dict[str, float], _args: str, _n: int | None) -> list[str]:
        p = self.position
        return [f"X:{p['X']:.2f} Y:{p['Y']:.2f} Z:{p['Z']:.2f} E:{p['E']:.2f} Count X:0 Y:0 Z:0", "ok"]

    def _G0(self, w: dict[str, float], _args: str, _n: int | None) -> list[str]:
        self._moved = True
        for axis in self.position:
            if axis in w:
                self.position[axis] = self.position[axis] + w[axis] if self.relative else w[axis]
        return ["ok"]

    _G1 = _G0

    def _G92(self, w: dict[str, float], _args: str, _n: int | None) -> list[str]:
        for axis in self.position:
            if axis in w:
                self.position[axis] = w[axis]
        return ["ok"]

    def _G28(self, _w: dict[str, float], _args: str, _n: int | None) -> list[str]:
        self.position.update(X=0.0, Y=0.0, Z=0.0)
        return ["ok"]

    def _G90(self, _w: dict[str, float], _args: str, _n: int | None) -> list[str]:
        self.relative = False
        return ["ok"]

    def _G91(self, _w: dict[str, float], _args: str, _n: int | None) -> list[str]:
        self.relative = True
        return ["ok"]

    def _T(self, w: dict[str, float], _args: str, _n: int | None) -> list[str]:
        return [f"echo:Active Extruder: {int(w.get('T', 0))}", "ok"]

    def _M118(self, _w: dict[str, float], args: str, _n: int | None) -> list[str]:
        return [args, "ok"]

    def _M503(self, _w: dict[str, float], _args: str, _n: int | None) -> list[str]:
        return ["echo:; Steps per unit:", "echo: M92 X80.00 Y80.00 Z400.00 E93.00", "ok"]

    def _ok(self, _w: dict[str, float], _args: str, _n: int | None) -> list[str]:
        return ["ok"]

    # Commands that change nothing a test looks at: accepted with a plain ok.
    _G4 = _G2 = _G3 = _G29 = _M17 = _M18 = _M82 = _M83 = _M84 = _M106 = _M107 = _ok
    _M117 = _M220 = _M221 = _M400 = _M500 = _M501 = _M80 = _M81 = _M300 = _M999 = _ok


def _checksum(text: str) -> int:
    value = 0
    for byte in text.encode("ascii", errors="replace"):
        value ^= byte
    return value


def with_checksum(line: str, number: int) -> str:
    """The framed form OctoPrint sends: 'N<n> <line>*<checksum>'."""
    body = f"N{number} {line}"
    return f"{body}*{_checksum(body)}"


def _parse(line: str) -> tuple[str, dict[str, float], str]:
    """('M104', {'S': 200.0}, 'S200') from 'M104 S200'; a tool change 'T1' is ('T', {'T': 1.0}, '')."""
    match = _HEAD.match(line)
    if not match:
        return line.split(maxsplit=1)[0].upper(), {}, ""
    letter, digits, args = match.group(1).upper(), match.group(2), match.group(3).strip()
    words: dict[str, float] = {}
    if letter == "T":
        words["T"] = float(digits)
        code = "T"
    else:
        code = f"{letter}{int(digits)}"
    for key, value in _WORD.findall(args.upper()):
        try:
            words[key] = float(value) if value not in ("", "-", ".") else 0.0
        except ValueError:
            continue
    return code, words, args
