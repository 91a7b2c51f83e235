"""Each farm manager's own application key on each OctoPrint, made and revoked through that
OctoPrint's API with octobrixd's admin key (OctoPrint's bundled Application Keys plugin).

A key of its own per tool: revoking it leaves octobrixd's key (app "octobrix"), the front door's
and the overview's as they are. OctoPrint keeps the key; octobrix stores no copy: asked again,
OctoPrint answers with the same key, so a second export hands out what the first did.
"""

from __future__ import annotations

from octobrixd.export.formats import APP_IDS, Tool
from octobrixd.instances.api import ApiError, request

APPKEYS = "/api/plugin/appkeys"
# Making or revoking a key writes OctoPrint's key file while it may be serving a farm manager's live
# connection: on a busy small computer that takes seconds, more than a status question's 2 s.
KEY_TIMEOUT = 15.0


def tool_key(port: int, admin_key: str, tool: Tool) -> str:
    """The tool's key on the OctoPrint at port, made now if it has none (it belongs to the admin)."""
    body = request(port, admin_key, APPKEYS, {"command": "generate", "app": APP_IDS[tool]}, timeout=KEY_TIMEOUT)
    key = body.get("api_key") if isinstance(body, dict) else None
    if not isinstance(key, str) or not key:
        raise ApiError(f"no key in the answer from {APPKEYS}")
    return key


def revoke_tool_key(port: int, admin_key: str, tool: Tool) -> bool:
    """Remove the tool's key; False if it had none."""
    try:
        request(port, admin_key, APPKEYS, {"command": "revoke", "app": APP_IDS[tool]}, timeout=KEY_TIMEOUT)
    except ApiError as error:
        # OctoPrint answers 400 ("Need either app or key") when the admin has no key of that app.
        if str(error).startswith("HTTP 400"):
            return False
        raise
    return True
