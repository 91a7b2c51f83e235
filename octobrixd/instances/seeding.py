"""Each instance's OctoPrint basedir set up for octobrix: an admin user and an API key for octobrixd,
the front door overview's read-only user and key, and (front door on) the farm login's own admin
account, made once; later applies change nothing.

The password and keys are generated on the first apply and saved where instances/credentials.py
reads them. They are never logged and never put on a command line: the OctoPrint CLI reads the
passwords from its input, run as the instance's user (Instance.run_octoprint).
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import asdict
from pathlib import PurePosixPath
from typing import Any

import yaml

from octobrixd.errors import OctobrixError
from octobrixd.instances import api as octoprint_api
from octobrixd.instances.credentials import (
    ADMIN_USER,
    APP_ID,
    SECRETS_DIR,
    WEB_PERMISSIONS,
    WEB_USER,
    Credentials,
    FarmCredentials,
    WebKey,
    credentials_path,
    read_credentials,
    read_web_key,
    web_key_path,
)
from octobrixd.instances.instance import APP_KEYS, BASEDIR, USERS_YAML, Instance
from octobrixd.system import nofollow
from octobrixd.system.fsutil import write_atomic
from octobrixd.system.paths import Layout

log = logging.getLogger(__name__)


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


def _load_yaml(instance: Instance, relative: PurePosixPath) -> Any:
    """A YAML file of OctoPrint's in the basedir (relative to the state dir), read without following a
    link: a link or FIFO there stops seeding with one line naming it (UnsafePathError), nothing changed."""
    path = instance.state_dir / relative
    try:
        return yaml.safe_load(nofollow.read_text(instance.state_dir, relative)) or {}
    except FileNotFoundError:
        return {}
    except yaml.YAMLError as exc:
        raise OctobrixError(
            f"{path} is not valid YAML: {exc}",
            hint="fix the line named above (it is OctoPrint's data), then apply again",
        ) from None


def _users(instance: Instance) -> Any:
    return _load_yaml(instance, PurePosixPath(BASEDIR, USERS_YAML))


def _keys(instance: Instance) -> Any:
    return _load_yaml(instance, PurePosixPath(BASEDIR) / APP_KEYS)


def _add_user(instance: Instance, user: str, password: str, flags: list[str], *, ids: tuple[int, int]) -> None:
    instance.run_octoprint(
        ["user", "add", user, *flags], ids=ids, doing=f"create its user {user}", input_text=f"{password}\n{password}\n"
    )
    users = _users(instance)
    if not isinstance(users, dict) or user not in users:
        raise OctobrixError(
            f"OctoPrint of {instance.name} did not save its user {user}", hint="apply again with --debug"
        )


def _ensure_admin(instance: Instance, credentials: Credentials, ids: tuple[int, int]) -> bool:
    """Create the admin on a fresh basedir; True if it was created now."""
    users = _users(instance)
    if isinstance(users, dict) and users:
        # Someone already set up users (octobrix earlier, or the user): never touch accounts.
        return False
    _add_user(instance, credentials.username, credentials.password, ["--admin"], ids=ids)
    return True


def _ensure_web_user(instance: Instance, web_key: WebKey, ids: tuple[int, int]) -> None:
    users = _users(instance)
    if isinstance(users, dict) and WEB_USER in users:
        return
    flags = [arg for permission in WEB_PERMISSIONS for arg in ("--permission", permission)]
    _add_user(instance, WEB_USER, web_key.password, flags, ids=ids)


def _ensure_app_key(instance: Instance, user: str, api_key: str, *, ids: tuple[int, int]) -> None:
    uid, gid = ids
    keys = _keys(instance)
    if not isinstance(keys, dict):
        keys = {}
    entry = {"app_id": APP_ID, "api_key": api_key}
    mine = [k for k in keys.get(user) or [] if isinstance(k, dict) and k.get("app_id") != APP_ID]
    updated = {**keys, user: [*mine, entry]}
    if updated == keys:
        return
    # basedir/data and data/appkeys made (or handed over) and the keys written without following a
    # link: one planted there is refused, never written through.
    relative = PurePosixPath(BASEDIR) / APP_KEYS
    for folder in (relative.parent.parent, relative.parent):
        nofollow.make_dir(instance.state_dir, folder, mode=None, uid=uid, gid=gid)
    nofollow.write_atomic(
        instance.state_dir, relative, yaml.safe_dump(updated, sort_keys=True), mode=0o600, uid=uid, gid=gid
    )


def _has_key(keys: Any, user: str, api_key: str) -> bool:
    return isinstance(keys, dict) and any(
        isinstance(k, dict) and k.get("api_key") == api_key for k in keys.get(user) or []
    )


def _ensure_farm_user(instance: Instance, farm: FarmCredentials, ids: tuple[int, int]) -> None:
    """The farm login's account, an admin of this OctoPrint with the farm's password; one of that name
    that is there (made before, or by the user) is left as it is."""
    users = _users(instance)
    if isinstance(users, dict) and farm.username in users:
        return
    _add_user(instance, farm.username, farm.password, ["--admin"], ids=ids)


def _has_user(instance: Instance, user: str) -> bool:
    users = _users(instance)
    return isinstance(users, dict) and user in users


def needs_seeding(layout: Layout, name: str, *, farm_user: str | None = None) -> bool:
    """farm_user: the farm login's user, who must have an account there (the front door is on)."""
    credentials = read_credentials(layout, name)
    if credentials is None:
        return True
    instance = Instance(name, layout)
    keys = _keys(instance)
    if not _has_key(keys, credentials.username, credentials.api_key) or not _users(instance):
        return True
    if farm_user is not None and not _has_user(instance, farm_user):
        return True
    # An instance set up before the front door has no read-only user for its overview yet.
    web_key = read_web_key(layout, name)
    return web_key is None or not _has_key(keys, WEB_USER, web_key.api_key)


