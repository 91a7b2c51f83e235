"""The farm overview's data: every printer of the config as one card (what systemd, the device
link and its OctoPrint say) and a summary line, as the JSON `GET /api/farm` answers.

Two layers: `gather` asks (one `systemctl show` for every unit, then each running OctoPrint's
/api/job and /api/printer in parallel, with a short timeout and the web service's read-only key);
`farm_view` turns what was asked into the JSON and touches nothing. `FarmOverview` puts a short
cache in front, so several open tabs (and Prometheus's scrapes of /metrics, web/metrics.py) cost one
round of asks, and asks nothing while nobody looks.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from octobrixd.cameras.streams import StreamerState, local_host, ustreamer_state
from octobrixd.config.model import Config
from octobrixd.config.streamers import Streamer
from octobrixd.errors import OctobrixError
from octobrixd.farm.manifest import read_manifest
from octobrixd.farm.status import CameraStatus, PrinterStatus, UnitProps, collect, query_units, removed_printers
from octobrixd.instances.api import ApiError, request
from octobrixd.names import octoprint_unit, streamer_unit
from octobrixd.system.paths import Layout
from octobrixd.system.systemd import UnitState
from octobrixd.urls import OPEN_PREFIX

log = logging.getLogger(__name__)

JSON_VERSION = 1
# Short: a card that says "cannot be asked" after 1.5 s is more use than a page that waits.
ASK_TIMEOUT = 1.5
# An OctoPrint whose service runs but that refuses connections is starting for this long, then unreachable.
STARTUP_SECONDS = 180.0
# Several tabs (or a tablet and a phone) within this many seconds share one round of asks.
CACHE_SECONDS = 2.0


class CardState(StrEnum):
    PRINTING = "printing"
    PAUSED = "paused"
    OPERATIONAL = "operational"
    ERROR = "error"
    OFFLINE = "offline"  # OctoPrint runs, the printer is not connected
    CONNECTING = "connecting"
    UNPLUGGED = "unplugged"
    STARTING = "starting"  # the unit starts, or OctoPrint is not serving yet
    NOT_RUNNING = "not-running"
    UNREACHABLE = "unreachable"  # running, but its OctoPrint cannot be asked


class Group(StrEnum):
    """The summary line's buckets, in the order they are said."""

    PRINTING = "printing"
    PAUSED = "paused"
    IDLE = "idle"
    OFFLINE = "offline"
    ATTENTION = "attention"


GROUP_OF = {
    CardState.PRINTING: Group.PRINTING,
    CardState.PAUSED: Group.PAUSED,
    CardState.OPERATIONAL: Group.IDLE,
    CardState.OFFLINE: Group.OFFLINE,
    CardState.CONNECTING: Group.OFFLINE,
    CardState.UNPLUGGED: Group.OFFLINE,
    CardState.STARTING: Group.OFFLINE,
    CardState.ERROR: Group.ATTENTION,
    CardState.NOT_RUNNING: Group.ATTENTION,
    CardState.UNREACHABLE: Group.ATTENTION,
}

# OctoPrint's state strings (printer.get_state_string) by the card state they mean.
_PRINTING_PREFIXES = ("Printing", "Starting", "Cancelling", "Finishing", "Resuming", "Sending file", "Transferring")
_PAUSED_PREFIXES = ("Paused", "Pausing")
_CONNECTING_PREFIXES = ("Opening", "Connecting", "Detecting")


@dataclass(frozen=True)
class Answer:
    """What one OctoPrint said: its /api/job and /api/printer bodies, or why it could not be asked."""

    job: Mapping[str, Any] | None = None
    printer: Mapping[str, Any] | None = None
    error: str | None = None


@dataclass(frozen=True)
class Asked:
    """Everything one refresh asked: the inputs of `farm_view`."""

    printers: Sequence[PrinterStatus]
    cameras: Sequence[CameraStatus]
    answers: Mapping[str, Answer]
    problems: Sequence[str] = field(default_factory=tuple)
    # systemd's properties of every unit (NRestarts...), and each running ustreamer's /state.
    units: UnitProps = field(default_factory=dict)
    streams: Mapping[str, StreamerState | None] = field(default_factory=dict)


