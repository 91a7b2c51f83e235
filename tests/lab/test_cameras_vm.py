"""A camera for real, in the lab VM: a v4l2loopback camera fed by ffmpeg's test source, bound by
its V4L2 name; `octobrixctl apply` starts ustreamer@cam1 under its hardening, the snapshot is a
real JPEG of the configured size, and the OctoPrint wired to it has the stream and snapshot URLs
and fetches snapshots itself.

Why the VM and a real OctoPrint in it: the camera needs the VM's kernel (v4l2loopback; the
container shares the host's kernel and has no udev), and "OctoPrint fetches the snapshot" only
means something with OctoPrint and the streamer on one machine, as on a farm. The VM has no
network, so octobrix and OctoPrint install from a folder of wheels (`install.sh --wheels` and
`[octobrix] wheels`), the offline farm's path; no extra machinery. octobrixd is stopped after the
install so that `octobrixctl apply` alone is what starts the stream; the last test starts octobrixd
as its systemd service and pulls the camera and plugs it back in (hotplug is the daemon's job).

The front door: QEMU forwards host port 8660 (127.0.0.1 only; user networking with restrict=on,
so the guest reaches nothing) to the guest's port 80, where octobrix's nginx is. From the host,
as from another computer on the farm's network, the camera's stream and snapshot answer there
with the farm login and are refused without it, and Debian's chromium (tests/lab/harness/browser.py)
logs in, opens the printer's OctoPrint from the overview and sees the stream in its Control tab.

The module's last tests are for self-healing streams (camera_health.py), sharing its VM and
install, with octobrixd as its service looking every 8 s (OCTOBRIXD_CAMERA_CHECK_SECONDS in a lab
drop-in; 30 s by default). A camera that hangs is the loopback camera with its feeder paused
(SIGSTOP: the writer keeps the device open and writes nothing, as a hung camera's driver does):
each time ustreamer reopens the device, v4l2loopback hands it the last written frame once more (a
new reader's position starts behind the writer's, so it gets one frame, then nothing: 0.12.7's
get_capture_buffer), and /state flaps online. A real camera can do the same; octobrix judges by
new frames between two looks, not by "online". SIGCONT is the camera delivering again. QEMU
emulates no UVC camera (TESTLAB.md), so the USB re-attach step is proven on the USB device QEMU
does emulate, the usb-serial adapter, with the same octobrix code (camera_health.usb_device_of and
reattach) the daemon calls for a camera; the loopback camera is not on USB, and octobrixd says so.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from octobrixd.cameras.health import SAVE_EVERY
from octobrixd.cameras.streams import jpeg_size
from tests.lab.harness import loopcam
from tests.lab.harness.browser import TABLET, Browser
from tests.lab.harness.guest_probe import assert_left_as_it_was, footprint, main_pid
from tests.lab.harness.offline_vm import FARM_DOOR, PRINTER_DOORS, SharedVm, offline_farm_vm
from tests.lab.harness.printer_sim import MarlinSim
from tests.lab.harness.project import REPO, WHEELS_IN_GUEST
from tests.lab.harness.vm import Vm
from tests.lab.harness.waiting import wait_until

pytestmark = pytest.mark.lab

# OctoPrint under software emulation installs and starts in minutes.
SLOW = 900.0
BASE = f"""\
[octobrix]
wheels = "{WHEELS_IN_GUEST}"
public_host = "farm.local"

[printers.demo]
virtual = true
port = 5000
door_port = {PRINTER_DOORS[0]}
"""
WITH_CAMERA = (
    BASE.replace("port = 5000\n", 'port = 5000\ncamera = "cam1"\n')
    + f"""
[cameras.cam1]
device_name = "{loopcam.NAME}"
resolution = "1280x720"
fps = 15
format = "mjpeg"
port = 8081

