"""The front door's secrets, made on the live system by apply (never under --root).

- the farm login: its clear password in a root-only file for `octobrixctl credentials`, its scrypt
  hash and the cookie secret in another, which systemd hands to octobrix-web (LoadCredential=);
- the farm login's user and clear password again, for the web service alone: each OctoPrint has an
  admin account of that name and password (instances/seeding.py), and single sign-on logs in as it;
- per printer, the key of its read-only `octobrix-web` user, gathered into one file for the web
  service: the overview may ask each OctoPrint its status, nothing more;
- the metrics token, Prometheus's bearer token for /metrics: clear in a root-only file (for
  `octobrixctl credentials` and Prometheus's `credentials_file`), only its SHA-256 digest handed to
  the web service. Made once, whether /metrics is on or not, so the service's credential always exists.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from octobrixd.errors import OctobrixError
from octobrixd.frontdoor.auth import FarmLogin, make_login, read_login, token_file_text
from octobrixd.instances.credentials import (
    FARM_LOGIN,
    FARM_USER,
    SECRETS_DIR,
    FarmCredentials,
    read_farm_credentials,
    read_web_key,
)
from octobrixd.system.fsutil import remove_file, write_atomic
from octobrixd.system.paths import Layout

log = logging.getLogger(__name__)

WEB_DIR = SECRETS_DIR / "web"
WEB_LOGIN = WEB_DIR / "login.json"
WEB_KEYS = WEB_DIR / "keys.json"
WEB_PRINTER_LOGIN = WEB_DIR / "printer-login.json"
# Where nginx's per-printer admin-key maps were, before each printer had its own origin.
OLD_KEY_MAP_DIR = SECRETS_DIR / "frontdoor"
METRICS_TOKEN = SECRETS_DIR / "metrics-token"
WEB_METRICS = WEB_DIR / "metrics.json"


@dataclass(frozen=True)
class Synced:
    nginx_changed: bool
    web_changed: bool


def _write_if_changed(path: Path, text: str) -> bool:
    try:
        if path.read_text(encoding="utf-8") == text and (path.stat().st_mode & 0o777) == 0o600:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    write_atomic(path, text, mode=0o600)
    return True


def _make_farm_credentials(layout: Layout) -> FarmCredentials:
    farm = FarmCredentials(FARM_USER, secrets.token_urlsafe(12))
    text = json.dumps({"username": farm.username, "password": farm.password}) + "\n"
    _write_if_changed(layout.path(FARM_LOGIN), text)
    return farm


def ensure_farm_credentials(layout: Layout) -> FarmCredentials:
    """The farm login, made once (apply makes it before it sets up the OctoPrints' farm accounts)."""
    return read_farm_credentials(layout) or _make_farm_credentials(layout)


def _ensure_farm_login(layout: Layout) -> bool:
    """Make the farm login once; afterwards only re-derive the web service's copies if they are missing."""
    farm = read_farm_credentials(layout)
    changed = farm is None
    if farm is None:
        farm = _make_farm_credentials(layout)
    printer_login = json.dumps({"username": farm.username, "password": farm.password}) + "\n"
    changed |= _write_if_changed(layout.path(WEB_PRINTER_LOGIN), printer_login)
    web_login_path = layout.path(WEB_LOGIN)
    current: FarmLogin | None = None
    if web_login_path.exists():
        current = read_login(web_login_path)
    if current is None or current.username != farm.username or changed:
        changed |= _write_if_changed(web_login_path, make_login(farm.username, farm.password).to_json())
    return changed


def read_metrics_token(layout: Layout) -> str | None:
    path = layout.path(METRICS_TOKEN)
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None
    except PermissionError:
        raise OctobrixError(
            f"credentials needs root: the metrics token is readable by root only ({path})",
            hint="sudo octobrixctl credentials",
        ) from None


def _ensure_metrics_token(layout: Layout) -> bool:
    token = read_metrics_token(layout)
    changed = False
    if token is None:
        token = secrets.token_urlsafe(24)
        changed |= _write_if_changed(layout.path(METRICS_TOKEN), token + "\n")
    return _write_if_changed(layout.path(WEB_METRICS), token_file_text(token)) or changed


def _drop_old_key_maps(layout: Layout) -> bool:
    """The admin-key maps of the single-origin front door: no site includes them any more."""
    directory = layout.path(OLD_KEY_MAP_DIR)
    if not directory.is_dir():
        return False
    for leftover in sorted(directory.glob("*.map")):
        remove_file(leftover)
    if directory.is_dir() and not any(directory.iterdir()):
        directory.rmdir()
    return True


def _sync_web_keys(layout: Layout, printers: Sequence[str]) -> bool:
    keys = {}
    for name in sorted(printers):
        web_key = read_web_key(layout, name)
        if web_key is not None:
            keys[name] = web_key.api_key
    return _write_if_changed(layout.path(WEB_KEYS), json.dumps(keys, sort_keys=True) + "\n")


def sync(layout: Layout, printers: Sequence[str]) -> Synced:
    """Write what changed; report whether nginx must reload and the web service restart."""
    web_changed = _ensure_farm_login(layout)
    web_changed |= _ensure_metrics_token(layout)
    nginx_changed = _drop_old_key_maps(layout)
    web_changed |= _sync_web_keys(layout, printers)
    return Synced(nginx_changed=nginx_changed, web_changed=web_changed)
