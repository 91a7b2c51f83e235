"""The farm login's sessions, recorded on the server so that logging out ends one for good.

A session cookie (auth.issue_cookie) carries a random session id; the web service keeps the
SHA-256 of each live id with its expiry, never the id itself, so the record holds nothing a
browser could send. Logging out removes the entry: the same cookie, replayed, is refused.

The record is one small JSON file in the service's own state directory (systemd's
StateDirectory=octobrix-web: /var/lib/octobrix-web, mode 0700, the file 0600), written atomically
on each login and logout, so a restart of the service logs nobody out. Without a file (tests, a
development run) the record lives in memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path

from octobrixd.system.fsutil import write_atomic

log = logging.getLogger(__name__)

SESSIONS_FILE = "sessions.json"
# More live sessions than any farm has browsers: past it, the ones that end soonest go first.
MAX_SESSIONS = 1000


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionStore:
    """Live sessions by the digest of their id; thread-safe (the server answers in threads)."""

    def __init__(self, path: Path | None = None, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock
        self._lock = threading.Lock()
        self._live: dict[str, int] = self._load(path) if path is not None else {}

    @staticmethod
    def _load(path: Path) -> dict[str, int]:
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            # Unreadable: everyone logs in again, which is safe; the file is written anew at the next login.
            log.warning("starting with no sessions: cannot read %s (%s)", path, exc)
            return {}
        live = body.get("sessions") if isinstance(body, dict) else None
        if not isinstance(live, dict):
            log.warning("starting with no sessions: %s holds no sessions", path)
            return {}
        return {k: v for k, v in live.items() if isinstance(k, str) and isinstance(v, int)}

    def _save(self) -> None:
        if self.path is None:
            return
        text = json.dumps({"sessions": self._live}, sort_keys=True) + "\n"
        write_atomic(self.path, text, mode=0o600)

    def _prune(self, now: float) -> None:
        for key in [k for k, expires in self._live.items() if expires <= now]:
            del self._live[key]
        while len(self._live) >= MAX_SESSIONS:
            del self._live[min(self._live, key=self._live.__getitem__)]

    def open(self, expires: int) -> str:
        """A new session until expires (seconds since the epoch): its id, for the cookie."""
        session_id = secrets.token_urlsafe(24)
        with self._lock:
            self._prune(self.clock())
            self._live[_digest(session_id)] = expires
            self._save()
        return session_id

    def live(self, session_id: str) -> bool:
        with self._lock:
            expires = self._live.get(_digest(session_id))
        return expires is not None and expires > self.clock()

    def end(self, session_id: str) -> bool:
        """Log this session out; False: it was not live (already out, or never was)."""
        with self._lock:
            if self._live.pop(_digest(session_id), None) is None:
                return False
            self._save()
        return True
