"""The part of each instance's OctoPrint config.yaml that octobrix owns.

apply merges these keys into the instance's config.yaml; every other key is the user's and
is left as it is, so changes made in OctoPrint's settings page survive.
"""

from __future__ import annotations

from typing import Any

import yaml

from octobrixd.cameras import FFMPEG, snapshot_url, stream_ratio, stream_url
from octobrixd.config import Config
from octobrixd.render_common import header

VIRTUAL_PORT = "VIRTUAL"
RESTART_COMMAND = (
    "/usr/bin/python3 -c '__import__(\"os\").environ.get(\"OCTOBRIX_PORT\") and __import__(\"os\").killpg(0, 15)'"
)
DEFAULT_BAUDRATE = 115200
# get_settings_version() of OctoPrint's bundled classicwebcam plugin, the same in 1.9, 1.10 and 1.11.
CLASSICWEBCAM_SETTINGS_VERSION = 1


def device_link(name: str) -> str:
    return f"/dev/octobrix/{name}"


def octoprint_seed(config: Config, name: str) -> dict[str, Any]:
    printer = config.printers[name]
    if printer.virtual:
        serial: dict[str, Any] = {"port": VIRTUAL_PORT, "autoconnect": True}
        plugins: dict[str, Any] = {"virtual_printer": {"enabled": True}}
    else:
        link = device_link(name)
        serial = {
            "port": link,
            # OctoPrint only offers ports it finds by its own globs, so the link is added by name.
            "additionalPorts": [link],
            "baudrate": printer.baudrate or DEFAULT_BAUDRATE,
            "autoconnect": True,
        }
        plugins = {}
    plugins["discovery"] = {"publicPort": printer.port}
    # Without a camera OctoPrint would show an empty "Webcam stream not loaded" panel in its
    # Control tab; webcamEnabled (OctoPrint 1.9-1.11: webcam.webcamEnabled) hides it.
    webcam: dict[str, Any] = {"webcamEnabled": False}
    if printer.camera is not None:
        plugins["classicwebcam"], webcam = _webcam_seed(config, printer.camera)
    # Anonymous usage tracking stays off unless the user turns it on; deciding it here also
    # answers the tracking wizard.
    plugins["tracking"] = {"enabled": False}
    seed: dict[str, Any] = {
        "serial": serial,
        "server": {
            "port": printer.port,
            # With an admin user seeded and these answered, OctoPrint shows no setup wizard.
            "firstRun": False,
            "onlineCheck": {"enabled": True},
            "pluginBlacklist": {"enabled": True},
            # A start that crashed half-way must not leave the next start in safe mode with
            # every plugin off: systemd restarts the instance, and it should come back whole.
            "ignoreIncompleteStartup": True,
            "commands": {
                # Ends this instance's OctoPrint, and systemd (Restart=always) starts it again: the
                # command runs in OctoPrint's process group (systemd made OctoPrint its leader), so
                # it can restart only itself. The system menu runs it through a shell, but the
                # backup plugin after a restore runs it with no shell (sarge): `kill $PPID` failed
                # there, so nothing that needs a shell or another package's kill. Only the server
                # the unit started has OCTOBRIX_PORT: OctoPrint's restore CLI, which octobrix runs
                # in a session of its own and which runs this too, must not end itself.
                "serverRestartCommand": RESTART_COMMAND,
            },
        },
        "appearance": {"name": name},
        # Nothing a client sends names a user: no remote-user header, no basic auth, on the direct
        # port or through the front door (which passes an API key of its own, set by nginx).
        "accessControl": {"trustRemoteUser": False, "trustBasicAuthentication": False},
        "plugins": plugins,
        "webcam": webcam,
    }
    return seed


def _webcam_seed(config: Config, camera: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The classic webcam plugin's settings (OctoPrint 1.9 and later, 1.10 and 1.11 alike) and the core's.

    Without _config_version the plugin believes its settings predate it on first start and
    "migrates" them from the old top-level webcam section, emptying the URLs set here.
    """
    entry = config.cameras[camera]
    classic = {
        "_config_version": CLASSICWEBCAM_SETTINGS_VERSION,
        "stream": stream_url(config, camera),
        "snapshot": snapshot_url(config, camera),
        "streamRatio": stream_ratio(entry.width, entry.height),
    }
    # Timelapses are rendered by ffmpeg, which OctoPrint only uses once it knows where it is.
    return classic, {"webcamEnabled": True, "ffmpeg": FFMPEG}


def render_octoprint_seed(config: Config, name: str) -> str:
    body = yaml.safe_dump(octoprint_seed(config, name), sort_keys=True, default_flow_style=False)
    return header(config.source) + body


def merge_seed(current: dict[str, Any], seed: dict[str, Any]) -> dict[str, Any]:
    """Overlay seed onto current, table by table; keys only in current are kept."""
    merged = dict(current)
    for key, value in seed.items():
        existing = merged.get(key)
        if isinstance(value, dict) and isinstance(existing, dict):
            merged[key] = merge_seed(existing, value)
        else:
            merged[key] = value
    return merged
