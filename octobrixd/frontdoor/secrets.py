"""The front door's secrets, made on the live system by apply (never under --root).

- the farm login: its clear password in a root-only file for `octobrixctl credentials`, its scrypt
  hash and the cookie secret in another, which systemd hands to octobrix-web (LoadCredential=);
- per printer, the nginx map entry that gives a farm-logged-in request that OctoPrint's admin key
  (octobrixd's own key, from instances/credentials.py): root-only, included by the rendered nginx site;
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
from pathlib import Path, PurePosixPath

from octobrixd.errors import OctobrixError
from octobrixd.frontdoor.auth import FarmLogin, make_login, read_login, token_file_text
from octobrixd.instances.credentials import SECRETS_DIR, read_credentials, read_web_key
from octobrixd.render.nginx import KEY_MAP_DIR, key_map_entry
from octobrixd.system.fsutil import remove_file, write_atomic
from octobrixd.system.paths import Layout

log = logging.getLogger(__name__)

FARM_USER = "farm"
FARM_LOGIN = SECRETS_DIR / "farm.json"
WEB_DIR = SECRETS_DIR / "web"
WEB_LOGIN = WEB_DIR / "login.json"
WEB_KEYS = WEB_DIR / "keys.json"
METRICS_TOKEN = SECRETS_DIR / "metrics-token"
WEB_METRICS = WEB_DIR / "metrics.json"


@dataclass(frozen=True)
class FarmCredentials:
    username: str
    password: str


@dataclass(frozen=True)
class Synced:
    nginx_changed: bool
    web_changed: bool


def read_farm_credentials(layout: Layout) -> FarmCredentials | None:
    path = layout.path(FARM_LOGIN)
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        return FarmCredentials(body["username"], body["password"])
    except FileNotFoundError:
        return None
    except PermissionError:
        raise OctobrixError(
            f"credentials needs root: the farm login is readable by root only ({path})",
            hint="sudo octobrixctl credentials",
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise OctobrixError(
            f"cannot read the farm login from {path}: {exc}",
            hint='fix the file by hand ({"username": ..., "password": ...}) and run `sudo octobrixctl apply`',
        ) from None


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


def _ensure_farm_login(layout: Layout) -> bool:
    """Make the farm login once; afterwards only re-derive the web service's copy if it is missing."""
    farm = read_farm_credentials(layout)
    changed = False
    if farm is None:
        farm = FarmCredentials(FARM_USER, secrets.token_urlsafe(12))
        changed |= _write_if_changed(
            layout.path(FARM_LOGIN), json.dumps({"username": farm.username, "password": farm.password}) + "\n"
        )
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


def _sync_key_maps(layout: Layout, printers: Sequence[str]) -> bool:
    changed = False
    wanted: set[PurePosixPath] = set()
    for name in sorted(printers):
        credentials = read_credentials(layout, name)
        if credentials is None:
            continue
        rel = KEY_MAP_DIR / f"{name}.map"
        wanted.add(rel)
        changed |= _write_if_changed(layout.path(rel), key_map_entry(credentials.api_key))
    directory = layout.path(KEY_MAP_DIR)
    if directory.is_dir():
        for leftover in sorted(directory.glob("*.map")):
            if PurePosixPath(leftover.relative_to(layout.root)) not in wanted:
                remove_file(leftover)
                changed = True
    return changed


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
    nginx_changed = _sync_key_maps(layout, printers)
    web_changed |= _sync_web_keys(layout, printers)
    return Synced(nginx_changed=nginx_changed, web_changed=web_changed)
