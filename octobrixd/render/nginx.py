"""The front door's nginx config: Config in, text out, like the udev rules and the units.

nginx rather than haproxy: `auth_request` asks the web service about the farm login before
each request reaches an OctoPrint, request buffering can be turned off per location (a 500 MB
upload streams through instead of being spooled to disk first), and `nginx -t` checks a
config before a reload that keeps open connections (websockets, uploads) alive.

Two kinds of server, each its own browser origin:
- the farm, on `[frontdoor] port`: the farm login, the farm page and its APIs, the cameras at
  /cam/NAME/; an old link to /NAME/ is sent on to that printer's own origin;
- one per printer, on its door port (`config.door_port`): that OctoPrint at the root, as on its own
  port. The farm login gates it (or a client's own key, which OctoPrint judges); OctoPrint logs its
  users in itself: nginx injects no identity. Only that OctoPrint's own cookies reach it (a browser
  sends every cookie of the host to every port: the farm's and the other printers' must not reach a
  printer's code). The app-keys workflow and the push socket pass without the farm login, as
  OctoPrint authenticates them itself. The printer's camera is at /cam/NAME/ there too.
Identity headers a client sends are dropped everywhere.
"""

from __future__ import annotations

import ipaddress

from octobrixd.cameras import streams as cameras
from octobrixd.config.model import Config
from octobrixd.render.common import header
from octobrixd.system import paths
from octobrixd.urls import AUTH_CAMERA, AUTH_PREFIX, AUTH_PRINTER, SSO_PATH, frontdoor_prefix

NGINX_SITE = paths.NGINX_SITE
WEB_SOCKET = "/run/octobrix-web/web.sock"
# Set by nginx on a printer's server (never by a client: it overwrites it): which printer's origin
# the request came to.
PRINTER_HEADER = "X-Octobrix-Printer"
# Set by nginx when it refused a request for want of a login.
REFUSED_HEADER = "X-Octobrix-Refused"
# Identity headers OctoPrint or a plugin might trust; a client must never choose them.
IDENTITY_HEADERS = (
    "X-Remote-User",
    "Remote-User",
    "X-Forwarded-User",
    "X-Auth-Request-User",
    "X-Octobrix-Login",
    PRINTER_HEADER,
)
# OctoPrint's own cookies, each named NAME_P<port> by the port the browser reached it on
# (octoprint.server.util.flask.get_cookie_suffix): the session, remember-me, CSRF and logout marks.
OCTOPRINT_COOKIES = ("session", "remember_token", "csrf_token", "active_logout")


def _listen_lines(config: Config, port: int, *, default: bool, tls: bool = False) -> str:
    address = ipaddress.ip_address(config.octobrix.listen)
    tail = (" ssl" if tls else "") + (" default_server;" if default else ";")
    if address.is_unspecified:
        # nginx binds [::] with IPV6_V6ONLY, so IPv4 needs its own socket: dual-stack is two lines.
        return f"    listen 0.0.0.0:{port}{tail}\n    listen [::]:{port}{tail}\n"
    host = f"[{address}]" if address.version == 6 else str(address)
    return f"    listen {host}:{port}{tail}\n"


def _proxy_headers(*, forwarded_host: str = "$http_host", cookie: str | None = None, printer: str = "") -> str:
    lines = [
        "proxy_http_version 1.1;",
        "proxy_set_header Host $http_host;",
        "proxy_set_header X-Real-IP $remote_addr;",
        # Overwritten, not appended to: a client's own X-Forwarded-For is not passed on.
        "proxy_set_header X-Forwarded-For $remote_addr;",
        f"proxy_set_header X-Forwarded-Host {forwarded_host};",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        "proxy_set_header X-Scheme $scheme;",
        'proxy_set_header X-Script-Name "";',
        *(f'proxy_set_header {h} "";' for h in IDENTITY_HEADERS if h != PRINTER_HEADER),
        f'proxy_set_header {PRINTER_HEADER} "{printer}";',
    ]
    if cookie is not None:
        lines.append(f'proxy_set_header Cookie "{cookie}";')
    return "".join(f"        {line}\n" for line in lines)


def _cookie_variable(door: int, index: int) -> str:
    return f"$octobrix_p{door}_c{index}"


