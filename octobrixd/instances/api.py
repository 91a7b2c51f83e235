"""Talking to an instance's OctoPrint over its REST API on loopback, with octobrixd's app key.

Everything here is careful with the printer: connecting is only ever done to a printer that is
not connected, and "busy" errs on the side of a print being in progress.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from enum import StrEnum
from http import HTTPStatus
from typing import Any

from octobrixd.instances.versions import Generation
from octobrixd.system import loopback_http

log = logging.getLogger(__name__)

TIMEOUT = 2.0
# Asked only before a restart: an OctoPrint slow to answer (a busy small computer) gets longer.
BUSY_TIMEOUT = 10.0
# OctoPrint's printer flags that mean a job is running or being wound down.
API_VERSION_2 = "2.0.0"
BUSY_FLAGS = ("printing", "paused", "pausing", "cancelling", "finishing", "resuming")


class Failure(StrEnum):
    """What went wrong, for the callers that act on it (not by reading the message)."""

    HTTP = "http"  # it answered with an HTTP error: status says which
    STARTING = "starting"  # its placeholder server answered while the real one starts
    NOT_ANSWERING = "not answering"  # nothing listens, or no answer in time (timed_out)
    BAD_ANSWER = "bad answer"  # an answer that is not what the API promises


class ApiError(Exception):
    """OctoPrint did not answer, or answered with an error; str() says which. timed_out: it took
    the connection but gave no answer in time, so it is running, maybe busy. summary: str()
    without the low-level detail in parentheses ("not answering")."""

    def __init__(
        self,
        summary: str,
        *,
        failure: Failure = Failure.BAD_ANSWER,
        status: int | None = None,
        detail: str | None = None,
        timed_out: bool = False,
    ) -> None:
        super().__init__(summary if detail is None else f"{summary} ({detail})")
        self.summary = summary
        self.failure = failure
        self.status = status
        self.timed_out = timed_out

    @property
    def conflict(self) -> bool:
        """HTTP 409: OctoPrint refuses in its current state (no printer connected, a user that exists)."""
        return self.status == HTTPStatus.CONFLICT


@dataclass(frozen=True)
class JobState:
    state: str
    progress: float | None


def request(
    port: int,
    api_key: str,
    path: str,
    body: dict[str, Any] | None = None,
    *,
    timeout: float = TIMEOUT,
    api_version: str | None = None,
    method: str | None = None,
) -> Any:
    """api_version: the X-OctoPrint-Api-Version to ask for (OctoPrint 2.0 answers the 1.x form
    of a changed endpoint to a request without one); method: when not POST with a body, GET without."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"X-Api-Key": api_key, "Content-Type": "application/json"}
    if api_version is not None:
        headers["X-OctoPrint-Api-Version"] = api_version
    try:
        answer = loopback_http.exchange(
            port,
            path,
            method=method or ("POST" if data is not None else "GET"),
            headers=headers,
            body=data,
            timeout=timeout,
        )
    except loopback_http.MalformedResponse:
        # OctoPrint's own placeholder server answers (badly) while the real one starts.
        raise ApiError("starting", failure=Failure.STARTING) from None
    except OSError as error:
        raise ApiError(
            "not answering", failure=Failure.NOT_ANSWERING, detail=str(error), timed_out=isinstance(error, TimeoutError)
        ) from None
    if not answer.ok:
        raise ApiError(f"HTTP {answer.status} from {path}", failure=Failure.HTTP, status=answer.status)
    try:
        return json.loads(answer.body) if answer.body.strip() else None
    except ValueError:
        raise ApiError(f"not JSON from {path}") from None


def job_state(port: int, api_key: str) -> JobState:
    body = request(port, api_key, "/api/job")
    state = str(body.get("state", "unknown")) if isinstance(body, dict) else "unknown"
    completion = (body.get("progress") or {}).get("completion") if isinstance(body, dict) else None
    progress = round(float(completion), 1) if isinstance(completion, int | float) else None
    return JobState(state, progress)