def ask_octoprint(port: int, api_key: str | None, timeout: float = ASK_TIMEOUT) -> Answer:
    if api_key is None:
        return Answer(error="no key to ask it with (has octobrix set this printer up yet?)")
    try:
        job = request(port, api_key, "/api/job", timeout=timeout)
    except ApiError as error:
        return Answer(error=str(error))
    try:
        printer = request(port, api_key, "/api/printer?exclude=sd&history=false", timeout=timeout)
    except ApiError as error:
        # 409: no printer connected, so no temperatures; the job's state says the rest.
        if not str(error).startswith("HTTP 409"):
            log.info("OctoPrint on port %s answered /api/job but not /api/printer: %s", port, error)
        printer = None
    return Answer(
        job=job if isinstance(job, dict) else None,
        printer=printer if isinstance(printer, dict) else None,
    )


def gather(
    config: Config,
    layout: Layout,
    api_key: Callable[[str], str | None],
    *,
    timeout: float = ASK_TIMEOUT,
    query: Callable[[Sequence[str]], UnitProps] = query_units,
) -> Asked:
    """Ask systemd once and every running OctoPrint in parallel (through status.collect)."""
    problems: list[str] = []
    try:
        deferred = read_manifest(layout).deferred
    except (OctobrixError, OSError) as error:
        # The web service may not read octobrix's own state: then "restart pending" is not shown.
        log.debug("no manifest: %s", error)
        deferred = ()
    # Printers taken out of the config while they print are still listed (and asked) until they stop.
    printers = [*config.printers, *removed_printers(config, deferred)]
    units = [octoprint_unit(n) for n in printers] + [streamer_unit(config, n) for n in config.cameras]
    answers: dict[str, Answer] = {}
    try:
        props = query(units)
    except OctobrixError as error:
        # Without systemd's word the cards still say what each OctoPrint says, on its configured port.
        problems.append(str(error))
        props = {}
        names = list(config.printers)
        with ThreadPoolExecutor(max_workers=min(16, max(1, len(names)))) as pool:
            asked = pool.map(lambda n: ask_octoprint(config.printers[n].port, api_key(n), timeout), names)
            answers.update(zip(names, asked, strict=True))

    def fetcher(name: str, port: int) -> tuple[str | None, float | None]:
        answers[name] = ask_octoprint(port, api_key(name), timeout)
        return None, None

    rows, cameras = collect(config, layout, props, dict.fromkeys(printers, fetcher), "", deferred=deferred)
    host = local_host(config.streams_listen())
    ustreamers = [n for n in config.cameras if config.streamer_of(n) == Streamer.USTREAMER]
    asked_cameras = [c.name for c in cameras if c.state == UnitState.ACTIVE and c.name in ustreamers]
    with ThreadPoolExecutor(max_workers=min(16, max(1, len(asked_cameras)))) as pool:
        streams = dict(zip(asked_cameras, pool.map(
            lambda n: ustreamer_state(config.cameras[n].port, host, timeout), asked_cameras), strict=True))  # fmt: skip
    return Asked(printers=rows, cameras=cameras, answers=answers, problems=problems, units=props, streams=streams)


def _number(value: object) -> float | None:
    return round(float(value), 1) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _pair(reading: object) -> dict[str, float | None] | None:
    if not isinstance(reading, dict):
        return None
    return {"actual": _number(reading.get("actual")), "target": _number(reading.get("target"))}


