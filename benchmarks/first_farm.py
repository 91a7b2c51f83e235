"""The headline: from a bare computer to two printers Operational and a camera streaming, through
the README's steps only. Counts the wall time (in all and per step), the commands typed and the
lines of config typed.

    sudo flock /run/lock/octobrix-dev-vm.lock .venv/bin/python -m benchmarks.first_farm

The computer is the lab VM (real udev, real USB hotplug) booted from the cached image: Debian with
nothing of octobrix. The steps are read from README.md as it is: its first command block (the
install) and the add command of "Install and run". The VM has no network (`-nic none`), so the
install takes the README's road for a farm without internet, `--wheels DIR`, with the lab's
wheelhouse and a copy of this checkout brought in first (a USB stick's worth: not timed). A user
types the README's commands; here they run as root through the guest agent, without `sudo`.

Printers are two simulated boards on USB serial adapters: with the README's `add --all`, both cables
go in and then the one command runs; with a plain `add`, each goes in when it says to plug in, one
after the other without waiting for the first to come up (as a user would). The
camera is v4l2loopback fed by ffmpeg (QEMU has no USB webcam): if `octobrixctl discover` lists it,
it is added like the boards; if not, its entry is typed into /etc/octobrix.toml as the README's
config reference says, and those lines count.

Timings under the VM's software emulation (TCG, no KVM) are several times what the same steps take
on a real computer: OctoPrint's start and the venv builds are CPU-bound. `benchmarks/install_time.py`
times the same install at native speed in a container (no udev there, so no plugging).

Baseline in the same run: the same farm written by hand, the road before `octobrixctl add`
(`octobrixctl discover --toml`, paste the entries into /etc/octobrix.toml, save). It builds the
same OctoPrints, so its time is this run's less the adds: what differs is what a user types, which
is counted from the entries this run's adds wrote.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.lab.harness import loopcam
from tests.lab.harness.installs import readme_commands
from tests.lab.harness.printer_sim import MarlinSim
from tests.lab.harness.project import CHECKOUT_IN_GUEST, REPO, WHEELS_IN_GUEST, bring_checkout_and_wheels
from tests.lab.harness.vm import UsbSerialAdapter, Vm
from tests.lab.harness.waiting import wait_until
from tests.lab.harness.wheelhouse import wheelhouse

TARGET_SECONDS = 600.0
TARGET_COMMANDS = 3
TARGET_CONFIG_LINES = 0
SLOW = 2400.0  # OctoPrint under software emulation builds and starts in minutes
CAMERA = "cam1"
CAMERA_PORT = 8081
# What a user types for the loopback camera when nothing finds it (the defaults fit its feed:
# 1280x720 MJPEG at 15 fps).
CAMERA_BY_HAND = f'\n[cameras.{CAMERA}]\ndevice_name = "{loopcam.NAME}"\nport = {CAMERA_PORT}\n'
STATUS = "octobrixctl status --json"
# The same CPU-bound Python in the guest and on this machine: how much slower the emulated CPU is.
CALIBRATION = (
    "import time; t = time.perf_counter(); sum(i * i for i in range(2_000_000)); print(time.perf_counter() - t)"
)


def readme_steps() -> tuple[str, str]:
    """(install command, add command) as the README gives them: its add for several devices at once
    when it has one (`add --all`), else the add of the device plugged in next."""
    install = readme_commands()[0]
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Install and run", 1)[1].split("\n## ", 1)[0]
    adds = re.findall(r"`(sudo octobrixctl add(?: --all)?)`", section)
    if not adds or "\n" in install:
        raise SystemExit("README.md: no single install command, or no `sudo octobrixctl add` in 'Install and run'")
    return install, max(adds, key=len)


def as_root(command: str) -> str:
    return command.removeprefix("sudo ")


@dataclass(frozen=True)
class Typed:
    command: str
    seconds: float  # from typing it to its prompt coming back
    output: str


class Terminal:
    """Commands as a user types them, run in the guest in the background (some wait for a plug);
    every output line stamped with the guest's clock."""

    def __init__(self, vm: Vm) -> None:
        self.vm = vm
        self.typed: list[Typed] = []
        self.config_lines = 0
        self._n = 0

    def start(self, command: str) -> str:
        self._n += 1
        job = f"/tmp/bench-{self._n}"
        stamped = (
            f'( {command} ) 2>&1 | while IFS= read -r line; do printf \'%s %s\\n\' "$(date +%s.%N)" "$line"; done;'
            " exit ${PIPESTATUS[0]}"
        )
        self.vm.sh(
            f"rm -f {job}.rc; : > {job}.out; (cd {CHECKOUT_IN_GUEST} && bash -c {shlex.quote(stamped)}"
            f" > {job}.out 2>&1; echo $? > {job}.rc) >/dev/null 2>&1 &"
        )
        return job

    def output(self, job: str) -> str:
        return self.vm.read_file(f"{job}.out").decode(errors="replace")

    def finish(self, job: str, command: str, started: float, timeout: float = SLOW) -> Typed:
        wait_until(f"`{command}` to return", lambda: self._rc(job) is not None, timeout=timeout, every=1.0)
        typed = Typed(command, time.monotonic() - started, self.output(job))
        if self._rc(job) != 0:
            raise SystemExit(f"`{command}` failed ({self._rc(job)}):\n{typed.output}")
        self.typed.append(typed)
        return typed

    def type(self, command: str, timeout: float = SLOW) -> Typed:
        started = time.monotonic()
        return self.finish(self.start(command), command, started, timeout)

    def _rc(self, job: str) -> int | None:
        done = self.vm.run(["cat", f"{job}.rc"], check=False)
        return int(done.stdout) if done.returncode == 0 and done.stdout.strip() else None


