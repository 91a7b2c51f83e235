"""The part of each instance's OctoPrint config.yaml that octobrix owns.

apply merges these keys into the instance's config.yaml; every other key is the user's and
is left as it is, so changes made in OctoPrint's settings page survive. A few (SET_ONCE, the
printer's name among them) are only seeded: set where config.yaml lacks them, then the user's.
"""

from __future__ import annotations

from typing import Any

import yaml

from octobrixd.cameras.streams import FFMPEG, snapshot_url, stream_ratio, stream_url
from octobrixd.config.model import Config
from octobrixd.instances.versions import Generation, pinned_version, seeded_generation
from octobrixd.names import device_link
from octobrixd.render.common import header

VIRTUAL_PORT = "VIRTUAL"
RESTART_COMMAND = (
    '/usr/bin/python3 -c \'__import__("os").environ.get("OCTOBRIX_PORT") and __import__("os").killpg(0, 15)\''
)
DEFAULT_BAUDRATE = 115200
# get_settings_version() of OctoPrint's bundled classicwebcam plugin, the same in 1.9, 1.10 and 1.11.
CLASSICWEBCAM_SETTINGS_VERSION = 1
# get_settings_version() of the bundled Software Update plugin (1.11: 9; 2.0: 10).
SOFTWAREUPDATE_SETTINGS_VERSION = {Generation.V1: 9, Generation.V2: 10}
# The wizard version (WIZARD_VERSION in octoprint_file_check/__init__.py) of File Check, the plugin
# every OctoPrint since 1.4.1 installs with itself: 1 in each release from 2024.3.27 to 2025.7.23.
# With firstRun false its wizard ("check all files") is required as soon as the uploads folder holds
# a file it never checked, e.g. a slicer's upload before anyone opened the page, or an imported
# basedir; OctoPrint skips a wizard whose version server.seenWizards records.
FILE_CHECK_WIZARD_VERSION = 1


def octoprint_seed(config: Config, name: str, installed: str | None = None) -> dict[str, Any]:
    """octobrix's keys for printer NAME, in the dialect of the OctoPrint it runs: installed is the
    version in its venv when known (the pin decides otherwise, or when the venv is about to be
    rebuilt because the version there no longer meets the pin)."""
    printer = config.printers[name]
    requirement = config.octoprint_requirement(name)
    generation = seeded_generation(installed, requirement)
    link = None if printer.virtual else device_link(name)
    port = VIRTUAL_PORT if link is None else link
    baudrate = None if link is None else printer.baudrate or DEFAULT_BAUDRATE
    plugins: dict[str, Any] = {"virtual_printer": {"enabled": True}} if link is None else {}
    # Zeroconf and SSDP announce where apps should go: through the front door, this printer's own
    # origin there; without it, OctoPrint's own port.
    public_port = config.door_port(name) if config.frontdoor.enabled else printer.port
    plugins["discovery"] = {"publicPort": public_port, "pathPrefix": "/"}
    # Without a camera OctoPrint would show an empty "Webcam stream not loaded" panel in its
    # Control tab; webcamEnabled (OctoPrint 1.9-2.0: webcam.webcamEnabled) hides it.
    webcam: dict[str, Any] = {"webcamEnabled": False}
    if printer.camera is not None:
        plugins["classicwebcam"], webcam = _webcam_seed(config, printer.camera)
    # Anonymous usage tracking stays off unless the user turns it on; deciding it here also
    # answers the tracking wizard.
    plugins["tracking"] = {"enabled": False}
    # The pin's version, not the venv's: the plan reads the venv before a first apply builds it, and
    # the next apply would change the file again.
    plugins["softwareupdate"] = _software_update_seed(name, pinned_version(requirement))
    server: dict[str, Any] = {
        "port": printer.port,
        # With an admin user seeded and these answered, OctoPrint shows no setup wizard.
        "firstRun": False,
        "seenWizards": {"file_check": FILE_CHECK_WIZARD_VERSION},
        # OctoPrint checks that it is online before it starts its server: on a farm without
        # internet that takes ~6 s (two checks of three tries a second apart). It starts with
        # the check off, and octobrix's plugin (ONLINE_CHECK_PLUGIN) turns it on once the server
        # answers: the check runs as before, only in the background.
        "onlineCheck": {"enabled": False},
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
    }
    # Nothing a client sends names a user: no remote-user header, no basic auth, on the direct
    # port or through the front door (which passes an API key of its own, set by nginx).
    access: dict[str, Any] = {"trustBasicAuthentication": False}
    seed: dict[str, Any] = {"server": server, "appearance": {"name": name}, "accessControl": access}
    if generation is Generation.V2:
        # OctoPrint 2.0 moved the serial settings into its serial_connector plugin and the port a
        # connection prefers into printerConnection; the 1.x keys would be migrated away at every
        # start and written back by every apply.
        seed["printerConnection"] = {
            "autoconnect": True,
            "preferred": {"connector": "serial", "parameters": {"port": port, "baudrate": baudrate}},
        }
        if link is not None:
            # It only offers ports it finds by its own globs, so the link is added by name.
            plugins["serial_connector"] = {"additionalPorts": [link]}
        server["pluginBlocklist"] = {"enabled": True}
        # 2.0 replaced trustRemoteUser by a list of proxies whose remote-user header it trusts.
        access["trustedAuthProxies"] = []
    else:
        serial: dict[str, Any] = {"port": port, "autoconnect": True}
        if link is not None:
            serial |= {"additionalPorts": [link], "baudrate": baudrate}
        seed["serial"] = serial
        server["pluginBlacklist"] = {"enabled": True}
        access["trustRemoteUser"] = False
    seed["plugins"] = plugins
    seed["webcam"] = webcam
    return seed