def _temperatures(printer: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not printer or not isinstance(printer.get("temperature"), dict):
        return None
    temps = printer["temperature"]
    tools = [{"name": k, **pair} for k in sorted(temps) if k.startswith("tool") and (pair := _pair(temps[k]))]
    return {"tools": tools, "bed": _pair(temps.get("bed"))}


def _job(job: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not job:
        return None
    file = (job.get("job") or {}).get("file") or {}
    progress = job.get("progress") or {}
    name = file.get("display") or file.get("name")
    if not name:
        return None
    completion = _number(progress.get("completion"))
    return {
        "file": str(name),
        "progress": completion,
        "print_time": _number(progress.get("printTime")),
        "time_left": _number(progress.get("printTimeLeft")),
    }


def card_state(row: PrinterStatus, answer: Answer | None) -> tuple[CardState, str, str | None]:
    """(state, the words the card shows, a detail line such as an error's text or why it cannot be asked)."""
    unknown = row.state == "unknown"
    if row.state != UnitState.ACTIVE and not (unknown and answer is not None):
        if row.state == UnitState.ACTIVATING:
            return CardState.STARTING, "Starting", None
        if row.state == "not-installed":
            return CardState.NOT_RUNNING, "Not set up", "run `sudo octobrixctl apply`"
        if row.state == UnitState.FAILED:
            return CardState.NOT_RUNNING, "Not running", f"its service failed: journalctl -u {row.unit}"
        if row.state == "unknown":
            return CardState.UNREACHABLE, "Cannot be asked", "systemd did not say how its service is"
        return CardState.NOT_RUNNING, "Not running", f"its service is {row.state}: sudo systemctl start {row.unit}"
    if answer is None:
        return CardState.UNREACHABLE, "Cannot be asked", "octobrix has no way to ask it"
    if answer.error is not None:
        refused = "Connection refused" in answer.error
        starting = refused and not unknown and (row.uptime_seconds or 0) < STARTUP_SECONDS
        if answer.error == "starting" or starting:
            # Its service runs, but OctoPrint does not serve yet: it is starting (or restarting).
            return CardState.STARTING, "Starting", None
        return CardState.UNREACHABLE, "Cannot be asked", f"its OctoPrint is {answer.error}"
    text = str((answer.job or {}).get("state") or "Unknown")
    flags = ((answer.printer or {}).get("state") or {}).get("flags") or {}
    error_text = (answer.job or {}).get("error")
    if text.startswith("Error") or "error" in text.lower() or flags.get("error"):
        head, _, tail = text.partition(": ")
        return CardState.ERROR, head, str(error_text or tail or "OctoPrint reports an error") or None
    if text.startswith(_PAUSED_PREFIXES):
        return CardState.PAUSED, text, None
    if text.startswith(_PRINTING_PREFIXES) or flags.get("printing"):
        return CardState.PRINTING, text, None
    if text.startswith("Operational"):
        return CardState.OPERATIONAL, "Operational", None
    if text.startswith(_CONNECTING_PREFIXES):
        return CardState.CONNECTING, text, None
    if text.startswith("Offline") or text.startswith("Closed"):
        if row.device == "unplugged":
            return CardState.UNPLUGGED, "Unplugged", f"plug its USB cable in: {row.device_path} is missing"
        return CardState.OFFLINE, "Offline", "not connected: connect it in its OctoPrint"
    return CardState.CONNECTING, text, None


def summary_text(counts: Mapping[Group, int]) -> str:
    words = {
        Group.PRINTING: "printing",
        Group.PAUSED: "paused",
        Group.IDLE: "idle",
        Group.OFFLINE: "offline",
        Group.ATTENTION: "need attention" if counts.get(Group.ATTENTION, 0) != 1 else "needs attention",
    }
    # Printing, idle and attention are always said (the maker looks for them); the rest when there are some.
    shown = [g for g in Group if counts.get(g, 0) or g in (Group.PRINTING, Group.IDLE, Group.ATTENTION)]
    return ", ".join(f"{counts.get(g, 0)} {words[g]}" for g in shown)


def _camera(config: Config, name: str, cameras: Mapping[str, CameraStatus]) -> dict[str, Any] | None:
    camera = config.printers[name].camera if name in config.printers else None
    if camera is None:
        return None
    row = cameras.get(camera)
    if row is None or row.state != UnitState.ACTIVE:
        state = "not running"
    else:
        state = "unplugged" if row.device == "unplugged" else "streaming"
    return {
        "name": camera,
        "snapshot": f"/cam/{camera}/snapshot",
        "stream": f"/cam/{camera}/stream",
        "state": state,
    }


def farm_view(config: Config, asked: Asked) -> dict[str, Any]:
    """The JSON of GET /api/farm, from what one refresh asked. Pure: nothing is asked or read here."""
    cameras = {c.name: c for c in asked.cameras}
    cards = []
    counts: dict[Group, int] = {}
    for row in asked.printers:
        answer = asked.answers.get(row.name)
        state, text, detail = card_state(row, answer)
        group = GROUP_OF[state]
        counts[group] = counts.get(group, 0) + 1
        ok = answer is not None and answer.error is None
        job = _job(answer.job) if ok and answer is not None else None
        if state not in (CardState.PRINTING, CardState.PAUSED) and job is not None:
            # A finished or selected file: shown, but no progress bar and no time left.
            job = {**job, "time_left": None}
        cards.append({
            "name": row.name,
            "url": f"{OPEN_PREFIX}{row.name}",
            "state": str(state),
            "group": str(group),
            "state_text": text,
            "detail": detail,
            "asked": ok,
            "device": row.device,
            "restart_pending": row.restart_pending,
            "job": job,
            "temperatures": _temperatures(answer.printer) if ok and answer is not None else None,
            "camera": _camera(config, row.name, cameras),
        })  # fmt: skip
    return {
        "version": JSON_VERSION,
        "summary": {**{str(g): counts.get(g, 0) for g in Group}, "total": len(cards), "text": summary_text(counts)},
        "problems": list(asked.problems),
        "printers": cards,
    }


class FarmOverview:
    """GET /api/farm and /metrics: asks only when a request comes in, and at most once per `cache_seconds`."""

    def __init__(
        self,
        config: Callable[[], Config],
        api_key: Callable[[str], str | None],
        *,
        layout: Layout | None = None,
        cache_seconds: float = CACHE_SECONDS,
        timeout: float = ASK_TIMEOUT,
        clock: Callable[[], float] = time.monotonic,
        query: Callable[[Sequence[str]], UnitProps] = query_units,
    ) -> None:
        self._query = query
        self._config = config
        self._api_key = api_key
        self._layout = layout or Layout()
        self._cache_seconds = cache_seconds
        self._timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._asked: tuple[Config, Asked] | None = None
        self._body: bytes | None = None
        self._at = 0.0

    def asked(self) -> tuple[Config, Asked]:
        """The config and what the last round asked, asking again if that is older than `cache_seconds`."""
        # One lock for the whole refresh: tabs that ask meanwhile wait for it and share its answer.
        with self._lock:
            return self._refreshed()

    def _refreshed(self) -> tuple[Config, Asked]:
        if self._asked is None or self._clock() - self._at >= self._cache_seconds:
            config = self._config()
            asked = gather(config, self._layout, self._api_key, timeout=self._timeout, query=self._query)
            self._asked, self._body, self._at = (config, asked), None, self._clock()
        return self._asked

    def answer(self) -> bytes:
        with self._lock:
            config, asked = self._refreshed()
            if self._body is None:
                self._body = json.dumps(farm_view(config, asked)).encode()
            return self._body


def ask_in_turn(
    config: Config, api_key: Callable[[str], str | None], timeout: float = ASK_TIMEOUT
) -> dict[str, Answer]:
    """Every printer's OctoPrint asked one after the other: the baseline the benchmark compares with."""
    return {name: ask_octoprint(p.port, api_key(name), timeout) for name, p in config.printers.items()}


class WebContext(Protocol):
    """What farm() needs of the web service's context (octobrixd.web.context.WebContext)."""

    @property
    def config(self) -> Config: ...
    @property
    def readonly_keys(self) -> Mapping[str, str]: ...
    @property
    def layout(self) -> Layout: ...


_OVERVIEWS: dict[int, FarmOverview] = {}
_OVERVIEWS_LOCK = threading.Lock()


def overview_of(context: WebContext) -> FarmOverview:
    """The one FarmOverview (and so the one cache) of the web service's context."""
    with _OVERVIEWS_LOCK:
        overview = _OVERVIEWS.get(id(context))
        if overview is None:
            # A new context (the config was reloaded) replaces the old one's cache.
            _OVERVIEWS.clear()
            overview = _OVERVIEWS[id(context)] = FarmOverview(
                lambda: context.config, context.readonly_keys.get, layout=context.layout
            )
        return overview


def farm(context: WebContext) -> bytes:
    """The JSON body of GET /api/farm for the web service's context."""
    return overview_of(context).answer()
