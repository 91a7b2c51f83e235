"""What the web service knows, handed to every request handler and to overview.farm()."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from octobrixd.config.model import Config
from octobrixd.errors import OctobrixError
from octobrixd.frontdoor.auth import FarmLogin
from octobrixd.frontdoor.sessions import SessionStore
from octobrixd.system.paths import Layout
from octobrixd.web.door import PrinterLogin, PrinterSessions, Tickets, WebcamAnswers
from octobrixd.web.limits import LoginLimiter

# Names under which systemd's LoadCredential= hands the service its secrets (octobrix-web.service).
LOGIN_CREDENTIAL = "farm-login"
KEYS_CREDENTIAL = "web-keys"
METRICS_CREDENTIAL = "metrics-token"
PRINTER_LOGIN_CREDENTIAL = "printer-login"


@dataclass(frozen=True)
class WebContext:
    config: Config
    login: FarmLogin
    # printer name -> API key of that OctoPrint's read-only "octobrix-web" user (never an admin key).
    readonly_keys: Mapping[str, str] = field(default_factory=dict)
    layout: Layout = field(default_factory=Layout)
    # SHA-256 of the metrics token (Prometheus's bearer token); None: /metrics only with the farm login.
    metrics_token_sha256: str | None = None
    # The live farm-login sessions (logout ends one) and the wrong-password limit per client address.
    sessions: SessionStore = field(default_factory=SessionStore)
    limiter: LoginLimiter = field(default_factory=LoginLimiter)
    # The farm user's account in every OctoPrint (single sign-on); None: each OctoPrint's own login.
    printer_login: PrinterLogin | None = None
    tickets: Tickets = field(default_factory=Tickets)
    printer_sessions: PrinterSessions = field(default_factory=PrinterSessions)
    webcam_answers: WebcamAnswers = field(default_factory=WebcamAnswers)


def read_keys(path: Path) -> dict[str, str]:
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise OctobrixError(
            f"cannot read the overview's read-only keys from {path}: {exc}",
            hint="run `sudo octobrixctl apply`, which writes them, then `sudo systemctl restart octobrix-web`",
        ) from None
    if not isinstance(body, dict) or not all(isinstance(v, str) for v in body.values()):
        raise OctobrixError(f"{path} does not map printer names to keys", hint="run `sudo octobrixctl apply`")
    return {str(k): v for k, v in body.items()}
