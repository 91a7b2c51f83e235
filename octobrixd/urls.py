"""The addresses other computers reach the farm by, as status prints them and export hands them out.

With the front door on, that is the front door (`http://HOST[:PORT]/NAME/`): one port, the farm
login, and it works through a firewall that lets only that port in. Without it, each OctoPrint's
and each stream's own port on the configured `public_host`.
"""

from __future__ import annotations

from octobrixd.cameras import PATHS, stream_url, url_host
from octobrixd.config import Config


def farm_base(config: Config, host: str) -> str:
    """The front door's root URL (its port left out when it is HTTP's own)."""
    door = "" if config.frontdoor.port == 80 else f":{config.frontdoor.port}"
    return f"http://{url_host(host)}{door}/"


def printer_url(config: Config, name: str, host: str, port: int, *, through_door: bool = True) -> str:
    """Printer NAME's OctoPrint. through_door=False for an instance the front door does not lead to
    (yet, or any more): removed from the config, or still on the port it started with."""
    if config.frontdoor.enabled and through_door and name in config.printers:
        return f"{farm_base(config, host)}{name}/"
    return f"http://{url_host(host)}:{port}/"


def camera_url(config: Config, name: str, host: str, *, through_door: bool = True) -> str:
    """Camera NAME's live stream."""
    if config.frontdoor.enabled and through_door:
        # stream_url's path on the front door, with the host that status and export name.
        return farm_base(config, host) + stream_url(config, name).removeprefix("/")
    stream, _ = PATHS[config.streamer_of(name)]
    return f"http://{url_host(host)}:{config.cameras[name].port}{stream}"
