"""The addresses of the farm: where each stream's program serves it, and the URLs other computers
reach the farm by, as status prints them and export hands them out.

With the front door on, that is the front door (`http://HOST[:PORT]/NAME/`): one port, the farm
login, and it works through a firewall that lets only that port in. Without it, each OctoPrint's
and each stream's own port on the configured `public_host`. Imports nothing heavy: status uses it
on its fast path, with the applied config's plain view instead of the validated models.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from octobrixd.config.model import Config
    from octobrixd.config.view import FarmView

HTTP_PORT = 80
# Each streamer program's stream and snapshot paths (keys: the config's Streamer values).
PATHS = {
    "ustreamer": ("/stream", "/snapshot"),
    "mjpg-streamer": ("/?action=stream", "/?action=snapshot"),
}


def url_host(host: str) -> str:
    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        return host


def public_host_of(config: Config | FarmView) -> str:
    """The name other computers reach this one by: `[octobrix] public_host`, which load_config,
    last_applied and the applied view have filled in from the machine's name when it is not set
    (config.with_machine_defaults)."""
    host = config.octobrix.public_host
    if host is None:
        # Only a config parsed from text alone has none: the caller skipped with_machine_defaults.
        raise ValueError(f"public_host of {config.source} was never filled in (config.with_machine_defaults)")
    return host


CAMERAS_PREFIX = "/cam/"  # no printer may be named "cam" (config.FRONTDOOR_RESERVED)
# nginx's auth_request endpoints on the web service (internal: no client reaches them), one per kind
# of guarded location. Which one nginx asked says what the request is for: the check never reads
# the client's path, so no spelling of a path (//, %63, ..) can pass for another kind.
AUTH_PREFIX = "/_octobrix/"
AUTH_PRINTER = "/_octobrix/auth/printer"
AUTH_CAMERA = "/_octobrix/auth/camera"
# On a printer's origin: where the farm page's ticket becomes that OctoPrint's own session (single
# sign-on); on the farm's origin, /open/NAME makes the ticket and sends the browser there.
SSO_PATH = "/_octobrix/sso"
OPEN_PREFIX = "/open/"


def frontdoor_prefix(name: str) -> str:
    """Where the front door serves camera NAME's stream and snapshot."""
    return f"{CAMERAS_PREFIX}{name}/"


HTTPS_PORT = 443


def origin(scheme: str, host: str, port: int) -> str:
    """scheme://HOST[:PORT], the port left out when it is the scheme's own."""
    own = (scheme == "http" and port == HTTP_PORT) or (scheme == "https" and port == HTTPS_PORT)
    return f"{scheme}://{url_host(host)}{'' if own else f':{port}'}"


def door_scheme(config: Config | FarmView) -> str:
    return "https" if config.frontdoor.https else "http"


def farm_base(config: Config | FarmView, host: str) -> str:
    """The front door's root URL (its port left out when it is the scheme's own)."""
    port = config.frontdoor.https_port if config.frontdoor.https else config.frontdoor.port
    return origin(door_scheme(config), host, port) + "/"


def printer_url(config: Config | FarmView, name: str, host: str, port: int, *, through_door: bool = True) -> str:
    """Printer NAME's OctoPrint: through the front door, its own origin there (its door port).
    through_door=False for an instance the front door does not lead to (yet, or any more): removed
    from the config, or still on the port it started with."""
    if config.frontdoor.enabled and through_door and name in config.printers:
        return origin(door_scheme(config), host, config.door_port(name)) + "/"
    return f"http://{url_host(host)}:{port}/"


def browser_addresses(config: Config | FarmView, host: str) -> list[tuple[str, str]]:
    """Where a browser opens the farm, each address with what it leads to: the front door, or with
    the front door off (no farm page then) each printer's OctoPrint on its own port."""
    if config.frontdoor.enabled:
        base = farm_base(config, host)
        return [(base, "the farm: its page, every printer one click away")]
    return [(printer_url(config, name, host, config.printers[name].port), name) for name in sorted(config.printers)]


def api_base(url: str) -> str:
    """The base of the REST API of the OctoPrint at url (printer_url's): where a slicer or a script
    sends its requests, with an API key, through the front door as on the OctoPrint's own port."""
    return f"{url}api/"


def camera_url(config: Config | FarmView, name: str, host: str, *, through_door: bool = True) -> str:
    """Camera NAME's live stream."""
    stream, _ = PATHS[str(config.streamer_of(name))]
    if config.frontdoor.enabled and through_door:
        return farm_base(config, host) + frontdoor_prefix(name).removeprefix("/") + stream.removeprefix("/")
    return f"http://{url_host(host)}:{config.cameras[name].port}{stream}"
