"""Self-healing streams: a camera whose streamer runs but delivers no frames is noticed and healed.

octoprint_deploy's users report "No live video" that only a re-plug fixes, and cameras on a busy
hub that stop: the streamer process stays up, serving ustreamer's NO SIGNAL picture or
mjpg-streamer's last frame, so systemd sees nothing wrong. octobrixd looks, on a timer that runs
only while cameras are configured (a look passes over those not plugged in), and escalates one
step per look that still finds no frames:

1. two looks in a row without frames: restart the camera's streamer;
2. still none: re-attach the camera at USB level (its sysfs `authorized` 0, then 1), which makes
   the kernel drop and re-enumerate it as if it were re-plugged; udev and octobrixd's hotplug
   handling then stop and start its stream;
3. still none: the camera is "frozen": said in `status`, STATUS= and the journal, with what to try.
   Nothing more is done until it delivers frames again (then it is healthy again, and said so).

A look is judged by the frames the camera delivered since the previous look, not by what the
streamer says now: a camera that hangs can hand out its last buffered frame again each time the
streamer reopens it, and then nothing (v4l2loopback does it; UVC cameras whose firmware hangs do
too), so ustreamer's "online" flaps between looks while the picture never changes. The look is one
snapshot: a new camera frame is one that the streamer marks as the camera's (ustreamer's
X-UStreamer-Online; mjpg-streamer has no NO SIGNAL picture) and that differs from the last camera
frame seen (a real sensor's noise changes every frame; ustreamer's /state has no frame counter to
ask instead). It is one HTTP request to the streamer on loopback, for cameras in the config whose
/dev/octobrix link exists; nothing else is opened, and never a camera nobody configured.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from octobrixd.cameras.streams import local_host, loopback_response
from octobrixd.config.streamers import Streamer
from octobrixd.errors import OctobrixError
from octobrixd.names import streamer_unit
from octobrixd.system import systemd
from octobrixd.system.fsutil import write_atomic
from octobrixd.system.paths import Layout
from octobrixd.urls import PATHS

if TYPE_CHECKING:
    from octobrixd.config.model import Config

log = logging.getLogger("octobrixd")

CHECK_SECONDS = 30.0  # how often a plugged-in camera is looked at
CHECK_ENV = "OCTOBRIXD_CAMERA_CHECK_SECONDS"  # a unit drop-in may change it; 0 turns the check off
MISSES = 2  # looks without frames (not forgiven by a single look with frames) before each step; and
# looks in a row with frames to count as recovered
SAVE_EVERY = 10
HEALTH_FILE = PurePosixPath("run/octobrix/camera-health.json")
LOOK_TIMEOUT = 3.0  # seconds a streamer may take to answer a look
REATTACH_PAUSE = 1.0  # seconds de-authorised: long enough for the kernel to unbind every driver
FROZEN_HINT = (
    "re-plug the camera, or plug it into another USB port (a powered hub for several cameras); lower its "
    "resolution or fps; `journalctl -k` shows USB errors, `journalctl -u octobrixd` what octobrix tried"
)


class Health(StrEnum):
    OK = "ok"
    RESTARTED = "streamer restarted"  # no frames: the streamer was restarted, waiting for frames
    REATTACHED = "re-attached"  # still none: the camera was re-attached at USB level
    FROZEN = "frozen"  # still none: given up until it delivers frames again


@dataclass
class _Camera:
    misses: int = 0
    hits: int = 0  # looks in a row with frames, while not OK: recovery needs MISSES of them
    state: Health = Health.OK
    since: float = 0.0  # wall clock of the last change of state
    note: str = ""
    digest: str | None = None  # the hash of the last camera frame seen
    heals: int = 0  # streamer restarts and re-attaches so far, for status


@dataclass(frozen=True)
class CameraHealth:
    """One camera's line in the health file, as status reads it."""

    state: Health
    since: float
    note: str
    heals: int


def check_interval() -> float:
    raw = os.environ.get(CHECK_ENV)
    try:
        return max(0.0, float(raw)) if raw else CHECK_SECONDS
    except ValueError:
        log.warning("%s=%r is not a number of seconds: using %.0f", CHECK_ENV, raw, CHECK_SECONDS)
        return CHECK_SECONDS


@dataclass(frozen=True)
class Picture:
    """One look's snapshot: whether it is the camera's frame, and its hash."""

    camera: bool
    digest: str