[cameras.cam1.controls]
timeout = 3000
"""
)
UNIT = "ustreamer@cam1.service"
DAEMON = "octobrixd.service"
SNAPSHOT = "http://127.0.0.1:8081/snapshot"
# The host's port to the guest's front door (port 80 in the guest, where nothing else listens).
HOST_DOOR = FARM_DOOR
DOOR = f"http://127.0.0.1:{HOST_DOOR}"
# demo's own origin on the front door, forwarded to the host as it is.
DEMO_DOOR = f"http://127.0.0.1:{PRINTER_DOORS[0]}"
SCREENSHOTS = REPO / "test-output" / "cameras-vm"


def fetch(vm: Vm, url: str, *headers: str) -> tuple[int, bytes]:
    """GET url inside the guest; (HTTP status, body)."""
    flags = [arg for header in headers for arg in ("-H", header)]
    result = vm.run(
        ["curl", "-s", "-g", "-o", "/tmp/lab-fetch", "-w", "%{http_code}", *flags, url], check=False, timeout=60
    )
    status = int(result.stdout or 0)
    return status, vm.read_file("/tmp/lab-fetch") if status else b""


def api_key(vm: Vm) -> str:
    return str(json.loads(vm.read_file("/var/lib/octobrix/.secrets/demo.json"))["api_key"])


def octoprint(vm: Vm, path: str) -> tuple[int, bytes]:
    return fetch(vm, f"http://127.0.0.1:5000{path}", f"X-Api-Key: {api_key(vm)}")


@pytest.fixture(scope="module")
def camera_vm(lab_ready: None, lab_vm: SharedVm) -> Iterator[tuple[Vm, str]]:
    """The VM with octobrix installed, the loopback camera fed, and the camera config applied."""
    with offline_farm_vm(lab_vm, BASE, install_timeout=SLOW) as vm:
        vm.run(["systemctl", "disable", "--now", "octobrixd.service", "octobrix-config.path"], timeout=120)
        loopcam.load(vm)
        # MJPEG frames, as most webcams send them: ustreamer passes them through (--encoder HW).
        loopcam.feed(vm, "1280x720", 15, "mjpeg")
        loopcam.pin_streamer(vm, UNIT)
        vm.write_file("/etc/octobrix.toml", WITH_CAMERA)
        applied = vm.run(["octobrixctl", "apply"], check=False, timeout=SLOW)
        assert applied.returncode == 0, f"apply failed:\n{applied.stdout}\n{applied.stderr}"
        yield vm, applied.stdout
        if vm.running:
            # Undone for the session VM's next module: the stream, the loopback camera, the pin.
            vm.run(["systemctl", "stop", UNIT], check=False, timeout=120)
            loopcam.unload(vm)
            vm.run(["rm", "-rf", f"/etc/systemd/system/{UNIT}.d"], check=False)
            vm.run(["systemctl", "daemon-reload"], check=False)


def test_apply_starts_the_stream_of_a_camera_bound_by_its_name(camera_vm: tuple[Vm, str]) -> None:
    vm, applied = camera_vm
    assert UNIT in applied and "started" in applied, applied
    link = vm.run(["readlink", "-f", "/dev/octobrix/cam1"]).stdout.strip()
    assert link == loopcam.NODE
    owner = vm.run(["stat", "-c", "%U %a", loopcam.NODE]).stdout.split()
    assert owner == ["octobrix-cam1", "660"], "the camera's own user, nobody else's"
    assert vm.run(["systemctl", "is-active", UNIT], check=False).stdout.strip() == "active", vm.journal(UNIT)


def test_discover_lists_the_camera_off_usb_bound_by_its_name(camera_vm: tuple[Vm, str]) -> None:
    """A real v4l2loopback node in a real kernel: no USB parent, only its V4L2 name."""
    vm, _ = camera_vm
    # It is fed now; udev judged it at modprobe, before the feed (see loopcam.announce).
    loopcam.announce(vm)
    cameras = json.loads(vm.run(["octobrixctl", "discover", "--json"]).stdout)["cameras"]
    mine = [c for c in cameras if c["node"] == loopcam.NODE]
    assert len(mine) == 1, cameras
    assert (mine[0]["bus_type"], mine[0]["usb_port"], mine[0]["name"]) == ("virtual", None, loopcam.NAME)
    assert mine[0]["bound_to"] == ["cam1"], "the config's device_name entry binds it"
    table = vm.run(["octobrixctl", "discover"]).stdout
    row = next(line for line in table.splitlines() if loopcam.NODE in line)
    assert "not on USB" in row and "cam1" in row, table


def camera_frame(vm: Vm, url: str, *headers: str) -> bytes:
    """A snapshot that is the camera's picture. While ustreamer (re)opens a device it serves its
    640x480 NO SIGNAL picture; v4l2loopback makes it reopen now and then (loopcam.py)."""

    def frame() -> bytes | None:
        status, body = fetch(vm, url, *headers)
        return body if status == 200 and jpeg_size(body) == (1280, 720) else None

    found: bytes = wait_until(f"a 1280x720 picture from {url}", frame, timeout=120, every=2)
    return found


def test_snapshot_is_a_real_jpeg_of_the_configured_size_behind_the_front_door(camera_vm: tuple[Vm, str]) -> None:
    vm, _ = camera_vm
    body = camera_frame(vm, SNAPSHOT)
    assert len(body) > 20_000, "ffmpeg's test pattern, not a blank frame"
    # A streamer checks no login: with the front door on (the default) it listens on this computer
    # only, and other computers reach the camera through the front door's login alone.
    listening = vm.run(["ss", "-ltnH", "sport = :8081"]).stdout.split()
    assert [field for field in listening if field.endswith(":8081")] == ["127.0.0.1:8081"], listening
    _status, state = fetch(vm, "http://127.0.0.1:8081/state")
    source = json.loads(state)["result"]["source"]
    assert source["online"] is True and source["resolution"] == {"width": 1280, "height": 720}
    assert json.loads(state)["result"]["encoder"]["type"] == "HW", "the camera's MJPEG passed through"


def test_controls_are_set_before_streaming(camera_vm: tuple[Vm, str]) -> None:
    vm, _ = camera_vm
    assert vm.run(["v4l2-ctl", "-d", loopcam.NODE, "--get-ctrl=timeout"]).stdout.strip() == "timeout: 3000"


def test_the_streamer_runs_confined(camera_vm: tuple[Vm, str]) -> None:
    vm, _ = camera_vm
    pid = str(main_pid(vm, UNIT))
    status = vm.run(["cat", f"/proc/{pid}/status"]).stdout
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    uid = vm.run(["id", "-u", "octobrix-cam1"]).stdout.strip()
    assert fields["Uid"].split()[0] == uid, "its own unprivileged user"
    assert fields["NoNewPrivs"].strip() == "1" and int(fields["CapEff"], 16) == 0
    nice = vm.run(["ps", "-o", "ni=", "-p", pid]).stdout.strip()
    assert nice == "10", "printing instances win the CPU"
    # Another instance's identity cannot open this camera.
    other = vm.run(
        ["setpriv", "--reuid=octobrix-demo", "--regid=octobrix-demo", "--clear-groups", "v4l2-ctl", "-d",
         "/dev/octobrix/cam1", "--info"],
        check=False,
    )  # fmt: skip
    assert other.returncode != 0 and "Permission denied" in other.stdout + other.stderr
    security = vm.run(["systemd-analyze", "security", "--no-pager", UNIT], check=False).stdout
    summary = next(line for line in security.splitlines() if "Overall exposure level" in line)
    print(f"systemd-analyze security {UNIT}: {summary.strip()}")
    assert float(summary.split(":")[1].split()[0]) <= 2.0, security


def test_octoprint_shows_the_camera_and_fetches_its_snapshots(camera_vm: tuple[Vm, str]) -> None:
    vm, _ = camera_vm
    wait_until("OctoPrint of demo to answer", lambda: octoprint(vm, "/api/version")[0] == 200, SLOW, every=3)
    status, body = octoprint(vm, "/api/settings")
    assert status == 200
    settings = json.loads(body)
    # The browser loads the stream through the front door (on by default), by whatever host name it
    # used to reach the farm; OctoPrint fetches snapshots over loopback.
    assert settings["webcam"]["streamUrl"] == "/cam/cam1/stream"
    assert settings["webcam"]["snapshotUrl"] == "http://127.0.0.1:8081/snapshot"
    assert settings["webcam"]["webcamEnabled"] is True and settings["webcam"]["timelapseEnabled"] is True
    assert settings["webcam"]["ffmpegPath"] == "/usr/bin/ffmpeg"
    assert settings["plugins"]["classicwebcam"]["stream"] == "/cam/cam1/stream"
    # OctoPrint's own snapshot endpoint, which timelapses use, goes through its sandbox to ustreamer.
    camera_frame(vm, "http://127.0.0.1:5000/downloads/camera/current", f"X-Api-Key: {api_key(vm)}")


def door(path: str, headers: dict[str, str] | None = None, body: bytes | None = None) -> http.client.HTTPResponse:
    """A request to the farm's front door from the host, as from another computer; the body unread."""
    conn = http.client.HTTPConnection("127.0.0.1", HOST_DOOR, timeout=60)
    conn.request("POST" if body is not None else "GET", path, body=body, headers=headers or {})
    return conn.getresponse()