def _cookie_maps(door: int) -> str:
    """One map per OctoPrint cookie of the printer on door: `NAME_P<door>=VALUE; ` if the browser
    sent it, else nothing. Together, the Cookie header that printer gets."""
    out = []
    for index, cookie in enumerate(OCTOPRINT_COOKIES):
        name = f"{cookie}_P{door}"
        out.append(
            f"map $cookie_{name} {_cookie_variable(door, index)} {{\n"
            f'    "" "";\n    default "{name}=$cookie_{name}; ";\n}}\n'
        )
    return "".join(out)


def _cookie_header(door: int) -> str:
    return "".join(_cookie_variable(door, index) for index in range(len(OCTOPRINT_COOKIES)))


def _guarded(auth_path: str) -> str:
    return f"        auth_request {auth_path};\n        error_page 401 = @octobrix_refused;\n"


def _web_locations(printer: str) -> str:
    """The web service's part of a server: the login checks (internal), the refusal, and on a
    printer's server its single sign-on step."""
    web_headers = _proxy_headers(printer=printer)
    bodyless = '        proxy_pass_request_body off;\n        proxy_set_header Content-Length "";\n'
    out = (
        "    # The farm login's checks, one per kind of guarded location (the subrequest's own path, never\n"
        "    # the client's, says which): the client's cookie and headers go along, the body does not.\n"
        f"    location ^~ {AUTH_PREFIX} {{\n"
        "        internal;\n"
        "        proxy_pass http://octobrix_web;\n" + bodyless +
        # Checked against the printer's limit (none), not a default 1 MB: the body never comes here.
        "        client_max_body_size 0;\n"
        # The query string nginx passes on (a slicer's ?apikey=), as it passes it; never the raw URI.
        "        proxy_set_header X-Original-Args $args;\n"
        "        proxy_set_header X-Original-Method $request_method;\n" + web_headers + "    }\n"
        "    # Not logged in: the web service sends a browser to the farm's login page, an API client a 401.\n"
        "    location @octobrix_refused {\n"
        "        proxy_pass http://octobrix_web;\n"
        f"        proxy_set_header {REFUSED_HEADER} 1;\n"
        + bodyless
        + "        client_max_body_size 0;\n"
        + web_headers
        + "    }\n"
    )
    if printer:
        out += (
            "    # Single sign-on: the farm page's ticket turns into this OctoPrint's own session.\n"
            f"    location = {SSO_PATH} {{\n"
            "        proxy_pass http://octobrix_web;\n"
            + bodyless
            + web_headers
            + f'        proxy_set_header {REFUSED_HEADER} "";\n'
            "    }\n"
        )
    return out


def _camera_location(config: Config, camera: str, printer: str) -> str:
    upstream_host = cameras.local_host(config.streams_listen())
    prefix = frontdoor_prefix(camera)
    return (
        f"    location {prefix} {{\n"
        + _guarded(AUTH_CAMERA)
        + f"        proxy_pass http://{upstream_host}:{config.cameras[camera].port}/;\n"
        + _proxy_headers(cookie="", printer=printer)
        # An MJPEG stream never ends: pass each frame on as it comes.
        + "        proxy_buffering off;\n"
        "        proxy_read_timeout 1d;\n"
        "    }\n"
    )


def _octoprint_proxy(upstream: str, door: int, uri: str) -> str:
    return (
        f"        proxy_pass {upstream}{uri};\n"
        + _proxy_headers(forwarded_host=f"$host:{door}", cookie=_cookie_header(door))
        # SockJS's websocket, and uploads of any size streamed straight through.
        + "        proxy_set_header Upgrade $http_upgrade;\n"
        "        proxy_set_header Connection $octobrix_connection;\n"
        "        client_max_body_size 0;\n"
        "        proxy_request_buffering off;\n"
        "        proxy_buffering off;\n"
        "        proxy_read_timeout 1d;\n"
        "        proxy_send_timeout 1d;\n"
    )


# Paths of OctoPrint that authenticate a client themselves before the farm login could: the
# app-keys workflow (Home Assistant, phone apps and slicers ask for a key there) and the push socket
# (its client logs in after the handshake). With their URI given, nginx passes its normalised path.
UNGATED = ("/plugin/appkeys/", "/sockjs/")