def snapshot(port: int, host: str, streamer: Streamer) -> Picture | None:
    """The streamer's current picture; None when it does not answer. ustreamer serves its NO SIGNAL
    picture once the device timed out, and says so (X-UStreamer-Online: false); mjpg-streamer repeats
    the camera's last frame. captured_fps is not used: with --slowdown an unwatched ustreamer captures
    about 1 fps, so it reads 0 in some seconds, and after a reopen a stale frame counts in it too."""
    answer = loopback_response(port, host, PATHS[str(streamer)][1], timeout=LOOK_TIMEOUT)
    if answer is None or not answer[1]:
        return None
    head, body = answer
    camera = streamer is not Streamer.USTREAMER or b"\r\nx-ustreamer-online: true" in head.lower()
    return Picture(camera, hashlib.blake2b(body, digest_size=16).hexdigest())


def delivered(entry: _Camera, picture: Picture | None) -> bool | None:
    """Whether the camera delivered a frame since the last look (None: the streamer did not answer).
    The last camera frame seen is kept across NO SIGNAL looks, so a stale frame replayed after each
    reopen is no new frame however often the streamer flaps between it and NO SIGNAL."""
    if picture is None:
        return None
    if not picture.camera:
        return False
    new = picture.digest != entry.digest
    entry.digest = picture.digest
    return new


def usb_device_of(layout: Layout, name: str) -> Path | None:
    """The sysfs folder of the USB device behind /dev/octobrix/NAME (one with `authorized`); None when
    it is not on USB (a built-in or loopback camera)."""
    try:
        node = Path(os.path.realpath(layout.device_link(name)))
        subsystem = "video4linux" if node.name.startswith("video") else "tty"
        folder = Path(os.path.realpath(layout.sys / "class" / subsystem / node.name / "device"))
    except OSError:
        return None
    for candidate in (folder, *folder.parents):
        if (candidate / "authorized").is_file() and (candidate / "busnum").is_file():
            return candidate
        if candidate == layout.sys or candidate.name == "devices":
            break
    return None


def reattach(usb_device: Path, pause: float = REATTACH_PAUSE) -> None:
    """De-authorise and authorise a USB device: the kernel unbinds its drivers and enumerates it
    again, as a re-plug would, without anyone touching the cable."""
    authorized = usb_device / "authorized"
    try:
        authorized.write_text("0\n", encoding="ascii")
        time.sleep(pause)
    finally:
        authorized.write_text("1\n", encoding="ascii")


def read_health(layout: Layout) -> dict[str, CameraHealth]:
    """What octobrixd last wrote; empty when it has not looked (or is not running)."""
    try:
        data = json.loads(layout.path(HEALTH_FILE).read_text(encoding="utf-8"))
        return {
            name: CameraHealth(Health(entry["state"]), float(entry["since"]), str(entry["note"]), int(entry["heals"]))
            for name, entry in data.get("cameras", {}).items()
        }
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


