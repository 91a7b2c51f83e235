"""The front door's nginx config: Config in, text out, like the udev rules and the units.

nginx rather than haproxy: `auth_request` asks the web service about the farm login before
each request reaches an OctoPrint, request buffering can be turned off per location (a 500 MB
upload streams through instead of being spooled to disk first), and `nginx -t` checks a
config before a reload that keeps open connections (websockets, uploads) alive.

Security: the OctoPrint behind /NAME/ gets its own admin key in X-Api-Key only when the farm
login cookie checked out (the key comes from a root-only file this config includes, never from
the client); a client without that cookie gets through only with credentials of its own (a
slicer's API key), which OctoPrint judges. Identity headers a client sends are dropped.
"""

from __future__ import annotations

import ipaddress
from pathlib import PurePosixPath

from octobrixd.cameras import streams as cameras
from octobrixd.config.model import Config
from octobrixd.render.common import header
from octobrixd.system import paths
from octobrixd.urls import AUTH_CAMERA, AUTH_PREFIX, AUTH_PRINTER, frontdoor_prefix

NGINX_SITE = paths.NGINX_SITE
# One file per printer: `farm "KEY";`, the map entry that gives a farm-logged-in request that
# instance's key. Root-only, written by apply next to the other secrets (instances/credentials.py).
KEY_MAP_DIR = paths.STATE_DIR / ".secrets" / "frontdoor"
WEB_SOCKET = "/run/octobrix-web/web.sock"
# What the web service answers in X-Octobrix-Login: "farm" (the farm login) or "client" (own key).
FARM = "farm"
# Identity headers OctoPrint or a plugin might trust; a client must never choose them.
IDENTITY_HEADERS = ("X-Remote-User", "Remote-User", "X-Forwarded-User", "X-Auth-Request-User", "X-Octobrix-Login")


def key_map_path(name: str) -> PurePosixPath:
    return KEY_MAP_DIR / f"{name}.map"


def key_map_entry(api_key: str) -> str:
    return f'{FARM} "{api_key}";\n'


def _listen_lines(config: Config) -> str:
    port = config.frontdoor.port
    address = ipaddress.ip_address(config.octobrix.listen)
    if address.is_unspecified:
        # nginx binds [::] with IPV6_V6ONLY, so IPv4 needs its own socket: dual-stack is two lines.
        return f"    listen 0.0.0.0:{port} default_server;\n    listen [::]:{port} default_server;\n"
    host = f"[{address}]" if address.version == 6 else str(address)
    return f"    listen {host}:{port} default_server;\n"


def _common_proxy_headers(script_name: str | None) -> str:
    lines = [
        "proxy_http_version 1.1;",
        "proxy_set_header Host $http_host;",
        "proxy_set_header X-Real-IP $remote_addr;",
        # Overwritten, not appended to: a client's own X-Forwarded-For is not passed on.
        "proxy_set_header X-Forwarded-For $remote_addr;",
        "proxy_set_header X-Forwarded-Host $http_host;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        "proxy_set_header X-Scheme $scheme;",
        *(f'proxy_set_header {h} "";' for h in IDENTITY_HEADERS),
    ]
    if script_name is not None:
        lines.append(f"proxy_set_header X-Script-Name {script_name};")
    return "".join(f"        {line}\n" for line in lines)


def _guarded(auth_path: str) -> str:
    return (
        f"        auth_request {auth_path};\n"
        "        auth_request_set $octobrix_login $upstream_http_x_octobrix_login;\n"
        "        error_page 401 = @octobrix_refused;\n"
    )


def _printer_location(config: Config, name: str, upstream_host: str) -> str:
    port = config.printers[name].port
    return (
        f"    location = /{name} {{\n        return 301 /{name}/;\n    }}\n"
        f"    location /{name}/ {{\n"
        + _guarded(AUTH_PRINTER)
        + f"        proxy_pass http://{upstream_host}:{port}/;\n"
        + _common_proxy_headers(f"/{name}")
        + f"        proxy_set_header X-Api-Key $octobrix_key_{name.replace('-', '_')};\n"
        # SockJS's websocket, and uploads of any size streamed straight through.
        "        proxy_set_header Upgrade $http_upgrade;\n"
        "        proxy_set_header Connection $octobrix_connection;\n"
        "        client_max_body_size 0;\n"
        "        proxy_request_buffering off;\n"
        "        proxy_buffering off;\n"
        "        proxy_read_timeout 1d;\n"
        "        proxy_send_timeout 1d;\n"
        "    }\n"
    )