def farm_login(vm: Vm) -> tuple[str, str]:
    secret = json.loads(vm.read_file("/var/lib/octobrix/.secrets/farm.json"))
    return str(secret["username"]), str(secret["password"])


def door_cookie(vm: Vm) -> str:
    user, password = farm_login(vm)
    form = urllib.parse.urlencode({"username": user, "password": password, "next": "/"}).encode()
    answer = door("/login", {"Content-Type": "application/x-www-form-urlencoded"}, form)
    assert answer.status == 303, answer.status
    return (answer.getheader("Set-Cookie") or "").split(";", 1)[0]


def stream_parts(cookie: str, wanted: int = 4, timeout: float = 60.0) -> tuple[str, list[bytes]]:
    """(Content-Type, the first `wanted` parts) of the camera's MJPEG stream through the front door."""
    answer = door("/cam/cam1/stream", {"Cookie": cookie})
    assert answer.status == 200, answer.status
    kind = answer.getheader("Content-Type") or ""
    assert kind.startswith("multipart/x-mixed-replace") and "boundary=" in kind, kind
    boundary = b"--" + kind.split("boundary=", 1)[1].strip('"').encode()
    data, deadline = b"", time.monotonic() + timeout
    while data.count(boundary) <= wanted and time.monotonic() < deadline:
        chunk = answer.read1(1 << 16)
        if not chunk:
            break
        data += chunk
    answer.close()
    # Each part: the boundary line, its headers, a blank line, one JPEG; the last one may be cut off.
    parts = [part.partition(b"\r\n\r\n")[2] for part in data.split(boundary)[1:-1]]
    assert len(parts) >= wanted, f"{len(parts)} frames through the front door in {timeout:.0f}s"
    return kind, parts[:wanted]