@dataclass
class Watch:
    """The cameras' health, kept by octobrixd between looks. check() runs on a worker thread."""

    layout: Layout
    restart: Callable[[str], None] = lambda unit: systemd.restart_if_running([unit])  # waits for the job
    is_active: Callable[[str], bool] = systemd.is_active
    reattach: Callable[[Path], None] = reattach
    cameras: dict[str, _Camera] = field(default_factory=dict)
    cpu_seconds: float = 0.0  # the looks' own CPU time, for the benchmark figure
    probes: int = 0  # cameras asked, over all looks
    looks: int = 0  # calls of check()

    def check(self, config: Config) -> bool:
        """Look at every plugged-in configured camera once; True when any camera's state changed."""
        started = time.thread_time()
        changed = False
        for gone in set(self.cameras) - set(config.cameras):
            del self.cameras[gone]
            changed = True
        host = local_host(config.streams_listen())
        for name, camera in sorted(config.cameras.items()):
            entry = self.cameras.setdefault(name, _Camera(since=time.time()))
            if not self.layout.device_link(name).exists():
                # Unplugged, or re-enumerating after a re-attach: its state stays until frames are seen,
                # so a camera that freezes again is not healed in an endless loop.
                entry.misses = 0
                continue
            self.probes += 1
            delivers = delivered(entry, snapshot(camera.port, host, config.streamer_of(name)))
            changed |= self._observe(name, entry, delivers, streamer_unit(config, name))
        # On a change, and every SAVE_EVERY looks so that status and the CPU figures stay fresh (counted
        # in looks, not cameras asked: with four cameras that count is never 1 modulo 10).
        self.looks += 1
        if changed or self.looks % SAVE_EVERY == 1:
            self.save()
        self.cpu_seconds += time.thread_time() - started
        return changed

    def _set(self, entry: _Camera, state: Health, note: str) -> bool:
        entry.state, entry.note, entry.since = state, note, time.time()
        return True

    def _observe(self, name: str, entry: _Camera, delivers: bool | None, unit: str) -> bool:
        if delivers:
            entry.hits += 1
            # One look with frames is not a recovery, nor does it forgive a miss: a streamer that
            # reopens a stuck camera can show a frame or two now and then.
            if entry.hits < MISSES:
                return False
            entry.misses = 0
            if entry.state is Health.OK:
                return False
            log.info("camera %s: delivers frames again (%s before)", name, entry.state.value)
            return self._set(entry, Health.OK, f"recovered after: {entry.note}")
        entry.hits = 0
        entry.misses += 1
        if entry.misses < MISSES or entry.state is Health.FROZEN:
            return False
        entry.misses = 0
        if not self.is_active(unit):
            return False  # stopped on purpose, or starting: not ours to heal
        if entry.state is Health.OK:
            log.warning("camera %s: %s runs but delivers no frames; restarting it", name, unit)
            entry.heals += 1
            self._try(name, lambda: self.restart(unit))
            return self._set(entry, Health.RESTARTED, f"no frames: {unit} restarted")
        usb = usb_device_of(self.layout, name) if entry.state is Health.RESTARTED else None
        if usb is not None:
            log.warning(
                "camera %s: still no frames after restarting %s; re-attaching it at USB level (%s)",
                name,
                unit,
                usb.name,
            )
            entry.heals += 1
            self._try(name, lambda: self.reattach(usb))
            return self._set(entry, Health.REATTACHED, f"no frames after a restart: re-attached at USB {usb.name}")
        tried = "restarting its streamer"
        if entry.state is Health.REATTACHED:
            tried += " and re-attaching it at USB level"
        else:
            tried += " (not on USB: no re-attach)"
        log.error("camera %s: frozen: no frames after %s; try: %s", name, tried, FROZEN_HINT)
        return self._set(entry, Health.FROZEN, f"no frames after {tried}")

    def _try(self, name: str, action: Callable[[], None]) -> None:
        try:
            action()
        except (OctobrixError, OSError) as error:
            log.error("camera %s: %s", name, error)

    def frozen(self) -> list[str]:
        # list(): STATUS= is made on another thread than the looks.
        return sorted(name for name, entry in list(self.cameras.items()) if entry.state is Health.FROZEN)

    def healing(self) -> list[str]:
        return sorted(n for n, e in list(self.cameras.items()) if e.state in (Health.RESTARTED, Health.REATTACHED))

    def save(self) -> None:
        body = {
            "cameras": {
                name: asdict(CameraHealth(entry.state, entry.since, entry.note, entry.heals))
                for name, entry in sorted(self.cameras.items())
            },
            "cpu_seconds": round(self.cpu_seconds, 6),
            "probes": self.probes,
        }
        path = self.layout.path(HEALTH_FILE)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, json.dumps(body, indent=1) + "\n")
        except (OSError, OctobrixError) as error:
            log.warning("cannot write %s: %s", path, error)


def summary_suffix(watch: Watch) -> str:
    """For STATUS=: ", 1 frozen (cam2)" and the like; empty when every stream is fine."""
    parts = []
    if frozen := watch.frozen():
        parts.append(f"{len(frozen)} frozen ({', '.join(frozen)}: re-plug or see octobrixctl status)")
    if healing := watch.healing():
        parts.append(f"{len(healing)} healing ({', '.join(healing)})")
    return "".join(f", {part}" for part in parts)


def stream_of(health: dict[str, CameraHealth], name: str, unit_state: str) -> tuple[Health | None, str | None]:
    """status' view: (None, None) for a healthy or stopped stream; else its state and what to know."""
    entry = health.get(name)
    if entry is None or unit_state != systemd.UnitState.ACTIVE or entry.state is Health.OK:
        return None, None
    when = time.strftime("%H:%M:%S", time.localtime(entry.since))
    if entry.state is Health.FROZEN:
        return entry.state, f"{entry.note} (since {when}); try: {FROZEN_HINT}"
    return entry.state, f"{entry.note} (at {when}), waiting for frames"