def _software_update_seed(name: str, version: str | None) -> dict[str, Any]:
    """OctoPrint's own Software Update never changes the OctoPrint version behind octobrix's back
    (the pin, the venv swap and the rollback would not know of it): its check for OctoPrint always
    reports the running version as current and is never run, even when forced, and its name in the
    Software Update list says what to run instead. Plugin checks are left as OctoPrint has them."""
    # always_current reports current_version (its local and newest version; without one "1.0.0")
    # and asks no server; enabled=False makes its updater skip the check, even when forced.
    check: dict[str, Any] = {
        "type": "always_current",
        "enabled": False,
        "displayName": f"OctoPrint (version managed by octobrix: sudo octobrixctl upgrade {name})",
    }
    if version is not None:
        check["current_version"] = version
    return {"checks": {"octoprint": check}}


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


def first_start_seed(current: dict[str, Any], generation: Generation) -> dict[str, Any]:
    """Keys set only while current lacks them: the settings versions of plugins that have never run
    in this basedir. Without one, a plugin believes its settings predate it and "migrates" them on
    its first start (Software Update drops the name given to its OctoPrint check); a plugin that
    has run keeps the version it recorded, so its own migrations still run after an upgrade."""
    plugins = current.get("plugins")
    update = plugins.get("softwareupdate") if isinstance(plugins, dict) else None
    if isinstance(update, dict) and "_config_version" in update:
        return {}
    return {"plugins": {"softwareupdate": {"_config_version": SOFTWAREUPDATE_SETTINGS_VERSION[generation]}}}


def pending_migration_seed(current: dict[str, Any], seed: dict[str, Any]) -> dict[str, Any]:
    """For an OctoPrint 2.0 seed over a config.yaml that 2.0 has not migrated yet (a printer just
    moved from 1.x): its 1.x serial section, which 2.0 moves into printerConnection and
    serial_connector on its first start, carries octobrix's current port and baudrate, so the
    migration cannot bring back the old ones. Nothing otherwise."""
    serial = current.get("serial")
    connection = seed.get("printerConnection")
    if not isinstance(serial, dict) or not isinstance(connection, dict):
        return {}
    parameters = connection["preferred"]["parameters"]
    legacy: dict[str, Any] = {"port": parameters["port"], "autoconnect": connection["autoconnect"]}
    if parameters["baudrate"] is not None:
        legacy["baudrate"] = parameters["baudrate"]
    return {"serial": legacy}


def merged_octoprint_config(
    current: dict[str, Any], config: Config, name: str, installed: str | None
) -> dict[str, Any]:
    """current (the instance's config.yaml) with octobrix's keys in place, for the OctoPrint it runs."""
    seed = _without_set_once(current, octoprint_seed(config, name, installed))
    generation = seeded_generation(installed, config.octoprint_requirement(name))
    merged = merge_seed(current, pending_migration_seed(current, seed))
    return merge_seed(merge_seed(merged, first_start_seed(current, generation)), seed)


# Keys octobrix sets only where config.yaml lacks them (a new instance, or one whose OctoPrint never
# had it), and then leaves to OctoPrint and its user:
# - the online check: octobrix's online-check plugin turns it on while OctoPrint runs (a settings
#   save then writes it on) and back off at a clean stop; owning it would make the next apply
#   rewrite config.yaml after every settings save.
# - the printer's name in OctoPrint (its title, tab and discovery name): seeded as the printer's
#   name in the config, then the user's to change in OctoPrint's settings; a basedir brought in by
#   `import` or a restore keeps the name it had.
# - File Check's wizard as seen: OctoPrint records a later version once its user finishes that
#   wizard; owning the key would bring the wizard back after every apply.
SET_ONCE = (
    ("server", "onlineCheck", "enabled"),
    ("appearance", "name"),
    ("server", "seenWizards", "file_check"),
)


def _without_set_once(current: dict[str, Any], seed: dict[str, Any]) -> dict[str, Any]:
    trimmed = seed
    for *tables, key in SET_ONCE:
        have: Any = current
        for table in tables:
            have = have.get(table) if isinstance(have, dict) else None
        if not (isinstance(have, dict) and key in have):
            continue
        trimmed = dict(trimmed)  # the seed itself is not changed: the tables on the path are copied
        node = trimmed
        for table in tables:
            node[table] = dict(node[table])
            node = node[table]
        node.pop(key, None)
    return trimmed


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