def test_the_camera_answers_through_the_front_door_with_the_farm_login(camera_vm: tuple[Vm, str]) -> None:
    vm, _ = camera_vm
    wait_until("the front door from the host", lambda: door("/").status == 303, timeout=120, every=2)
    # No farm login: refused, and a key of the client's own is no login for a camera (ustreamer checks none).
    for path in ("/cam/cam1/stream", "/cam/cam1/snapshot"):
        assert door(path).status == 401, path
        assert door(path, {"X-Api-Key": "made-up"}).status == 401, path
        assert door(f"{path}?apikey=made-up").status == 401, path
        browser = door(path, {"Accept": "text/html"})
        to_login = "/login?" + urllib.parse.urlencode({"next": path})
        assert (browser.status, browser.getheader("Location")) == (303, to_login), path

    cookie = door_cookie(vm)

    def snapshot() -> bytes | None:
        answer = door("/cam/cam1/snapshot", {"Cookie": cookie})
        body = answer.read()
        assert answer.status == 200 and answer.getheader("Content-Type") == "image/jpeg", answer.status
        return body if jpeg_size(body) == (1280, 720) else None

    picture: bytes = wait_until("a 1280x720 snapshot through the front door", snapshot, timeout=120, every=2)
    assert picture.startswith(b"\xff\xd8\xff") and len(picture) > 20_000
    started = time.monotonic()
    kind, parts = stream_parts(cookie)
    took = time.monotonic() - started
    assert all(part.startswith(b"\xff\xd8\xff") for part in parts), [part[:8] for part in parts]
    assert sum(jpeg_size(part) == (1280, 720) for part in parts) >= len(parts) - 1, [jpeg_size(p) for p in parts]
    print(f"\nVM (TCG): through the front door {kind}: {len(parts)} JPEG frames in {took:.1f} s")


def test_octoprints_control_tab_shows_the_stream_through_the_front_door(camera_vm: tuple[Vm, str]) -> None:
    vm, _ = camera_vm
    wait_until("OctoPrint of demo to answer", lambda: octoprint(vm, "/api/version")[0] == 200, SLOW, every=3)
    camera_frame(vm, SNAPSHOT)
    user, password = farm_login(vm)
    with Browser(SCREENSHOTS, TABLET) as browser:
        # OctoPrint's page under software emulation is slow to serve.
        browser.driver.set_page_load_timeout(240)
        browser.get(f"{DOOR}/")
        browser.wait_for("the farm login form", lambda: browser.all("input[name=password]"), timeout=60)
        browser.fill_login(user, password)
        browser.wait_for("the demo printer's card", lambda: browser.all('.card[data-name="demo"] .open'), timeout=120)
        browser.screenshot("overview")
        browser.one('.card[data-name="demo"] .open').click()
        browser.wait_for("demo's OctoPrint", lambda: browser.url == f"{DEMO_DOOR}/", timeout=120)
        browser.open_octoprint_tab("control", timeout=300)

        def webcam() -> dict[str, Any] | None:
            found: dict[str, Any] | None = browser.script(
                "const i = document.getElementById('webcam_image');"
                "return i && {src: i.getAttribute('src'), current: i.currentSrc, width: i.naturalWidth,"
                " height: i.naturalHeight, shown: i.offsetWidth > 0};"
            )
            return found if found and found["width"] > 0 else None

        image: dict[str, Any] = browser.wait_for("the webcam picture in the Control tab", webcam, timeout=120)
        browser.screenshot("octoprint-control-webcam")
    assert str(image["src"]).startswith("/cam/cam1/stream"), "relative: by whatever name the browser used"
    assert str(image["current"]).startswith(f"{DEMO_DOOR}/cam/cam1/stream"), "on demo's own origin"
    assert (image["width"], image["height"], image["shown"]) == (1280, 720, True), image
    print(f"screenshots: {', '.join(str(p) for p in browser.shots)}")


def test_doctor_sees_the_camera_and_its_stream(camera_vm: tuple[Vm, str]) -> None:
    vm, _ = camera_vm
    camera_frame(vm, "http://127.0.0.1:8081/snapshot")
    report = vm.run(["octobrixctl", "doctor"], check=False, timeout=120).stdout
    assert f"[ ok ] camera cam1: {loopcam.NODE} ({loopcam.NAME}) is /dev/octobrix/cam1" in report, report
    assert (
        f"[ ok ] stream cam1: {UNIT} is running; http://127.0.0.1:8081/snapshot answered a 1280x720 JPEG"
    ) in report, report
    assert "[ ok ] timelapse: /usr/bin/ffmpeg is there" in report, report
    assert "[ ok ] USB bandwidth: no configured USB camera is plugged in to judge" in report, "not on USB"


def unit_state(vm: Vm, unit: str) -> str:
    return vm.run(["systemctl", "is-active", unit], check=False).stdout.strip()


def unit_settled(vm: Vm, unit: str, timeout: float = 120.0) -> tuple[str, float]:
    """Wait in the guest until unit is neither active nor deactivating; (its state, guest clock then)."""
    script = (
        'while state=$(systemctl is-active "$1"); [ "$state" = active ] || [ "$state" = deactivating ];'
        ' do sleep 0.05; done; echo "$state $(date +%s.%N)"'
    )
    result = vm.run(["sh", "-c", script, "sh", unit], check=False, timeout=timeout)
    if result.returncode != 0 or len(result.stdout.split()) != 2:
        raise AssertionError(f"{unit} still running {timeout:.0f}s after its camera went:\n{vm.journal(DAEMON, 40)}")
    state, at = result.stdout.split()
    return state, float(at)


def camera_row(vm: Vm) -> dict[str, object]:
    body = json.loads(vm.run(["octobrixctl", "status", "--json", "cam1"], timeout=60).stdout)
    row: dict[str, object] = body["cameras"][0]
    return row


