"""octobrix installed the way a newcomer installs it: the README's command from a checkout in a
user's home (with sudo), or the Debian package through apt. Used by tests/lab/test_install*.py and
benchmarks/install_time.py.

The lab's containers reach PyPI through this machine's TLS-inspecting proxy: its CA certificates
are copied in first, as an admin of such a network would have done on the farm computer.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import http.client
import json
import os
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from octobrixd.config.model import default_door_port
from tests.lab.harness.container import Container, LabError
from tests.lab.harness.procs import lab_tempdir
from tests.lab.harness.project import REPO, checkout_files

USER = "maker"
CHECKOUT = f"/home/{USER}/octobrix"
EXTRA_CA = Path("/usr/local/share/ca-certificates")
OPERATIONAL_TIMEOUT = 180.0
# What the demo install runs, by the script or the package alike.
DEMO_UNITS = ("octobrixd.service", "octobrix-config.path", "octoprint@demo.service")
# What install.sh enables and starts of octobrix's own; the lab's installed layer and farm VM leave
# them off between modules, so that each module's install starts them as a first install does.
OCTOBRIX_SERVICES = ("octobrixd.service", "octobrix-config.path", "octobrix-backup.timer", "octobrix-web.socket")


def readme_commands() -> list[str]:
    """The README's fenced code blocks, in order: the first is the install command, the second the tests'."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return [block.strip() for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, re.DOTALL | re.MULTILINE)]


def trust_host_certificates(box: Container) -> None:
    if EXTRA_CA.is_dir() and any(EXTRA_CA.iterdir()):
        box.copy_in(EXTRA_CA, str(EXTRA_CA))
        # A bare server has no ca-certificates yet: octobrix's installers bring it (python3-venv
        # needs it), and its own postinst then adds these, as an admin's local CA would be.
        if box.path("/usr/sbin/update-ca-certificates").exists():
            box.run(["update-ca-certificates"])


def apt_get(box: Container, *args: str, timeout: float = 600.0) -> subprocess.CompletedProcess[str]:
    return box.run(["apt-get", "-q", "-y", *args], env={"DEBIAN_FRONTEND": "noninteractive"}, timeout=timeout)


PORTS_LOCK_DIR = Path("/run/lock")
_held_ports: set[int] = set()
# Every container that installs octobrix runs nginx on the shared network's port 80.
FRONT_DOOR_PORT = 80


def port_lock(port: int) -> Path:
    return PORTS_LOCK_DIR / f"octobrix-lab-port-{port}.lock"