def is_busy(port: int, api_key: str) -> bool:
    """True if a print is running or winding down, or if OctoPrint cannot say for sure."""
    try:
        body = request(port, api_key, "/api/printer?exclude=temperature,sd", timeout=BUSY_TIMEOUT)
    except ApiError as error:
        if error.timed_out:
            # Running but too busy to answer: it may well be printing.
            return True
        # 409: not connected to a printer, so nothing to interrupt. Not answering: the instance
        # is down or starting, so a restart cannot interrupt anything it does.
        return not (error.conflict or error.failure in (Failure.NOT_ANSWERING, Failure.STARTING))
    flags = ((body or {}).get("state") or {}).get("flags") or {}
    return any(bool(flags.get(flag)) for flag in BUSY_FLAGS)


def connection_state(port: int, api_key: str) -> str:
    current = (request(port, api_key, "/api/connection") or {}).get("current") or {}
    return str(current.get("state") or "")


def is_disconnected(state: str) -> bool:
    """True for the states in which asking OctoPrint to connect cannot disturb a printer."""
    return state == "" or state.startswith(("Closed", "Offline", "Error"))


def needs_reset(state: str) -> bool:
    """True for the states in which OctoPrint ignores a connect until told to disconnect: it keeps
    its failed connection object around after an "Error", and after failing to open a port that
    vanished it stays "Opening serial connection" for good (OctoPrint 1.11)."""
    return state.startswith(("Error", "Opening serial connection"))


def disconnect(port: int, api_key: str) -> None:
    request(port, api_key, "/api/connection", {"command": "disconnect"})


def connect(port: int, api_key: str, device: str, baudrate: int | None, generation: Generation = Generation.V1) -> None:
    """Ask OctoPrint to connect to device, in the connection API of its generation: 2.0 names the
    connector and passes its parameters as such (its 1.x form is kept only for old clients)."""
    if generation is Generation.V2:
        parameters: dict[str, Any] = {"port": device}
        if baudrate:
            parameters["baudrate"] = baudrate
        body = {"command": "connect", "connector": "serial", "parameters": parameters}
        request(port, api_key, "/api/connection", body, api_version=API_VERSION_2)
        return
    command: dict[str, Any] = {"command": "connect", "port": device, "autoconnect": True}
    if baudrate:
        command["baudrate"] = baudrate
    request(port, api_key, "/api/connection", command)


def add_user(port: int, api_key: str, user: str, password: str, permissions: tuple[str, ...]) -> None:
    """Make a user in a running OctoPrint, which saves it itself: no group, only these permissions.

    A user of that name that is there already (made by an apply that did not get to keep its key)
    gets this password.
    """
    # Without "groups", OctoPrint puts a new user in its default groups, with all their rights.
    body = {"name": user, "password": password, "active": True, "groups": [], "permissions": list(permissions)}
    try:
        request(port, api_key, "/api/access/users", body, timeout=BUSY_TIMEOUT)
    except ApiError as error:
        if not error.conflict:
            raise
        request(
            port,
            api_key,
            f"/api/access/users/{user}/password",
            {"password": password},
            timeout=BUSY_TIMEOUT,
            method="PUT",
        )


def add_admin(port: int, api_key: str, user: str, password: str) -> None:
    """Make an admin in a running OctoPrint (its admins and users groups); one of that name that is
    there already is left as it is (409)."""
    body = {"name": user, "password": password, "active": True, "groups": ["admins", "users"]}
    try:
        request(port, api_key, "/api/access/users", body, timeout=BUSY_TIMEOUT)
    except ApiError as error:
        if not error.conflict:
            raise


def generate_app_key(port: int, api_key: str, user: str, app: str) -> str:
    """A new application key of user for app, made by the running OctoPrint (its appkeys plugin)."""
    body = request(port, api_key, "/api/plugin/appkeys", {"command": "generate", "app": app, "user": user})
    key = body.get("api_key") if isinstance(body, dict) else None
    if not isinstance(key, str) or not key:
        raise ApiError("no key in the answer of /api/plugin/appkeys")
    return key