def unit_substate(vm: Vm, unit: str) -> str:
    return vm.run(["systemctl", "show", "-p", "SubState", "--value", unit]).stdout.strip()


def unplug_handled(vm: Vm, cursor: str) -> bool:
    """octobrixd logged cam1's unplug, and after it a status line without the stream."""
    lines = daemon_lines_since(vm, cursor)
    unplugged = next((i for i, line in enumerate(lines) if line.startswith("INFO camera cam1 unplugged")), None)
    return unplugged is not None and any(
        line.startswith("INFO status: ") and "0 streaming" in line for line in lines[unplugged + 1 :]
    )


def status_text(vm: Vm) -> str:
    """What `systemctl status octobrixd` shows as "Status:"."""
    return vm.run(["systemctl", "show", "-p", "StatusText", "--value", DAEMON]).stdout.strip()


def daemon_lines_since(vm: Vm, cursor: str) -> list[str]:
    argv = ["journalctl", "--no-pager", "-q", "-o", "cat", "-u", DAEMON, f"--after-cursor={cursor}"]
    return vm.run(argv).stdout.splitlines()


def daemon_cursor(vm: Vm) -> str:
    out = vm.run(["journalctl", "--no-pager", "-q", "-n", "1", "-o", "cat", "--show-cursor", "-u", DAEMON]).stdout
    return out.rsplit("-- cursor: ", 1)[1].strip()


def print_journals_if_failed(vm: Vm, request: pytest.FixtureRequest) -> None:
    report = getattr(request.node, "lab_report_call", None)
    if report is not None and report.failed and vm.running:
        print(f"--- journalctl -u {DAEMON} ---\n{vm.journal(DAEMON, lines=80)}")
        print(f"--- journalctl -u {UNIT} ---\n{vm.journal(UNIT, lines=150)}")


@pytest.fixture
def daemon_running(camera_vm: tuple[Vm, str], request: pytest.FixtureRequest) -> Iterator[Vm]:
    """octobrixd started as the user's system starts it, stopped again afterwards (the module's
    other tests prove `apply` alone); its journal is printed when the test fails."""
    vm, _ = camera_vm
    started = vm.run(["systemctl", "start", DAEMON], check=False, timeout=SLOW)
    assert started.returncode == 0, f"octobrixd did not start: {started.stderr}\n{vm.journal(DAEMON, 60)}"
    yield vm
    print_journals_if_failed(vm, request)
    if vm.running:
        vm.run(["systemctl", "stop", DAEMON], check=False, timeout=120)


def test_the_daemon_stops_the_stream_when_the_camera_goes_and_starts_it_when_it_comes_back(
    daemon_running: Vm,
) -> None:
    vm = daemon_running
    camera_frame(vm, SNAPSHOT)
    assert unit_state(vm, UNIT) == "active"
    cursor = daemon_cursor(vm)

    # Cable out: the frames stop, the device goes, and with it the link and the stream.
    removed_at = loopcam.unplug(vm)
    state, stopped_at = unit_settled(vm, UNIT)
    unplug_to_stopped = stopped_at - removed_at
    assert state == "inactive", f"{UNIT} is {state}, not stopped cleanly:\n{vm.journal(UNIT, 30)}"
    vm.wait_for_path("/dev/octobrix/cam1", present=False, timeout=30)
    row = camera_row(vm)
    assert (row["device"], row["state"]) == ("unplugged", "inactive"), row
    table = vm.run(["octobrixctl", "status", "cam1"], timeout=60).stdout
    cells = next(line.split() for line in table.splitlines() if line.startswith("cam1 "))
    assert (cells[1], cells[6]) == ("inactive", "unplugged"), f"SERVICE and DEVICE columns:\n{table}"
    wait_until("STATUS= of octobrixd to count no stream", lambda: "1 camera: 0 streaming" in status_text(vm), 60, 1)
    # Settled, not "a while later": octobrixd has handled the unplug (logged it, then said its status
    # after it), and systemd has no restart of the unit pending (its Restart=always would show as
    # SubState auto-restart during RestartSec=3) nor any job for it.
    wait_until("octobrixd to log the unplug and a status after it", lambda: unplug_handled(vm, cursor), 60, 1)
    wait_until(
        f"systemd to have nothing pending for {UNIT}",
        lambda: unit_substate(vm, UNIT) == "dead" and UNIT not in vm.run(["systemctl", "list-jobs", "--plain"]).stdout,
        timeout=30,
        every=0.5,
        detail=lambda: vm.journal(UNIT, 30),
    )
    assert unit_state(vm, UNIT) == "inactive", "nothing but the camera's return may start the stream"

    # Cable in: the device comes back (ffmpeg feeds it again, as the camera itself would) and the
    # daemon, not this test, starts the stream.
    plugged = time.monotonic()
    loopcam.load(vm)
    vm.wait_for_path("/dev/octobrix/cam1", timeout=30)
    plug_to_link = time.monotonic() - plugged
    assert vm.run(["readlink", "-f", "/dev/octobrix/cam1"]).stdout.strip() == loopcam.NODE
    wait_until(f"octobrixd to start {UNIT}", lambda: unit_state(vm, UNIT) == "active", timeout=120, every=0.5)
    plug_to_active = time.monotonic() - plugged
    loopcam.feed(vm, "1280x720", 15, "mjpeg")
    body = camera_frame(vm, SNAPSHOT)
    plug_to_jpeg = time.monotonic() - plugged
    assert len(body) > 20_000, "ffmpeg's test pattern, not a blank frame"
    # The module came back with its controls at their defaults: only the unit's start sets them.
    assert vm.run(["v4l2-ctl", "-d", loopcam.NODE, "--get-ctrl=timeout"]).stdout.strip() == "timeout: 3000"
    row = camera_row(vm)
    assert (row["device"], row["state"]) == ("plugged", "active"), row
    wait_until("STATUS= of octobrixd to count the stream", lambda: "1 camera: 1 streaming" in status_text(vm), 60, 1)

    events = [line for line in daemon_lines_since(vm, cursor) if "camera cam1" in line]
    assert events == [
        f"INFO camera cam1 unplugged ({loopcam.NODE})",
        f"INFO camera cam1 plugged in ({loopcam.NODE})",
    ], daemon_lines_since(vm, cursor)
    print(
        f"\nVM (TCG): unplug -> {UNIT} stopped {unplug_to_stopped:.2f} s; plug -> link {plug_to_link:.1f} s, "
        f"-> {UNIT} active {plug_to_active:.1f} s, -> first 1280x720 JPEG {plug_to_jpeg:.1f} s "
        "(feeder restarted after the plug; host-side polls)"
    )