def install_steps(output: str) -> list[tuple[str, float]]:
    """install.sh's own lines, each with the seconds until the next one: where its time goes."""
    stamped = [(float(stamp), line) for stamp, _, line in (ln.partition(" ") for ln in output.splitlines())]
    said = [(at, line) for at, line in stamped if line.startswith("octobrix: ")]
    said.append((stamped[-1][0], "(end)"))
    return [(line.removeprefix("octobrix: "), nxt - at) for (at, line), (nxt, _) in itertools.pairwise(said)]


def step_kind(line: str) -> str:
    """apt, pip (octobrix's venv) or pip+start (a printer's OctoPrint venv and its first start), or octobrix's own."""
    if "apt" in line and ("updating" in line or "installing" in line):
        return "apt"
    if line.startswith("installing octobrix from"):
        return "pip"
    if line.startswith("applying"):
        return "OctoPrint venv (pip) + start"
    return "octobrix"


def printer_states(vm: Vm) -> dict[str, str | None]:
    # While octobrixd applies, status may say so with another exit code: the rows are what counts.
    out = vm.run(shlex.split(STATUS), check=False, timeout=120).stdout
    try:
        return {row["name"]: row["printer_state"] for row in json.loads(out)["printers"]}
    except (ValueError, KeyError):
        return {}


def streaming(vm: Vm) -> bool:
    got = vm.run(["curl", "-s", "-o", "/tmp/bench-snap.jpg", "-w", "%{http_code}",
                  f"http://127.0.0.1:{CAMERA_PORT}/snapshot"], check=False, timeout=60)  # fmt: skip
    return got.stdout == "200" and vm.read_file("/tmp/bench-snap.jpg")[:3] == b"\xff\xd8\xff"


def added_printers(typed: Typed) -> list[str]:
    names = re.findall(r"added \[printers\.([a-z0-9-]+)\]", typed.output)
    if not names:
        raise SystemExit(f"`{typed.command}` added no printer:\n{typed.output}")
    return names


def add_by_plugging(term: Terminal, add: str, adapter: UsbSerialAdapter) -> list[str]:
    """The README's add of the next plug; the cable goes in once it says to plug in."""
    started = time.monotonic()
    job = term.start(as_root(add))
    wait_until("add to say plug in", lambda: "Plug in the printer board" in term.output(job), timeout=600, every=0.5)
    adapter.plug()
    return added_printers(term.finish(job, add, started, timeout=600))


def add_printers(vm: Vm, term: Terminal, add: str, boards: list[UsbSerialAdapter]) -> list[str]:
    if "--all" not in add:
        return [name for board in boards for name in add_by_plugging(term, add, board)]
    for board in boards:  # all cables in, then the one command
        board.plug()
        board.guest_tty(timeout=120)
    vm.run(["udevadm", "settle"], timeout=120)
    return added_printers(term.type(as_root(add), timeout=600))


def entry_lines(config: str, section: str) -> int:
    """The lines of one table a user would type: neither comments nor blank."""
    body = config.split(f"[{section}]\n", 1)[1]
    lines = []
    for line in body.splitlines():
        if line.startswith("["):
            break
        if line.strip() and not line.lstrip().startswith("#"):
            lines.append(line)
    return 1 + len(lines)