def _tls_lines(config: Config) -> str:
    """The certificate of an HTTPS server: the user's, or the one octobrix makes (frontdoor/tls.py)."""
    if not config.frontdoor.https:
        return ""
    certificate = config.frontdoor.certificate or f"/{paths.TLS_CERTIFICATE}"
    key = config.frontdoor.certificate_key or f"/{paths.TLS_KEY}"
    return (
        f"    ssl_certificate {certificate};\n    ssl_certificate_key {key};\n"
        "    ssl_protocols TLSv1.2 TLSv1.3;\n"
        # Plain HTTP to an HTTPS port (a printer's door typed as http://): sent to the same port's https.
        "    error_page 497 =308 https://$host:$server_port$request_uri;\n"
    )


def _to_https(config: Config) -> str:
    """With HTTPS on, the farm's plain port only sends browsers (and old links) to its HTTPS port."""
    if not config.frontdoor.https:
        return ""
    port = config.frontdoor.https_port
    target = "https://$host" + ("" if port == 443 else f":{port}")
    return (
        "server {\n"
        + _listen_lines(config, config.frontdoor.port, default=True)
        + f"    server_name _;\n    return 308 {target}$request_uri;\n}}\n\n"
    )


def _printer_server(config: Config, name: str, upstream_host: str) -> str:
    door = config.door_port(name)
    upstream = f"http://{upstream_host}:{config.printers[name].port}"
    camera = config.printers[name].camera
    return (
        f"# {name}: its OctoPrint at the root of its own origin.\n"
        + _cookie_maps(door)
        + "server {\n"
        + _listen_lines(config, door, default=False, tls=config.frontdoor.https)
        + "    server_name _;\n"
        + _tls_lines(config)
        + _web_locations(name)
        + "    location / {\n"
        + _guarded(AUTH_PRINTER)
        + _octoprint_proxy(upstream, door, "")
        + "    }\n"
        + "".join(
            f"    location ^~ {path} {{\n" + _octoprint_proxy(upstream, door, path) + "    }\n" for path in UNGATED
        )
        + (_camera_location(config, camera, name) if camera is not None else "")
        + "}\n"
    )


def _moved_location(config: Config, name: str) -> str:
    """/NAME/ on the farm's origin, where a printer lived before it had its own: sent on there."""
    return (
        f"    location ~ ^/{name}(?<octobrix_rest>/.*)?$ {{\n"
        f"        return 308 $scheme://$host:{config.door_port(name)}$octobrix_rest$is_args$args;\n"
        "    }\n"
    )


def render_frontdoor(config: Config) -> str:
    upstream_host = cameras.local_host(config.services_listen())
    farm_cameras = "".join(_camera_location(config, name, "") for name in sorted(config.cameras))
    https = config.frontdoor.https
    farm_port = config.frontdoor.https_port if https else config.frontdoor.port
    return (
        header(config.source)
        + "# The farm: its login and page on the front door's port (octobrix-web.service), the cameras at\n"
        "# /cam/NAME/; each printer on its own port, its own origin. Secrets stay with the web service.\n\n"
        'map $http_upgrade $octobrix_connection {\n    default upgrade;\n    "" "";\n}\n'
        + f"upstream octobrix_web {{\n    server unix:{WEB_SOCKET};\n}}\n\n"
        + _to_https(config)
        + "server {\n"
        + _listen_lines(config, farm_port, default=True, tls=https)
        + "    server_name _;\n"
        + _tls_lines(config)
        + _web_locations("")
        + "    location / {\n"
        # With a URI part: the web service gets the path nginx normalised (//, %XX, .. resolved),
        # so it routes and judges the very path nginx routed, not the raw one.
        "        proxy_pass http://octobrix_web/;\n"
        + _proxy_headers()
        + f'        proxy_set_header {REFUSED_HEADER} "";\n'
        "        client_max_body_size 1m;\n"
        "    }\n"
        + "".join(_moved_location(config, name) for name in sorted(config.printers))
        + farm_cameras
        + "}\n\n"
        + "\n".join(_printer_server(config, name, upstream_host) for name in sorted(config.printers))
    )