SOAK_CYCLES = 4


def test_camera_soak_with_reloads_leaves_the_daemon_as_it_was(daemon_running: Vm) -> None:
    """The camera half of the soak (the printer half is test_daemon_vm's cable storm): the camera
    goes and comes back again and again, with a reload of octobrixd in each cycle. Afterwards the
    stream is back, no unit failed, and the daemon has the same process, descriptors and memory."""
    vm = daemon_running
    camera_frame(vm, SNAPSHOT)
    before = footprint(vm, DAEMON)
    for _cycle in range(SOAK_CYCLES):
        loopcam.unplug(vm)
        assert unit_settled(vm, UNIT)[0] == "inactive"
        vm.run(["systemctl", "reload", DAEMON], timeout=120)
        loopcam.load(vm)
        wait_until(f"octobrixd to start {UNIT}", lambda: unit_state(vm, UNIT) == "active", timeout=120, every=0.5)
    loopcam.feed(vm, "1280x720", 15, "mjpeg")
    camera_frame(vm, SNAPSHOT)
    wait_until("STATUS= of octobrixd to count the stream", lambda: "1 camera: 1 streaming" in status_text(vm), 60, 1)
    after = assert_left_as_it_was(vm, DAEMON, before)
    print(f"\nVM (TCG): {SOAK_CYCLES} camera cycles with reloads: {before} -> {after}")


# --- self-healing streams (camera_health.py) ---

CHECK_SECONDS = 8
DEFAULT_CHECK_SECONDS = 30  # camera_health.CHECK_SECONDS, for the per-minute figure
# v4l2loopback's own "timeout" control makes it hand out a filler picture when its writer stops, a
# camera that never freezes; a real camera has no such control.
HEALING = WITH_CAMERA.replace("\n[cameras.cam1.controls]\ntimeout = 3000\n", "")
CHECK_DROP_IN = "/etc/systemd/system/octobrixd.service.d/90-lab-check.conf"
HEALTH = "/run/octobrix/camera-health.json"


def saved_probes(vm: Vm) -> int:
    """How many times octobrixd has asked a camera's streamer, as last saved in HEALTH (on a change,
    and every SAVE_EVERY looks)."""
    saved = vm.run(["cat", HEALTH], check=False).stdout
    return int(json.loads(saved)["probes"]) if saved else 0


@pytest.fixture(scope="module")
def checking(camera_vm: tuple[Vm, str]) -> Iterator[Vm]:
    """octobrixd as its service, looking at the camera every CHECK_SECONDS, for the healing tests."""
    vm, _ = camera_vm
    assert HEALING != WITH_CAMERA
    vm.write_file(CHECK_DROP_IN, f"[Service]\nEnvironment=OCTOBRIXD_CAMERA_CHECK_SECONDS={CHECK_SECONDS}\n")
    vm.write_file("/etc/octobrix.toml", HEALING)
    vm.run(["systemctl", "daemon-reload"])
    started = vm.run(["systemctl", "start", DAEMON], check=False, timeout=SLOW)
    assert started.returncode == 0, f"octobrixd did not start: {started.stderr}\n{vm.journal(DAEMON, 60)}"
    # The module's earlier tests left the loopback's own timeout control set (its filler picture
    # is a camera that never freezes); HEALING sets no controls, so it is put back by hand.
    vm.run(["v4l2-ctl", "-d", loopcam.NODE, "--set-ctrl=timeout=0"])
    yield vm
    if vm.running:
        loopcam.resume_feed(vm)
        vm.run(["systemctl", "stop", DAEMON], check=False, timeout=120)
        vm.run(["rm", "-f", CHECK_DROP_IN], check=False)
        vm.run(["systemctl", "daemon-reload"], check=False)


SANDBOX = ("Protect", "Private", "NoNewPrivileges", "Restrict", "Lock", "SystemCall", "Capability")


