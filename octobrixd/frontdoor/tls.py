"""The front door's certificate for HTTPS (`[frontdoor] https = true`): the user's own, or one
octobrix makes with openssl and keeps in root's secrets, renewed a month before it expires.

A certificate made here is self-signed: a browser warns before it trusts it. `octobrixctl
credentials` shows its SHA-256 fingerprint, which the browser's certificate viewer shows too, so a
maker can tell it is the farm's own before accepting it. It names what a browser may use for the
farm: `public_host`, the machine's name (and NAME.local), localhost and the loopback addresses.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from octobrixd.config.model import Config
from octobrixd.errors import CommandError, CommandNotFoundError, OctobrixError
from octobrixd.system import paths
from octobrixd.system.command import run
from octobrixd.system.paths import Layout

log = logging.getLogger(__name__)

VALID_DAYS = 397
RENEW_SECONDS = 30 * 24 * 3600


@dataclass(frozen=True)
class Certificate:
    path: Path
    fingerprint: str  # SHA-256 of the DER form, as browsers show it: AB:CD:...
    expires: datetime


def fingerprint_of(pem: str) -> str:
    digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def certificate_path(config: Config, layout: Layout) -> Path:
    given = config.frontdoor.certificate
    return layout.path(given.lstrip("/")) if given is not None else layout.path(paths.TLS_CERTIFICATE)


def _expiry(path: Path) -> datetime:
    said = run(["openssl", "x509", "-noout", "-enddate", "-in", str(path)]).stdout.strip()
    return datetime.strptime(said.removeprefix("notAfter="), "%b %d %H:%M:%S %Y %Z").replace(tzinfo=UTC)


def read_certificate(config: Config, layout: Layout) -> Certificate | None:
    path = certificate_path(config, layout)
    try:
        pem = path.read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    except PermissionError:
        raise OctobrixError(
            f"the front door's certificate is readable by root only ({path})", hint="run it as root (sudo)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise OctobrixError(f"cannot read the front door's certificate {path}: {exc}", hint="see `ls -l`") from None
    try:
        return Certificate(path, fingerprint_of(pem), _expiry(path))
    except (ValueError, CommandError) as exc:
        raise OctobrixError(
            f"{path} is not a PEM certificate: {exc}",
            hint="frontdoor.certificate: name your certificate's PEM file (the full chain)",
        ) from None


def _names(config: Config) -> list[str]:
    machine = socket.gethostname()
    hosts = [config.octobrix.public_host or machine, machine, f"{machine}.local", "localhost"]
    entries = []
    for host in dict.fromkeys(h for h in hosts if h):
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
            entries.append(f"IP:{host}")
        except OSError:
            entries.append(f"DNS:{host}")
    return [*entries, "IP:127.0.0.1", "IP:::1"]


def _make(config: Config, layout: Layout) -> None:
    directory = layout.path(paths.TLS_DIR)
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    certificate, key = layout.path(paths.TLS_CERTIFICATE), layout.path(paths.TLS_KEY)
    new_cert, new_key = certificate.with_suffix(".new.crt"), key.with_suffix(".new.key")
    try:
        run(
            [
                "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-days", str(VALID_DAYS), "-subj", "/O=octobrix/CN=octobrix farm",
                "-addext", "subjectAltName=" + ",".join(_names(config)),
                "-keyout", str(new_key), "-out", str(new_cert),
            ]
        )  # fmt: skip
    except CommandNotFoundError:
        raise OctobrixError(
            "openssl is not installed, and the front door's HTTPS needs it to make its certificate",
            hint="sudo apt install openssl, or name your own: [frontdoor] certificate and certificate_key",
        ) from None
    new_key.chmod(0o600)
    new_cert.chmod(0o600)
    # The key first: nginx never finds a new certificate beside an old key.
    new_key.replace(key)
    new_cert.replace(certificate)


def ensure_certificate(config: Config, layout: Layout, now: float | None = None) -> bool:
    """With HTTPS on: make the certificate if octobrix is to make it and there is none, or renew it
    within a month of its end. True when it changed (nginx must reload). The user's own is only
    checked to be there."""
    if not (config.frontdoor.enabled and config.frontdoor.https):
        return False
    current = read_certificate(config, layout)
    if config.frontdoor.certificate is not None:
        if current is None:
            raise OctobrixError(
                f"frontdoor.certificate: {config.frontdoor.certificate} does not exist",
                hint="name your certificate's PEM file, or remove certificate and certificate_key to let octobrix "
                "make one",
            )
        return False
    left = None if current is None else current.expires.timestamp() - (now if now is not None else time.time())
    if left is not None and left > RENEW_SECONDS:
        return False
    _make(config, layout)
    made = read_certificate(config, layout)
    log.info("made the front door's certificate (SHA-256 %s)", made.fingerprint if made else "?")
    return True