def progress(what: str, since: float) -> float:
    """Seconds since the start, said at once (a run cut short still leaves its figures)."""
    seconds = time.monotonic() - since
    print(f"[{seconds:7.1f} s] {what}", flush=True)
    return seconds


def timed_wait(what: str, check: Callable[[], Any], since: float) -> float:
    wait_until(what, check, timeout=SLOW, every=3.0)
    return progress(what, since)


def operational(vm: Vm, name: str) -> Callable[[], bool]:
    return lambda: printer_states(vm).get(name) == "Operational"


@dataclass(frozen=True)
class Run:
    installed: Typed
    installed_at: float
    names: list[str]
    adds_started: float
    adds_done: float
    camera_by_add: bool
    per_printer: dict[str, float]
    camera_at: float
    total: float
    typed: list[Typed]
    config_lines: int
    hand_lines: int
    load: tuple[float, float]
    emulation: float  # TCG's slow-down of CPU-bound work, guest over host


def add_camera(vm: Vm, term: Terminal, add: str) -> bool:
    """The README's add when discovery lists the camera (`add --all` took it already); else its
    entry typed in an editor. True: added by octobrix."""
    # A table, not the starter file's commented example.
    if re.search(r"^\[cameras\.", vm.read_file("/etc/octobrix.toml").decode(), re.MULTILINE):
        return True
    found = json.loads(vm.run(["octobrixctl", "discover", "--json"], timeout=120).stdout)
    camera_found = [c for c in found["cameras"] if not c.get("bound_to")]
    if camera_found:
        # The add of one named device (`--all` takes no --device).
        one = as_root(add).removesuffix(" --all")
        term.type(f"{one} --device {camera_found[0]['node']} --name {CAMERA} --port {CAMERA_PORT}")
        return True
    # Not listed (its node offers no capture without a writer, or shares its name): typed by hand.
    started = time.monotonic()
    config = vm.read_file("/etc/octobrix.toml").decode()
    vm.write_file("/etc/octobrix.toml", config + CAMERA_BY_HAND)  # saved in an editor
    term.typed.append(Typed("editor: /etc/octobrix.toml (the camera's entry)", time.monotonic() - started, ""))
    term.config_lines += CAMERA_BY_HAND.strip().count("\n") + 1
    return False


def emulation_factor(vm: Vm) -> float:
    """Guest seconds over host seconds for CALIBRATION, medians of three: TCG's slow-down of CPU work."""
    guest = statistics.median(float(vm.run(["python3", "-c", CALIBRATION], timeout=300).stdout) for _ in range(3))
    host = statistics.median(
        float(subprocess.run(["python3", "-c", CALIBRATION], capture_output=True, text=True, check=True).stdout)
        for _ in range(3)
    )
    return guest / host


def run_farm(vm: Vm, workdir: Path) -> Run:
    install, add = readme_steps()
    # Not timed: the checkout and the wheels on a stick, the boards' cables still out, the camera on.
    bring_checkout_and_wheels(vm, workdir, wheelhouse())
    boards = [vm.plug_usb_serial(f"BENCH{n:04d}", MarlinSim(), connect=False) for n in (1, 2)]
    loopcam.load(vm)
    loopcam.feed(vm, "1280x720", 15, "mjpeg")
    loopcam.announce(vm)
    loopcam.pin_streamer(vm, f"ustreamer@{CAMERA}.service")
    term = Terminal(vm)
    factor = emulation_factor(vm)

    load_at_start = os.getloadavg()[0]
    t0 = time.monotonic()
    installed = term.type(f"{as_root(install)} --wheels {WHEELS_IN_GUEST}")
    installed_at = progress(f"`{installed.command}` returned", t0)
    for line, seconds in install_steps(installed.output):
        print(f"    {seconds:7.1f} s  {line}", flush=True)
    adds_started = time.monotonic() - t0
    names = add_printers(vm, term, add, boards)
    adds_done = progress(f"`{add}` returned: added {', '.join(names)}", t0)
    camera_by_add = add_camera(vm, term, add)
    progress(f"camera {'added by octobrixctl' if camera_by_add else 'entry typed and saved'}", t0)
    per_printer = {name: timed_wait(f"{name} Operational", operational(vm, name), t0) for name in names}
    camera_at = timed_wait("the camera streaming", lambda: streaming(vm), t0)
    total = time.monotonic() - t0
    config = vm.read_file("/etc/octobrix.toml").decode()
    hand_lines = sum(entry_lines(config, f"printers.{name}") for name in names) + (
        entry_lines(config, f"cameras.{CAMERA}") if camera_by_add else term.config_lines
    )
    return Run(installed, installed_at, names, adds_started, adds_done, camera_by_add, per_printer, camera_at,
               total, term.typed, term.config_lines, hand_lines, (load_at_start, os.getloadavg()[0]),
               factor)  # fmt: skip