def seed_basedir(
    layout: Layout,
    name: str,
    uid: int,
    gid: int,
    *,
    serving_port: int | None = None,
    farm: FarmCredentials | None = None,
) -> Credentials:
    """Give the instance its admin user and octobrixd's API key, once; later calls change nothing.

    It also gets the read-only user the front door's overview asks as: in its files while its
    OctoPrint is stopped (serving_port None); from a running OctoPrint, through its API, which
    saves the user itself (it would write its own users over a file changed under it), so a
    printing instance is never restarted for it.
    """
    instance = Instance(name, layout)
    credentials = load_or_create_credentials(layout, name)
    fresh = _ensure_admin(instance, credentials, (uid, gid))
    _ensure_app_key(instance, credentials.username, credentials.api_key, ids=(uid, gid))
    if fresh or serving_port is None or read_web_key(layout, name) is not None:
        web_key = _load_or_create_web_key(layout, name)
        _ensure_web_user(instance, web_key, (uid, gid))
        _ensure_app_key(instance, WEB_USER, web_key.api_key, ids=(uid, gid))
    else:
        _add_web_user_live(layout, name, credentials, serving_port)
    if farm is not None:
        if serving_port is None:
            _ensure_farm_user(instance, farm, (uid, gid))
        elif not _has_user(instance, farm.username):
            _add_farm_user_live(name, credentials, farm, serving_port)
    return credentials


def _add_farm_user_live(name: str, credentials: Credentials, farm: FarmCredentials, port: int) -> None:
    try:
        octoprint_api.add_admin(port, credentials.api_key, farm.username, farm.password)
    except octoprint_api.ApiError as error:
        # Single sign-on waits for it: the printer opens at OctoPrint's own login until then.
        log.warning("could not make the farm's account in %s yet (%s); the next apply tries again", name, error)
        return
    log.info("made the farm's account %s in %s", farm.username, name)


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