def daemon_sandbox() -> list[str]:
    """systemd-run's -p arguments for the confinement systemd/octobrixd.service gives the daemon."""
    unit = (Path(__file__).resolve().parents[2] / "systemd/octobrixd.service").read_text()
    lines = unit.split("[Service]", 1)[1].split("\n[", 1)[0].splitlines()
    found = [f"-p{line}" for line in lines if line.startswith(SANDBOX)]
    assert len(found) > 10, found
    return found


def test_usb_reattach_re_enumerates_the_device_and_its_link_comes_back(camera_vm: tuple[Vm, str]) -> None:
    """octobrix's re-attach on the one USB device QEMU emulates (no emulated UVC camera exists)."""
    vm, _ = camera_vm
    vm.write_file("/tmp/reattach.toml", '[printers.printer1]\nserial = "PRN0001"\nport = 5001\n', mode=0o644)
    vm.run(["octobrixctl", "render", "--config", "/tmp/reattach.toml", "--root", "/tmp/reattach-root"])
    vm.run(["cp", "/tmp/reattach-root/etc/udev/rules.d/99-octobrix.rules", "/etc/udev/rules.d/98-lab-reattach.rules"])
    vm.run(["udevadm", "control", "--reload"])
    adapter = vm.plug_usb_serial("PRN0001", MarlinSim(), port="2")
    try:
        vm.wait_for_path("/dev/octobrix/printer1", timeout=30)
        vm.run(["dmesg", "--clear"])
        script = (
            "from octobrixd.cameras.health import usb_device_of, reattach\n"
            "from octobrixd.system.paths import Layout\n"
            "device = usb_device_of(Layout(), 'printer1')\n"
            "print(device)\n"
            "reattach(device)\n"
        )
        started = time.monotonic()
        # Under octobrixd.service's own confinement (its capabilities, ProtectSystem, system call
        # filter...), as the daemon runs it: /sys must stay writable for it.
        argv = ["systemd-run", "--wait", "--pipe", "--collect", "--quiet", *daemon_sandbox()]
        out = vm.run([*argv, "/opt/octobrix/bin/python", "-c", script], timeout=60).stdout.strip()
        assert out.endswith(f"/{adapter.guest_port}"), out
        # De-authorising unbinds every driver of the device (its tty and link go); authorising
        # reads its descriptors again and binds them anew, as at a plug.
        log = vm.run(["dmesg"]).stdout
        assert f"ftdi_sio {adapter.guest_port}:1.0: device disconnected" in log, log
        assert f"usb {adapter.guest_port}: authorized to connect" in log, log
        vm.wait_for_path("/dev/octobrix/printer1", timeout=30)
        wait_until(
            "the adapter's driver bound again",
            lambda: "FTDI USB Serial Device converter now attached to ttyUSB" in vm.run(["dmesg"]).stdout,
            timeout=30,
            every=0.5,
        )
        back = time.monotonic() - started
        assert vm.read_file(f"/sys/bus/usb/devices/{adapter.guest_port}/authorized").decode().strip() == "1"
        assert vm.run(["readlink", "-f", "/dev/octobrix/printer1"]).stdout.strip().startswith("/dev/ttyUSB")
        print(f"\nVM (TCG): USB re-attach of {adapter.guest_port} -> link back {back:.1f} s")
    finally:
        adapter.remove()
        vm.run(["rm", "-f", "/etc/udev/rules.d/98-lab-reattach.rules"], check=False)
        vm.run(["udevadm", "control", "--reload"], check=False)


BENCHMARK_FILES = ("benchmarks/__init__.py", "benchmarks/camera_check.py", "tests/__init__.py", "tests/httpstub.py")


def test_the_check_costs_little_cpu_with_four_cameras_configured(checking: Vm) -> None:
    """benchmarks/camera_check.py in the guest (four cameras configured, octobrix's installed check),
    and octobrixd's own count of its looks at the real ustreamer."""
    vm = checking
    checkout = Path(__file__).resolve().parents[2]
    for name in BENCHMARK_FILES:
        vm.write_file(f"/tmp/lab-bench/{name}", (checkout / name).read_bytes())
    out = vm.run(
        ["sh", "-c", "cd /tmp/lab-bench && /opt/octobrix/bin/python -m benchmarks.camera_check --looks 30"],
        timeout=300,
    ).stdout
    assert "per camera per idle minute" in out, out

    def looked() -> dict[str, Any] | None:
        saved = vm.run(["cat", HEALTH], check=False).stdout
        found: dict[str, Any] | None = json.loads(saved) if saved else None
        return found if found and found["probes"] > 0 else None

    health: dict[str, Any] = wait_until("octobrixd's first look", looked, timeout=60, every=2)
    assert set(health["cameras"]) == {"cam1"}, "only the configured camera is looked at"
    assert health["probes"] > 0, health
    per_look = health["cpu_seconds"] / health["probes"]
    print(
        f"\nVM (TCG), benchmarks/camera_check.py:\n{out.rstrip()}\nVM (TCG), octobrixd's own looks at the real "
        f"ustreamer: {health['probes']} looks, {per_look * 1000:.2f} ms CPU per look, "
        f"{per_look * 60 / DEFAULT_CHECK_SECONDS:.4f} s per camera per minute at "
        f"{DEFAULT_CHECK_SECONDS} s"
    )


