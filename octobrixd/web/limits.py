"""How many wrong farm passwords one client address may try: LIMIT a minute, then 429 until the
oldest of them is a minute old.

A login takes its slot before its password is checked, under one lock: many requests sent at once
from one address get no more tries between them than one after another. A right password gives its
slot back; a wrong one keeps it for the minute. IPv6 clients count by their /64, which one home or
one cloud machine usually holds whole. The clock is injected, so tests move time instead of waiting.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

LIMIT = 5
WINDOW = 60.0
# Addresses tracked before the ones with nothing left in their window are dropped.
PRUNE_AT = 4096


def client_key(address: str) -> str:
    """What counts as one client: an IPv4 address, an IPv6 /64, or (not an address) the text itself."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass
class _Tries:
    failures: list[float] = field(default_factory=list)
    pending: int = 0


class LoginLimiter:
    def __init__(self, limit: int = LIMIT, window: float = WINDOW, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._lock = threading.Lock()
        self._tries: dict[str, _Tries] = {}

    def _forget_old(self, tries: _Tries, now: float) -> None:
        tries.failures = [t for t in tries.failures if t > now - self.window]

    def begin(self, address: str) -> int | None:
        """Take a slot for one login from address: None, go ahead (then call end); else the whole
        seconds to wait before the next try."""
        key = client_key(address)
        with self._lock:
            now = self.clock()
            if len(self._tries) >= PRUNE_AT:
                for other, tries in list(self._tries.items()):
                    self._forget_old(tries, now)
                    if not tries.failures and not tries.pending:
                        del self._tries[other]
            tries = self._tries.setdefault(key, _Tries())
            self._forget_old(tries, now)
            if len(tries.failures) + tries.pending >= self.limit:
                # Slots held by logins still being checked free up within a second.
                wait = tries.failures[0] + self.window - now if len(tries.failures) >= self.limit else 1.0
                return max(1, math.ceil(wait))
            tries.pending += 1
            return None

    def end(self, address: str, *, failed: bool) -> None:
        key = client_key(address)
        with self._lock:
            tries = self._tries.setdefault(key, _Tries())
            tries.pending = max(0, tries.pending - 1)
            if failed:
                tries.failures.append(self.clock())