def wait_port_free(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.settimeout(1)
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                return
        if time.monotonic() > deadline:
            raise LabError(
                f"port {port} on this machine is still in use after {timeout:.0f}s (another lab test's OctoPrint?): "
                "the demo printer needs it"
            )
        time.sleep(2)


@contextlib.contextmanager
def holding_printer_ports(
    ports: Iterable[int] = (5000, 5001), timeout: float = 1800.0, *, front_door_port: int | None = FRONT_DOOR_PORT
) -> Iterator[None]:
    """Containers share the host's network, and the demo printer (like test_instances' farm) listens
    on a fixed port: a lab session holds a host-wide lock on each port it uses while such a container
    runs, so two sessions (two checkouts, two engineers) never talk to each other's OctoPrint, while
    tests on other ports go on beside them. Locks are taken in port order (no deadlock); then it
    waits for the ports to be free of anything else. The front door's port is held too (80 unless
    the test's config sets `[frontdoor] port`, or None when it sets `enabled = false`): every install
    of octobrix starts the front door's nginx there, and on each printer's door port (its default,
    config.default_door_port), held with it."""
    PORTS_LOCK_DIR.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    # A port this process holds already (the installed layer built inside a module's hold) is its to use.
    doors = [] if front_door_port is None else [default_door_port(port) for port in ports]
    wanted = sorted({*ports, *doors, *([] if front_door_port is None else [front_door_port])} - _held_ports)
    with contextlib.ExitStack() as stack:
        stack.callback(_held_ports.difference_update, wanted)
        _held_ports.update(wanted)
        for port in wanted:
            handle = stack.enter_context(port_lock(port).open("a"))
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise LabError(f"another lab session held {port_lock(port)} for {timeout:.0f}s") from None
                    time.sleep(2)
        for port in wanted:
            wait_port_free(port, max(10.0, deadline - time.monotonic()))
        yield


def add_sudo_user(box: Container, *packages: str) -> None:
    """The server's owner: a user who may sudo (the harness installs sudo, with packages)."""
    trust_host_certificates(box)
    apt_get(box, "update")
    apt_get(box, "install", "--no-install-recommends", "sudo", *packages)
    box.run(["useradd", "--create-home", "--shell", "/bin/bash", USER])
    box.write_file(f"/etc/sudoers.d/{USER}", f"{USER} ALL=(ALL) NOPASSWD: ALL\n", mode=0o440)


def prepare_newcomer(box: Container) -> None:
    """A fresh server as its owner has it: a user who may sudo, and a checkout of octobrix in their home."""
    add_sudo_user(box)
    for rel in checkout_files():
        box.copy_in(REPO / rel, f"{CHECKOUT}/{rel}")
    box.run(["chown", "-R", f"{USER}:{USER}", CHECKOUT])


def as_user(box: Container, command: str, timeout: float = 1200.0) -> subprocess.CompletedProcess[str]:
    """Run a shell command line as the user, in the checkout, as typed in a terminal."""
    return box.run(["runuser", "-l", USER, "-c", f"cd {CHECKOUT} && {command}"], check=False, timeout=timeout)


@dataclass(frozen=True)
class Timed:
    result: subprocess.CompletedProcess[str]
    seconds: float

    @property
    def output(self) -> str:
        return f"--- stdout ---\n{self.result.stdout}\n--- stderr ---\n{self.result.stderr}"


def run_readme_install(box: Container, extra: str = "") -> Timed:
    """The README's first command, exactly as written (plus extra arguments), timed."""
    command = readme_commands()[0]
    started = time.monotonic()
    result = as_user(box, f"{command} {extra}".strip())
    return Timed(result, time.monotonic() - started)


@functools.cache
def built_deb() -> Path:
    """packaging/build-deb.sh run once per test session; returns the .deb."""
    out = lab_tempdir("deb")
    subprocess.run([str(REPO / "packaging" / "build-deb.sh"), "--out", str(out)], check=True, capture_output=True)
    (deb,) = out.glob("octobrix_*.deb")
    return deb


def install_deb(box: Container, deb: Path, *apt_args: str) -> Timed:
    """`apt install ./octobrix_*.deb` from root's home, as the README says, timed (with the `apt update` before it)."""
    box.copy_in(deb, f"/root/{deb.name}")
    started = time.monotonic()
    apt_get(box, "update")
    result = box.run(
        ["sh", "-c", f"cd /root && apt install -y {' '.join(apt_args)} ./octobrix_*.deb"],
        env={"DEBIAN_FRONTEND": "noninteractive"},
        check=False,
        timeout=1200,
    )
    return Timed(result, time.monotonic() - started)


# --- what a user sees -------------------------------------------------------------------------


def api(
    box: Container, port: int, name: str, path: str, body: dict[str, Any] | None = None, *, timeout: float = 60.0
) -> Any:
    """name's OctoPrint API on port, with its octobrixd key. The timeout is generous: OctoPrint's
    plugin manager answers slowly on a busy two-core machine."""
    secrets = json.loads(box.read_file(f"/var/lib/octobrix/.secrets/{name}.json"))
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"X-Api-Key": secrets["api_key"], "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        text = response.read()
    return json.loads(text) if text.strip() else None


@dataclass(frozen=True)
class OctoPrints:
    """A lab farm's OctoPrints by printer name, on the ports its config gives them."""

    ports: Mapping[str, int]

    def api(self, box: Container, name: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """api() of printer name, on its port."""
        return api(box, self.ports[name], name, path, body)


def ctl(box: Container, *args: str, timeout: float = 900.0) -> tuple[int, str]:
    """`octobrixctl ARGS` as root, as an administrator types it: (exit code, its stdout then stderr)."""
    done = box.run(["octobrixctl", *args], check=False, timeout=timeout)
    return done.returncode, done.stdout + done.stderr


def ctl_ok(box: Container, *args: str, timeout: float = 900.0) -> str:
    """ctl() that must succeed: its stdout then stderr."""
    rc, out = ctl(box, *args, timeout=timeout)
    assert rc == 0, out
    return out


def _form_part(boundary: str, field: str, filename: str | None = None) -> str:
    """A multipart part's head, up to where its value starts."""
    disposition = f'form-data; name="{field}"' + (f'; filename="{filename}"' if filename else "")
    return f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n"


def _print_fields(boundary: str, print_it: bool) -> str:
    """Upload-and-Print's two fields, as OctoPrint's page and the slicers send them."""
    return "".join(f"{_form_part(boundary, field)}true\r\n" for field in ("select", "print")) if print_it else ""


def upload_gcode(
    box: Container, port: int, name: str, filename: str, gcode: str, *, print_it: bool, api_key: str | None = None
) -> None:
    """Upload a G-code file to name's OctoPrint, and print it (OctoPrint's Upload-and-Print) if print_it:
    the multipart POST its web page makes. api_key: another OctoPrint's (not octobrix's), e.g. an old one's."""
    boundary = uuid.uuid4().hex
    body = f"{_form_part(boundary, 'file', filename)}{gcode}\r\n{_print_fields(boundary, print_it)}".encode()
    body += f"--{boundary}--\r\n".encode()
    key = api_key or json.loads(box.read_file(f"/var/lib/octobrix/.secrets/{name}.json"))["api_key"]
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/files/local",
        data=body,
        headers={"X-Api-Key": key, "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status == 201, response.read()


# What a streamed upload repeats: a slicer's line (short of a megabyte per send).
UPLOAD_LINE = b"G1 X10 Y10 E0.1 F1800 ; a slicer's line, padding the file to its size\n"


def stream_upload(
    port: int, api_key: str, filename: str, size: int, *, print_it: bool = False, timeout: float = 900
) -> tuple[int, bytes, float]:
    """A G-code file of size bytes sent as a slicer sends it (multipart, X-Api-Key), streamed without
    being held in memory: OctoPrint's HTTP status, its answer and the seconds until it came."""
    boundary = uuid.uuid4().hex
    head = f"{_print_fields(boundary, print_it)}{_form_part(boundary, 'file', filename)}".encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    chunk = UPLOAD_LINE * ((1 << 20) // len(UPLOAD_LINE) + 1)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    started = time.perf_counter()
    try:
        conn.putrequest("POST", "/api/files/local")
        conn.putheader("X-Api-Key", api_key)
        conn.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
        conn.putheader("Content-Length", str(len(head) + size + len(tail)))
        conn.endheaders()
        conn.send(head)
        sent = 0
        while sent < size:
            piece = chunk[: size - sent]
            conn.send(piece)
            sent += len(piece)
        conn.send(tail)
        response = conn.getresponse()
        body = response.read()
        return response.status, body, time.perf_counter() - started
    finally:
        conn.close()


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, ""


def wait_operational(box: Container, name: str = "demo", port: int = 5000) -> dict[str, Any]:
    deadline = time.monotonic() + OPERATIONAL_TIMEOUT
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = api(box, port, name, "/api/connection")
            if last["current"]["state"] == "Operational":
                return dict(last)
        # Refused, reset, OctoPrint's start-up placeholder (not HTTP), not JSON yet.
        except (OSError, http.client.HTTPException, ValueError) as exc:
            last = exc
        time.sleep(1)
    raise AssertionError(f"{name} never became Operational: {last}\n{box.journal(f'octoprint@{name}', 60)}")


def reboot_brings_everything_back(box: Container) -> None:
    """A farm computer's reboot: the demo's units come up by themselves (enabled, not started by
    hand) and its OctoPrint is Operational again, serving its pages."""
    wait_operational(box)
    box.reboot()
    for unit in DEMO_UNITS:
        assert box.wait_active(unit, timeout=90) == "active", box.journal(unit, 60)
    wait_operational(box)
    assert get(5000, "/online.txt") == (200, "online\n")


# Wizards OctoPrint does not require of a fresh instance, but shows after a later event unless its
# config.yaml records them as seen: File Check's, as soon as the uploads folder holds a file the
# plugin never checked (a slicer's upload before anyone opened the page; an imported basedir).
LATER_WIZARDS = ("file_check",)


def pending_wizards(box: Container, name: str = "demo", port: int = 5000) -> list[str]:
    """The wizards name's OctoPrint shows on its first page, now or after its first upload."""
    wizards = api(box, port, name, "/api/setup/wizard")
    return [
        wizard
        for wizard, state in wizards.items()
        if (state["required"] or wizard in LATER_WIZARDS) and not state["ignored"]
    ]


def status_line(box: Container, name: str = "demo") -> str:
    text = box.run(["octobrixctl", "status"]).stdout
    return next((line for line in text.splitlines() if line.startswith(f"{name} ")), text)


def unit_identity(box: Container, units: Iterable[str]) -> dict[str, tuple[str, str]]:
    """Each unit's main PID and when it last started: a restart changes one or both."""
    identity = {}
    for unit in units:
        shown = box.systemctl("show", "-p", "MainPID", "-p", "ActiveEnterTimestampMonotonic", unit).stdout
        props = dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)
        identity[unit] = (props.get("MainPID", ""), props.get("ActiveEnterTimestampMonotonic", ""))
    return identity


def file_states(box: Container, tops: Iterable[str], skip: re.Pattern[str] | None = None) -> dict[str, str]:
    """Every file and link below tops: content hash, mode and modification time (a rewrite with the
    same content still shows). Paths matching skip are left out."""
    states: dict[str, str] = {}
    for top in tops:
        base = box.path(top)
        if not base.exists():
            continue
        for folder, dirs, files in os.walk(base):
            dirs.sort()
            for name in [*files, *(d for d in dirs if (Path(folder) / d).is_symlink())]:
                path = Path(folder) / name
                guest = "/" + str(path.relative_to(box.root))
                if skip is not None and skip.search(guest):
                    continue
                info = path.lstat()
                if path.is_symlink():
                    states[guest] = f"-> {path.readlink()}"
                elif path.is_file():
                    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
                    states[guest] = f"{digest} {info.st_mode:o} {info.st_mtime_ns}"
    return states


SECOND_PRINTER = "\n[printers.second]\nvirtual = true\nport = 5001\n"


def add_printer_by_editing_the_config(box: Container) -> None:
    """What the README tells a user: add a printer to /etc/octobrix.toml and save it. octobrixd
    applies it by itself (octobrix-config.path -> reload -> SIGHUP), without restarting: the new
    printer becomes Operational, octobrixd keeps its process, the reload leaves no failed unit
    and no error in the journal. On a minimal Debian this once failed silently (/bin/kill)."""
    daemon = unit_identity(box, ["octobrixd.service"])
    box.write_file("/etc/octobrix.toml", box.read_file("/etc/octobrix.toml") + SECOND_PRINTER)
    try:
        wait_operational(box, "second", 5001)
    except AssertionError as error:
        # Why the edit went nowhere is in the reload's journal (e.g. "Failed to locate executable").
        raise AssertionError(
            f"{error}\n--- octobrixd:\n{box.journal('octobrixd.service', 40)}\n"
            f"--- octobrix-config.service:\n{box.journal('octobrix-config.service', 20)}"
        ) from None
    assert unit_identity(box, ["octobrixd.service"]) == daemon, "octobrixd was restarted, not reloaded"
    journal = box.journal("octobrixd.service", 200)
    assert "reloading /etc/octobrix.toml" in journal, journal
    for trouble in ("Failed to locate executable", "Control process exited", "Reload failed"):
        assert trouble not in journal, journal
    failed = box.systemctl("--failed", "--plain", "--no-legend").stdout
    assert "octo" not in failed, f"{failed}\n{box.journal('octobrix-config.service', 30)}"
    # The daemon's handshake: SIGHUP -> RELOADING=1 -> READY=1 once applied. A reload by hand
    # returns and leaves the daemon active, on the same process.
    reloaded = box.systemctl("reload", "octobrixd.service", check=False)
    assert reloaded.returncode == 0, reloaded.stderr + box.journal("octobrixd.service", 30)
    assert box.wait_active("octobrixd.service") == "active"
    assert unit_identity(box, ["octobrixd.service"])["octobrixd.service"][0] == daemon["octobrixd.service"][0]
    assert "second " in box.run(["octobrixctl", "status"]).stdout
