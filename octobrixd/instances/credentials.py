"""Each instance's OctoPrint basedir: an admin user and an API key for octobrixd, made once.

The password and key are generated on the first apply and kept in a root-only file, outside
every instance's own directory; `octobrixctl credentials` shows them. They are never logged
and never put on a command line.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from octobrixd.errors import CommandError, OctobrixError
from octobrixd.instances import api as octoprint_api
from octobrixd.names import instance_user, octoprint_instance
from octobrixd.system import paths
from octobrixd.system.command import run
from octobrixd.system.fsutil import write_atomic
from octobrixd.system.paths import Layout

log = logging.getLogger(__name__)

SECRETS_DIR = paths.STATE_DIR / ".secrets"
ADMIN_USER = "admin"
APP_ID = "octobrix"
# The front door's overview asks each OctoPrint as this user: the STATUS permission only, no group.
WEB_USER = "octobrix-web"
WEB_PERMISSIONS = ("STATUS",)


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str
    api_key: str


@dataclass(frozen=True)
class WebKey:
    password: str
    api_key: str


def credentials_path(name: str) -> PurePosixPath:
    return SECRETS_DIR / f"{name}.json"


class CredentialsNeedRootError(OctobrixError):
    """The credentials are root-only and this process is not root: nothing is wrong with them."""

    def __init__(self, name: str, path: Path) -> None:
        self.path = path
        super().__init__(f"the login of {name} is readable by root only ({path})", hint="run it as root (sudo)")


def web_key_path(name: str) -> PurePosixPath:
    return SECRETS_DIR / "web" / "printers" / f"{name}.json"


def read_web_key(layout: Layout, name: str) -> WebKey | None:
    try:
        body = json.loads(layout.path(web_key_path(name)).read_text(encoding="utf-8"))
        return WebKey(body["password"], body["api_key"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise OctobrixError(
            f"cannot read the overview's key for {name}: {exc}",
            hint=f"fix {layout.path(web_key_path(name))} by hand, or stop {octoprint_instance(name)} and apply again",
        ) from None


def _load_or_create_web_key(layout: Layout, name: str) -> WebKey:
    existing = read_web_key(layout, name)
    if existing is not None:
        return existing
    created = WebKey(secrets.token_urlsafe(18), secrets.token_hex(16).upper())
    _save_web_key(layout, name, created)
    return created


def _save_web_key(layout: Layout, name: str, web_key: WebKey) -> None:
    path = layout.path(web_key_path(name))
    for directory in (path.parent.parent, path.parent):
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o700)
    write_atomic(path, json.dumps(asdict(web_key)) + "\n", mode=0o600)


def read_credentials(layout: Layout, name: str) -> Credentials | None:
    path = layout.path(credentials_path(name))
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        return Credentials(**body)
    except FileNotFoundError:
        return None
    except PermissionError:
        raise CredentialsNeedRootError(name, path) from None
    except (ValueError, TypeError) as exc:
        # It holds the admin password and octobrixd's key: never advise deleting it.
        raise OctobrixError(
            f"the saved login of {name} in {path} is damaged ({exc})",
            hint=f"restore {path} from a backup; or move it aside (`sudo mv {path} {path}.broken`) and run "
            "`sudo octobrixctl apply`, which gives octobrixd a new API key (the admin password stays as it was)",
        ) from None
    except OSError as exc:
        raise OctobrixError(
            f"cannot read the saved login of {name} ({exc})", hint=f"see `sudo ls -l {path}` and the kernel log"
        ) from None


def load_or_create_credentials(layout: Layout, name: str) -> Credentials:
    existing = read_credentials(layout, name)
    if existing is not None:
        return existing
    created = Credentials(ADMIN_USER, secrets.token_urlsafe(12), secrets.token_hex(16).upper())
    directory = layout.path(SECRETS_DIR)
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    write_atomic(layout.path(credentials_path(name)), json.dumps(asdict(created)) + "\n", mode=0o600)
    return created


def _load_yaml(path: Path) -> Any:
    # Imported here: `octobrixctl status` reads the credentials (JSON) only, and starts faster without it.
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        return {}
    except yaml.YAMLError as exc:
        raise OctobrixError(
            f"{path} is not valid YAML: {exc}",
            hint="fix the line named above (it is OctoPrint's data), then apply again",
        ) from None


def _add_user(layout: Layout, name: str, user: str, password: str, flags: list[str], *, ids: tuple[int, int]) -> None:
    uid, gid = ids
    basedir = layout.state_dir(name) / "basedir"
    octoprint = layout.state_dir(name) / "venv" / "bin" / "octoprint"
    password_twice = f"{password}\n{password}\n"
    try:
        run(
            [str(octoprint), "--basedir", str(basedir), "user", "add", user, *flags],
            input_text=password_twice,
            env={"HOME": str(layout.state_dir(name)), "PATH": "/usr/bin:/bin"},
            as_user=(uid, gid),
            timeout=120,
        )
    except CommandError as error:
        raise OctobrixError(
            f"could not create the user {user} of {name}: {error}",
            hint=f"see `sudo -u {instance_user(name)} {octoprint} --basedir {basedir} user list`",
        ) from error
    users = _load_yaml(basedir / "users.yaml")
    if not isinstance(users, dict) or user not in users:
        raise OctobrixError(f"OctoPrint of {name} did not save its user {user}", hint="apply again with --debug")


def _ensure_admin(layout: Layout, name: str, credentials: Credentials, uid: int, gid: int) -> bool:
    """Create the admin on a fresh basedir; True if it was created now."""
    users = _load_yaml(layout.state_dir(name) / "basedir" / "users.yaml")
    if isinstance(users, dict) and users:
        # Someone already set up users (octobrix earlier, or the user): never touch accounts.
        return False
    _add_user(layout, name, credentials.username, credentials.password, ["--admin"], ids=(uid, gid))
    return True


def _ensure_web_user(layout: Layout, name: str, web_key: WebKey, uid: int, gid: int) -> None:
    users = _load_yaml(layout.state_dir(name) / "basedir" / "users.yaml")
    if isinstance(users, dict) and WEB_USER in users:
        return
    flags = [arg for permission in WEB_PERMISSIONS for arg in ("--permission", permission)]
    _add_user(layout, name, WEB_USER, web_key.password, flags, ids=(uid, gid))


def _ensure_app_key(layout: Layout, name: str, user: str, api_key: str, *, ids: tuple[int, int]) -> None:
    uid, gid = ids
    keys_file = layout.state_dir(name) / "basedir" / "data" / "appkeys" / "keys.yaml"
    keys = _load_yaml(keys_file)
    if not isinstance(keys, dict):
        keys = {}
    entry = {"app_id": APP_ID, "api_key": api_key}
    mine = [k for k in keys.get(user) or [] if isinstance(k, dict) and k.get("app_id") != APP_ID]
    updated = {**keys, user: [*mine, entry]}
    if updated == keys:
        return
    for directory in (keys_file.parent.parent, keys_file.parent):
        directory.mkdir(exist_ok=True)
        os.chown(directory, uid, gid)
    import yaml

    write_atomic(keys_file, yaml.safe_dump(updated, sort_keys=True), mode=0o600, uid=uid, gid=gid)


def _has_key(keys: Any, user: str, api_key: str) -> bool:
    return isinstance(keys, dict) and any(
        isinstance(k, dict) and k.get("api_key") == api_key for k in keys.get(user) or []
    )


def needs_seeding(layout: Layout, name: str) -> bool:
    credentials = read_credentials(layout, name)
    if credentials is None:
        return True
    basedir = layout.state_dir(name) / "basedir"
    keys = _load_yaml(basedir / "data" / "appkeys" / "keys.yaml")
    if not _has_key(keys, credentials.username, credentials.api_key) or not _load_yaml(basedir / "users.yaml"):
        return True
    # An instance set up before the front door has no read-only user for its overview yet.
    web_key = read_web_key(layout, name)
    return web_key is None or not _has_key(keys, WEB_USER, web_key.api_key)


def seed_basedir(layout: Layout, name: str, uid: int, gid: int, *, serving_port: int | None = None) -> Credentials:
    """Give the instance its admin user and octobrixd's API key, once; later calls change nothing.

    It also gets the read-only user the front door's overview asks as: in its files while its
    OctoPrint is stopped (serving_port None); from a running OctoPrint, through its API, which
    saves the user itself (it would write its own users over a file changed under it), so a
    printing instance is never restarted for it.
    """
    credentials = load_or_create_credentials(layout, name)
    fresh = _ensure_admin(layout, name, credentials, uid, gid)
    _ensure_app_key(layout, name, credentials.username, credentials.api_key, ids=(uid, gid))
    if fresh or serving_port is None or read_web_key(layout, name) is not None:
        web_key = _load_or_create_web_key(layout, name)
        _ensure_web_user(layout, name, web_key, uid, gid)
        _ensure_app_key(layout, name, WEB_USER, web_key.api_key, ids=(uid, gid))
    else:
        _add_web_user_live(layout, name, credentials, serving_port)
    return credentials


def _add_web_user_live(layout: Layout, name: str, credentials: Credentials, port: int) -> None:
    password = secrets.token_urlsafe(18)
    try:
        octoprint_api.add_user(port, credentials.api_key, WEB_USER, password, WEB_PERMISSIONS)
        api_key = octoprint_api.generate_app_key(port, credentials.api_key, WEB_USER, APP_ID)
    except octoprint_api.ApiError as error:
        # Not a reason to fail the apply: the overview's card says it cannot ask, until next time.
        log.warning(
            "could not make the overview's read-only user of %s yet (%s); the next apply tries again", name, error
        )
        return
    _save_web_key(layout, name, WebKey(password, api_key))
    log.info("made the overview's read-only user %s of %s", WEB_USER, name)
