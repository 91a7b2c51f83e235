"""Each instance's login and keys, read: the admin user and API key octobrixd uses, and the overview's
read-only key. instances/seeding.py makes them (once, on the first apply).

They are kept in root-only files, outside every instance's own directory; `octobrixctl credentials`
shows them. They are never logged and never put on a command line. Readers (status, doctor, the web
service, the farm's rows) import this module, never the writer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from octobrixd.errors import OctobrixError
from octobrixd.names import octoprint_instance
from octobrixd.system import paths
from octobrixd.system.paths import Layout

SECRETS_DIR = paths.STATE_DIR / ".secrets"
ADMIN_USER = "admin"
APP_ID = "octobrix"
# The front door's overview asks each OctoPrint as this user: the STATUS permission only, no group.
WEB_USER = "octobrix-web"
WEB_PERMISSIONS = ("STATUS",)


# The farm login (the front door's): its user is also an admin account of every OctoPrint, with the
# same password, so that single sign-on opens each printer as a real session of that account.
FARM_USER = "farm"
FARM_LOGIN = SECRETS_DIR / "farm.json"


@dataclass(frozen=True)
class FarmCredentials:
    username: str
    password: str


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
