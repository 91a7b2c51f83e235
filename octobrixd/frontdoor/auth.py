"""The farm login: a scrypt password hash and a signed, expiring session cookie.

The cookie names its session (a random id, sessions.SessionStore): the signature proves the web
service issued it, the server's record that it is still live, so logging out ends it for good.
Changing the cookie secret logs everyone out.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from octobrixd.errors import OctobrixError

COOKIE = "octobrix_farm"
SESSION_SECONDS = 30 * 24 * 3600
# scrypt's cost: ~16 MiB and ~50 ms per login on a small PC, far more for a guesser.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


@dataclass(frozen=True)
class FarmLogin:
    """What the web service knows of the farm login: never the clear password."""

    username: str
    password_hash: str
    cookie_secret: str

    def to_json(self) -> str:
        return (
            json.dumps(
                {"username": self.username, "password_hash": self.password_hash, "cookie_secret": self.cookie_secret}
            )
            + "\n"
        )


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, maxmem=64 * 1024**2)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        computed = hashlib.scrypt(
            password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), maxmem=64 * 1024**2
        )
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(computed.hex(), digest)


def make_login(username: str, password: str) -> FarmLogin:
    return FarmLogin(username, hash_password(password), secrets.token_hex(32))


def _sign(secret: str, payload: str) -> str:
    return hmac.new(bytes.fromhex(secret), payload.encode(), hashlib.sha256).hexdigest()


def session_expiry(now: float | None = None) -> int:
    return int((now if now is not None else time.time()) + SESSION_SECONDS)


def issue_cookie(login: FarmLogin, session_id: str, expires: int) -> str:
    payload = f"{login.username}|{expires}|{session_id}"
    return f"{payload}|{_sign(login.cookie_secret, payload)}"


def cookie_session(login: FarmLogin, value: str | None, now: float | None = None) -> str | None:
    """The session a cookie names, if this service signed it for this user and it has not expired;
    whether that session is still live is the SessionStore's to say."""
    if not value:
        return None
    try:
        username, expires, session_id, signature = value.split("|")
        expiry = int(expires)
    except ValueError:
        return None
    if not hmac.compare_digest(signature, _sign(login.cookie_secret, f"{username}|{expires}|{session_id}")):
        return None
    if username != login.username or expiry <= (now if now is not None else time.time()) or not session_id:
        return None
    return session_id


def read_login(path: Path) -> FarmLogin:
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        return FarmLogin(body["username"], body["password_hash"], body["cookie_secret"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise OctobrixError(
            f"cannot read the farm login from {path}: {exc}",
            hint="run `sudo octobrixctl apply`, which writes it, then `sudo systemctl restart octobrix-web`",
        ) from None


# -- the metrics token: Prometheus's bearer token (`octobrixctl credentials` shows it) -----------


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_file_text(token: str) -> str:
    """The web service's copy of the token: only its digest, like the farm login's hash."""
    return json.dumps({"sha256": token_digest(token)}) + "\n"


def read_token_digest(path: Path) -> str | None:
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise OctobrixError(
            f"cannot read the metrics token's digest from {path}: {exc}",
            hint="run `sudo octobrixctl apply`, which writes it, then `sudo systemctl restart octobrix-web`",
        ) from None
    digest = body.get("sha256") if isinstance(body, dict) else None
    return digest if isinstance(digest, str) and digest else None


def bearer_ok(digest: str | None, authorization: str | None) -> bool:
    if digest is None or not authorization or not authorization.startswith("Bearer "):
        return False
    return hmac.compare_digest(token_digest(authorization.removeprefix("Bearer ").strip()), digest)