def report(run: Run) -> None:
    steps = install_steps(run.installed.output)
    by_kind: dict[str, float] = {}
    for line, seconds in steps:
        by_kind[step_kind(line)] = by_kind.get(step_kind(line), 0.0) + seconds
    print("From the bare lab VM (TCG, offline: install.sh --wheels) to two printers Operational and a camera streaming")
    print(f"(this machine's load average: {run.load[0]:.1f} at the start, {run.load[1]:.1f} at the end)")
    print(f"\n{'step':<62} {'seconds':>8}")
    print(f"{'1. ' + run.installed.command:<62} {run.installed.seconds:8.1f}")
    for line, seconds in steps:
        print(f"     {line[:56]:<57} {seconds:8.1f}  ({step_kind(line)})")
    for n, typed in enumerate(run.typed[1:], start=2):
        print(f"{f'{n}. {typed.command}'[:62]:<62} {typed.seconds:8.1f}")
    how = "added by octobrixctl" if run.camera_by_add else f"typed, {run.config_lines} lines: discover lists none"
    print(f"     printers added: {', '.join(run.names)}; camera {CAMERA}: {how}")
    print(f"\n{'install done':<40} {run.installed_at:8.1f} s")
    print(f"{'both adds done':<40} {run.adds_done:8.1f} s")
    for name, seconds in run.per_printer.items():
        print(f"{name + ' Operational':<40} {seconds:8.1f} s")
    print(f"{CAMERA + ' streaming (/snapshot is a JPEG)':<40} {run.camera_at:8.1f} s")
    # add returns once octobrixd has applied (systemd waits for a reload's READY=1): that is the new
    # printers' venvs being built; from then to Operational, their OctoPrints' first start and connection.
    by_kind["OctoPrint venvs of the added printers (pip, in octobrixd's apply)"] = run.adds_done - run.adds_started
    starting = max(run.per_printer.values()) - run.adds_done
    by_kind["OctoPrints' first start and connection"] = starting
    heavy = sum(v for k, v in by_kind.items() if k != "octobrix")
    print("\ntime by kind: " + "; ".join(f"{k} {v:.1f} s" for k, v in sorted(by_kind.items())))
    print("(offline: apt and pip install from what is on the computer; nothing is downloaded in this VM)")
    print(
        f"\nthe emulated CPU is {run.emulation:.1f}x slower than this machine's (the same Python loop in both);"
        f" at native speed the run would take about {run.total / run.emulation:.0f} s"
        " (an estimate: the time scaled as if every step were CPU-bound, as pip and OctoPrint's start mostly are)"
    )

    commands = len(run.typed)
    rows = [
        ("wall time, bare VM to farm", f"{run.total:.0f} s", f"<= {TARGET_SECONDS:.0f} s", run.total <= TARGET_SECONDS),
        ("  of it pip and OctoPrint's first starts", f"{heavy:.0f} s", "most of it", heavy > run.total / 2),
        ("  at native speed (estimate)", f"{run.total / run.emulation:.0f} s", f"<= {TARGET_SECONDS:.0f} s",
         run.total / run.emulation <= TARGET_SECONDS),
        ("commands typed", str(commands), f"<= {TARGET_COMMANDS}", commands <= TARGET_COMMANDS),
        ("lines of config typed", str(run.config_lines), f"= {TARGET_CONFIG_LINES}",
         run.config_lines == TARGET_CONFIG_LINES),
    ]  # fmt: skip
    print(f"\n{'figure':<42} {'measured':>9} {'target':>10}")
    for what, measured, target, met in rows:
        print(f"{what:<42} {measured:>9} {target:>10}  {'met' if met else 'NOT met'}")
    print(
        f"\nbaseline, the same farm by hand (discover --toml, paste, save): 3 commands"
        f" (install, discover, editor), {run.hand_lines} lines of config typed or pasted"
        f" (counted from the entries written in this run); its time is this run's less the adds"
    )


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="oblab-bff-", dir="/tmp"))  # short socket paths
    try:
        with Vm(workdir) as vm:
            try:
                run = run_farm(vm, workdir)
            except BaseException:
                print(f"--- octobrixd ---\n{vm.journal('octobrixd.service', lines=80)}")
                raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report(run)


if __name__ == "__main__":
    main()
