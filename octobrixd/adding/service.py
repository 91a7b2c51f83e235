"""octobrixd's side of adding: it keeps the found list fresh (after each apply and each plug) and
answers the web service's requests on the add interface."""

from __future__ import annotations

import grp
import logging
import pwd
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyudev

from octobrixd.adding import channel
from octobrixd.adding.found import Found, build_found, publish
from octobrixd.adding.requests import AddRequest, answer, parse_request, perform
from octobrixd.config.model import Config
from octobrixd.devices import v4l2
from octobrixd.devices.inventory import Device, scan
from octobrixd.errors import OctobrixError
from octobrixd.render.units import WEB_SERVICE_USER
from octobrixd.system.paths import Layout

log = logging.getLogger(__name__)


class AddService:
    def __init__(
        self,
        config_path: Path,
        layout: Layout,
        busy: Callable[[str], bool],
        applied: Callable[[], None],
    ) -> None:
        self.config_path = config_path
        self.layout = layout
        # Its own: libudev objects must not be shared with the hotplug monitor's thread.
        self.context = pyudev.Context()
        self.busy = busy
        # Called (from a worker thread) after a request changed the config.
        self.applied = applied
        self.lock = threading.Lock()
        self.devices: tuple[Device, ...] = ()
        self.found: tuple[Found, ...] = ()
        # Names just added (name -> kind) whose apply has not finished yet.
        self.setting_up: dict[str, str] = {}

    def rescan(self, config: Config | None) -> int:
        """What is plugged in now against the config in force; published for the web service."""
        inventory = scan(self.context, config=config, layout=self.layout, query_formats=v4l2.query_formats)
        found = build_found(inventory.devices, config)
        with self.lock:
            self.devices, self.found = inventory.devices, found
            if config is not None:
                # In force now: its card says how it is doing from here on.
                names = set(config.printers) | set(config.cameras)
                self.setting_up = {n: k for n, k in self.setting_up.items() if n not in names}
            publish(self.layout, found, self.setting_up)
        return len(found)

    def handle(self, data: bytes) -> dict[str, Any]:
        try:
            request = parse_request(data)
        except OctobrixError as error:
            log.info("add interface refused a request: %s", error)
            return {"ok": False, "error": str(error), "hint": error.hint}
        # One request at a time: two adds racing for one name or port would both pass their checks.
        with self.lock:
            reply = answer(
                lambda: perform(request, self.config_path, found=self.found, devices=self.devices, busy=self.busy)
            )
            if reply["ok"] and isinstance(request, AddRequest):
                # Until the apply is done the page shows it as being set up, no longer as found.
                added = next(f for f in self.found if f.id == request.device)
                self.setting_up[request.name] = str(added.kind)
                self.found = tuple(f for f in self.found if f.id != request.device)
                publish(self.layout, self.found, self.setting_up)
        if reply["ok"]:
            self.applied()
        else:
            log.info("add interface refused a request: %s", reply["error"])
        return reply

    def open_listener(self) -> tuple[socket.socket, int] | None:
        """The add interface, when the web service's user exists (made by apply's sysusers)."""
        try:
            uid = pwd.getpwnam(WEB_SERVICE_USER).pw_uid
            gid = grp.getgrnam(WEB_SERVICE_USER).gr_gid
        except KeyError:
            log.info("no user %s yet: the add interface is not offered", WEB_SERVICE_USER)
            return None
        path = channel.socket_path(self.layout.root)
        try:
            return channel.listen(path, gid), uid
        except OSError as error:
            log.warning("cannot offer the add interface at %s: %s", path, error)
            return None

    def serve(self, conn: socket.socket, allowed_uid: int) -> None:
        threading.Thread(
            target=channel.serve, args=(conn, allowed_uid, self.handle), name="add-request", daemon=True
        ).start()
