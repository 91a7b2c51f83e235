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
    '/usr/bin/python3 -c \'__import__("os").environ.get("OCTOBRIX_PORT") and __import__("os").killpg(0, 15)\''
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
            # OctoPrint checks that it is online before it starts its server: on a farm without
            # internet that takes ~6 s (two checks of three tries a second apart). It starts with
            # the check off, and octobrix's plugin (ONLINE_CHECK_PLUGIN) turns it on once the server
            # answers: the check runs as before, only in the background.
            "onlineCheck": {"enabled": False},
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


ONLINE_CHECK_PLUGIN_NAME = "octobrix_online_check.py"
# A single-file OctoPrint plugin (basedir/plugins/, loaded by OctoPrint 1.9 to 2.0). It runs first
# after start-up, and turns the online check on, in memory: the settings page shows it on, and a
# settings save keeps it on (OctoPrint sets its checker from the settings on every save). The
# settings are put back to off at shutdown, so the next start does not wait either.
ONLINE_CHECK_PLUGIN = """\
import octoprint.plugin

__plugin_name__ = "octobrix online check"
__plugin_description__ = "Starts OctoPrint's online check once OctoPrint answers, not before (octobrix)"
__plugin_author__ = "octobrix"
__plugin_pythoncompat__ = ">=3.7,<4"

ENABLED = ["server", "onlineCheck", "enabled"]


class OnlineCheckAfterStartup(
    octoprint.plugin.StartupPlugin, octoprint.plugin.ShutdownPlugin, octoprint.plugin.SettingsPlugin
):
    # SettingsPlugin: OctoPrint gives only those a self._settings.
    def get_sorting_key(self, context=None):
        # Before other plugins' after-startup work, which asks whether OctoPrint is online.
        return -1000

    def on_after_startup(self):
        self._settings.global_set_boolean(ENABLED, True)
        # Checks in the background now, and every server.onlineCheck.interval after.
        self._connectivity_checker.enabled = True

    def on_shutdown(self):
        self._settings.global_set_boolean(ENABLED, False)
        self._settings.save()


__plugin_implementation__ = OnlineCheckAfterStartup()
"""


def render_online_check_plugin(config: Config) -> str:
    return header(config.source) + ONLINE_CHECK_PLUGIN


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