def _camera_location(config: Config, name: str, upstream_host: str) -> str:
    prefix = frontdoor_prefix(name)
    return (
        f"    location {prefix} {{\n"
        + _guarded(AUTH_CAMERA)
        + f"        proxy_pass http://{upstream_host}:{config.cameras[name].port}/;\n"
        + _common_proxy_headers(None)
        # An MJPEG stream never ends: pass each frame on as it comes.
        + "        proxy_buffering off;\n"
        "        proxy_read_timeout 1d;\n"
        "    }\n"
    )


def _key_maps(config: Config) -> str:
    out = []
    for name in sorted(config.printers):
        variable = name.replace("-", "_")
        out.append(
            f"map $octobrix_login $octobrix_key_{variable} {{\n"
            # Not logged in to the farm: the client's own key (or none) goes on, unchanged.
            "    default $http_x_api_key;\n"
            # The glob makes a printer whose key is not made yet a printer without one, not an error.
            f"    include /{key_map_path(name)}*;\n"
            "}\n"
        )
    return "".join(out)


def render_frontdoor(config: Config) -> str:
    upstream_host = cameras.local_host(config.octobrix.listen)
    web_headers = _common_proxy_headers(None)
    return (
        header(config.source)
        + "# The farm at one address: every printer's OctoPrint at /NAME/, cameras at /cam/NAME/, the farm\n"
        "# login and overview at /, served by octobrix-web.service. Secrets live in the included files.\n\n"
        'map $http_upgrade $octobrix_connection {\n    default upgrade;\n    "" "";\n}\n'
        + _key_maps(config)
        + f"upstream octobrix_web {{\n    server unix:{WEB_SOCKET};\n}}\n\n"
        "server {\n" + _listen_lines(config) + "    server_name _;\n"
        "    # The farm login's checks, one per kind of guarded location (the subrequest's own path, never\n"
        "    # the client's, says which): the client's cookie and headers go along, the body does not.\n"
        f"    location ^~ {AUTH_PREFIX} {{\n"
        "        internal;\n"
        "        proxy_pass http://octobrix_web;\n"
        "        proxy_pass_request_body off;\n"
        # Checked against the printer's limit (none), not a default 1 MB: the body never comes here.
        "        client_max_body_size 0;\n"
        '        proxy_set_header Content-Length "";\n'
        # The query string nginx passes on (a slicer's ?apikey=), as it passes it; never the raw URI.
        "        proxy_set_header X-Original-Args $args;\n"
        "        proxy_set_header X-Original-Method $request_method;\n" + web_headers + "    }\n"
        "    # Not logged in: the web service sends a browser to the login page, an API client a 401.\n"
        "    location @octobrix_refused {\n"
        "        proxy_pass http://octobrix_web;\n"
        "        proxy_set_header X-Octobrix-Refused 1;\n"
        "        proxy_pass_request_body off;\n"
        '        proxy_set_header Content-Length "";\n'
        "        client_max_body_size 0;\n" + web_headers + "    }\n"
        "    location / {\n"
        # With a URI part: the web service gets the path nginx normalised (//, %XX, .. resolved),
        # so it routes and judges the very path nginx routed, not the raw one.
        "        proxy_pass http://octobrix_web/;\n" + web_headers + '        proxy_set_header X-Octobrix-Refused "";\n'
        "        client_max_body_size 1m;\n"
        "    }\n"
        + "".join(_printer_location(config, name, upstream_host) for name in sorted(config.printers))
        + "".join(_camera_location(config, name, upstream_host) for name in sorted(config.cameras))
        + "}\n"
    )
