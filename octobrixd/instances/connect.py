"""Seeing a just-plugged printer's OctoPrint through to a connection with it.

octobrixd runs Connections.connect on a worker thread for each printer plugged in. It asks
OctoPrint's connection API on loopback and only ever asks to connect a printer that is not
connected; a connection counts once it has held for a while (tests/test_connect.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from octobrixd.config.model import Config
from octobrixd.instances import api as octoprint_api
from octobrixd.instances.credentials import read_credentials
from octobrixd.instances.versions import installed_octoprint, running_generation
from octobrixd.names import device_link
from octobrixd.system.paths import Layout

log = logging.getLogger(__name__)

# How long a just-plugged printer's OctoPrint may take to answer before we give up connecting it.
CONNECT_PATIENCE_SECONDS = 180.0
CONNECT_ATTEMPTS = 5
TRANSITIONAL_STATES = ("Opening", "Connecting", "Detecting")
STUCK_SECONDS = 30.0
SETTLE_SECONDS = 15.0


class Connections:
    """The connection runs in progress, one per printer; done() is called at the end of each
    (octobrixd refreshes STATUS= then)."""

    def __init__(self, layout: Layout, done: Callable[[], None]) -> None:
        self.layout = layout
        self.done = done
        self.lock = threading.Lock()
        self.running: set[str] = set()
        self.again: set[str] = set()

    def connect(self, config: Config, name: str) -> None:
        """See the instance's OctoPrint through to a connection with its just-plugged printer.

        One run per printer at a time: a plug during a run makes the run look again at its end.
        It never disconnects anything: it only asks to connect when OctoPrint is not connected
        (offline, closed, or after an error) and the printer's link exists, at most a few times.
        """
        with self.lock:
            if name in self.running:
                self.again.add(name)
                return
            self.running.add(name)
        try:
            self._see_through(config, name)
        finally:
            with self.lock:
                self.running.discard(name)
                again = name in self.again
                self.again.discard(name)
            self.done()
        if again:
            self.connect(config, name)

    def _see_through(self, config: Config, name: str) -> None:
        credentials = read_credentials(self.layout, name)
        if credentials is None:
            log.info("printer %s: its OctoPrint is not set up yet, not connecting", name)
            return
        printer = config.printers[name]
        deadline = time.monotonic() + CONNECT_PATIENCE_SECONDS
        asked = 0
        state = ""
        transitional_since: float | None = None
        settled_since: float | None = None
        while time.monotonic() < deadline:
            try:
                state = octoprint_api.connection_state(printer.port, credentials.api_key)
            except octoprint_api.ApiError:
                time.sleep(2)  # OctoPrint is (re)starting
                continue
            if state.startswith(TRANSITIONAL_STATES):
                transitional_since = transitional_since or time.monotonic()
                # OctoPrint stays "Opening serial connection" for good when the port vanished while
                # it opened it, and ignores a connect until told to disconnect.
                stuck = time.monotonic() - transitional_since > STUCK_SECONDS
            else:
                transitional_since = None
                stuck = False
            if not (octoprint_api.is_disconnected(state) or stuck):
                # Connected, or on its way. A connection is believed only once it has held for a
                # while: OctoPrint notices a pulled cable late, and a quick re-plug can come first.
                if transitional_since is None:
                    settled_since = settled_since or time.monotonic()
                    if time.monotonic() - settled_since >= SETTLE_SECONDS:
                        log.info("printer %s: %s", name, state)
                        return
                else:
                    settled_since = None
                time.sleep(1)
                continue
            settled_since = None
            if not self.layout.device_link(name).exists():
                log.info("printer %s: unplugged again before it connected", name)
                return
            if asked >= CONNECT_ATTEMPTS:
                log.warning("printer %s: OctoPrint could not connect (%s); see its Terminal tab", name, state)
                return
            if stuck or octoprint_api.needs_reset(state):
                # Nothing can be printing in these states, so the reset disturbs nothing.
                log.info("printer %s: resetting its OctoPrint's connection (stuck at %r)", name, state)
                octoprint_api.disconnect(printer.port, credentials.api_key)
            installed = installed_octoprint(self.layout, name)
            generation = running_generation(installed, config.octoprint_requirement(name))
            octoprint_api.connect(printer.port, credentials.api_key, device_link(name), printer.baudrate, generation)
            asked += 1
            transitional_since = None
            log.info("printer %s: asked its OctoPrint to connect", name)
            time.sleep(1)
        log.warning("printer %s: no connection after %.0f s (last state: %s)", name, CONNECT_PATIENCE_SECONDS, state)