@pytest.fixture
def healthy(checking: Vm, request: pytest.FixtureRequest) -> Iterator[Vm]:
    """The camera streaming at the start; fed again and streaming at the end, whatever the test did."""
    vm = checking
    camera_frame(vm, SNAPSHOT)
    yield vm
    print_journals_if_failed(vm, request)
    if vm.running:
        loopcam.resume_feed(vm)
        camera_frame(vm, SNAPSHOT)
        wait_until("the camera healthy again in status", lambda: camera_row(vm)["stream"] is None, 120, 2)


def wait_for_line(vm: Vm, cursor: str, text: str, timeout: float = 120.0) -> str:
    def found() -> str | None:
        return next((line for line in daemon_lines_since(vm, cursor) if text in line), None)

    line: str = wait_until(f"octobrixd to log {text!r}", found, timeout=timeout, every=1)
    return line


def test_a_stream_that_stops_delivering_frames_comes_back_by_itself(healthy: Vm) -> None:
    vm = healthy
    cursor = daemon_cursor(vm)
    before = main_pid(vm, UNIT)
    loopcam.pause_feed(vm)  # the camera stops delivering; ustreamer keeps running
    stopped = time.monotonic()
    assert unit_state(vm, UNIT) == "active"

    line = wait_for_line(vm, cursor, "runs but delivers no frames; restarting it")
    noticed = time.monotonic() - stopped
    # The camera delivers again (a real one would, once its streamer reopened it), before the next
    # looks could take it for one that stays frozen.
    loopcam.resume_feed(vm)
    resumed = time.monotonic()
    assert line == f"WARNING camera cam1: {UNIT} runs but delivers no frames; restarting it"
    row = camera_row(vm)
    assert row["stream"] == "streamer restarted", row
    assert f"no frames: {UNIT} restarted" in str(row["stream_note"]), row
    wait_until("ustreamer restarted", lambda: main_pid(vm, UNIT) not in (0, before), timeout=60, every=1)
    wait_for_line(vm, cursor, "camera cam1: delivers frames again (streamer restarted before)")
    camera_frame(vm, SNAPSHOT)
    healed = time.monotonic() - resumed
    row = camera_row(vm)
    assert (row["state"], row["stream"], row["device"]) == ("active", None, "plugged"), row
    wait_until("STATUS= without a healing camera", lambda: "healing" not in status_text(vm), timeout=60, every=1)
    assert "1 camera: 1 streaming" in status_text(vm)
    events = [line for line in daemon_lines_since(vm, cursor) if "camera cam1" in line]
    assert not any("frozen" in line or "re-attaching" in line for line in events), events
    print(
        f"\nVM (TCG): feeder paused -> restart logged {noticed:.1f} s (looks every {CHECK_SECONDS} s, "
        f"2 misses); feeder resumed -> frames again {healed:.1f} s"
    )


def test_a_camera_that_stays_frozen_ends_frozen_with_the_hint(healthy: Vm) -> None:
    vm = healthy
    cursor = daemon_cursor(vm)
    loopcam.pause_feed(vm)
    wait_for_line(vm, cursor, "runs but delivers no frames; restarting it")
    line = wait_for_line(vm, cursor, "camera cam1: frozen:")
    assert "no frames after restarting its streamer (not on USB: no re-attach)" in line, line
    assert "try: re-plug the camera, or plug it into another USB port" in line, line

    row = camera_row(vm)
    assert row["stream"] == "frozen", row
    assert "try: re-plug the camera" in str(row["stream_note"]), row
    table = vm.run(["octobrixctl", "status"], timeout=60).stdout
    cells = next(line.split() for line in table.splitlines() if line.startswith("cam1 "))
    assert cells[1] == "frozen", table
    assert "cam1: frozen: no frames after restarting its streamer" in table, table
    wait_until("STATUS= to name the frozen camera", lambda: "1 frozen (cam1" in status_text(vm), timeout=60, every=1)
    # Given up: no more restarts, and no recovery read into the stale frame ustreamer gets on a reopen,
    # over three more looks at it (octobrixd's own count, saved when cam1 froze and every few looks).
    pid = main_pid(vm, UNIT)
    frozen_at = saved_probes(vm)
    wait_until(
        "octobrixd to look at the frozen camera three more times",
        lambda: saved_probes(vm) >= frozen_at + 3,
        timeout=(SAVE_EVERY + 3) * CHECK_SECONDS + 60,
        every=2,
    )
    assert main_pid(vm, UNIT) == pid, "a frozen camera's streamer is left alone"
    assert camera_row(vm)["stream"] == "frozen"
    lines = daemon_lines_since(vm, cursor)
    after_frozen = lines[next(i for i, text in enumerate(lines) if "camera cam1: frozen:" in text) :]
    assert not any("restarting it" in text or "delivers frames again" in text for text in after_frozen[1:]), lines

    loopcam.resume_feed(vm)
    wait_for_line(vm, cursor, "camera cam1: delivers frames again (frozen before)")
    wait_until("status to drop 'frozen'", lambda: camera_row(vm)["stream"] is None, timeout=60, every=1)
