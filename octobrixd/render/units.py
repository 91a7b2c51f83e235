"""Per-instance systemd drop-ins for the static templates in systemd/, and sysusers entries."""

from __future__ import annotations

from pathlib import PurePosixPath

from octobrixd.cameras.streams import V4L2_CTL
from octobrixd.config.model import Camera, Config
from octobrixd.config.streamers import Streamer
from octobrixd.config.values import PixelFormat
from octobrixd.names import device_link, instance_user
from octobrixd.render.common import header
from octobrixd.system import paths


def pip_constraints_path(name: str) -> PurePosixPath:
    # octoprint@.service points PIP_CONSTRAINT here. In the state directory, root's and readable by the
    # instance's group (root:octobrix-NAME 0750), so only root writes it; the file is root's, 0644.
    return paths.STATE_DIR / name / "pip-constraints.txt"


def render_pip_constraints(config: Config, name: str) -> str:
    """The pin as a pip constraint for every pip that OctoPrint runs in its venv (Plugin Manager
    installs, Software Update's plugin updates): a plugin that needs another OctoPrint fails to
    install, instead of pip changing the OctoPrint version behind octobrix's back."""
    return header(config.source) + f"{config.octoprint_requirement(name)}\n"


def _environment(pairs: dict[str, str]) -> str:
    # Values are validated ints, IP literals, names and fixed flags: no quotes or backslashes. A
    # value with a space is quoted whole, or systemd would read it as two assignments.
    return "".join(
        f'Environment="{key}={value}"\n' if " " in value else f"Environment={key}={value}\n"
        for key, value in pairs.items()
    )


def device_allow(name: str) -> str:
    """The one device node printer NAME's OctoPrint may open (octoprint@.service has DevicePolicy=closed
    and no device of its own): its /dev/octobrix link, which systemd resolves to the tty it points at
    whenever it realizes the unit's cgroup (at start, and when octobrixd sees the printer plugged in)."""
    return f"{device_link(name)} rw"


def render_octoprint_dropin(config: Config, name: str) -> str:
    printer = config.printers[name]
    requirements = " ".join([config.octoprint_requirement(name), *printer.plugins])
    return (
        header(config.source)
        # Part of the file so that a new pin counts as a change to this instance and restarts it.
        + f"# Python environment: {requirements}\n"
        + "[Service]\n"
        + _environment({"OCTOBRIX_PORT": str(printer.port), "OCTOBRIX_LISTEN": config.services_listen()})
        + f"CPUWeight={printer.cpu_weight}\nNice={printer.nice}\n"
        + (f"MemoryMax={printer.memory_limit}\n" if printer.memory_limit else "")
        # A virtual printer has no device: it opens none.
        + ("" if printer.virtual else f"DeviceAllow={device_allow(name)}\n")
    )


def _ustreamer_environment(config: Config, camera: Camera) -> dict[str, str]:
    passthrough = camera.format is PixelFormat.MJPEG
    return {
        "OCTOBRIX_PORT": str(camera.port),
        "OCTOBRIX_LISTEN": config.streams_listen(),
        "OCTOBRIX_RESOLUTION": camera.resolution,
        "OCTOBRIX_FPS": str(camera.fps),
        "OCTOBRIX_FORMAT": camera.format.value.upper(),
        # HW hands the camera's own JPEG frames through; CPU encodes raw frames.
        "OCTOBRIX_ENCODER": "HW" if passthrough else "CPU",
    }


def _mjpg_streamer_environment(config: Config, camera: Camera) -> dict[str, str]:
    listen = config.streams_listen()
    return {
        "OCTOBRIX_PORT": str(camera.port),
        # output_http binds every address family when given no -l; given "::" it would set
        # IPV6_V6ONLY and refuse IPv4 clients, so the dual-stack default is "no -l at all".
        "OCTOBRIX_LISTEN_FLAGS": "" if listen == "::" else f"-l {listen}",
        "OCTOBRIX_RESOLUTION": camera.resolution,
        "OCTOBRIX_FPS": str(camera.fps),
        # input_uvc asks the camera for MJPEG unless told -y (raw YUYV, encoded by mjpg-streamer).
        "OCTOBRIX_INPUT_FLAGS": "-y" if camera.format is PixelFormat.YUYV else "",
    }


def _controls(camera: Camera) -> str:
    """One v4l2-ctl run per control, in the order the config lists them.

    Separate runs keep that order: many cameras ignore a manual value (focus_absolute) until its
    automatic mode (focus_automatic_continuous) is off. "-": a camera that is unplugged right now
    must not keep its streamer from starting (it serves "no signal" until the camera is back),
    and a control this camera lacks is reported in the journal without stopping the stream.
    """
    return "".join(
        f"ExecStartPre=-/{V4L2_CTL} --device={device_link('%i')} --set-ctrl={control}={value}\n"
        for control, value in camera.controls.items()
    )


def render_streamer_dropin(config: Config, name: str) -> str:
    camera = config.cameras[name]
    if config.streamer_of(name) is Streamer.USTREAMER:
        env = _ustreamer_environment(config, camera)
    else:
        env = _mjpg_streamer_environment(config, camera)
    return header(config.source) + "[Service]\n" + _environment(env) + _controls(camera)


# The front door's web service (systemd/octobrix-web.service). A printer's user is octobrix-NAME,
# and names have no underscore, so the two never meet.
WEB_SERVICE_USER = "octobrix_web"


def render_sysusers(config: Config) -> str:
    lines = [header(config.source), f'u {WEB_SERVICE_USER} - "octobrix front door (web service)" - /usr/sbin/nologin\n']
    for name in sorted(config.printers):
        lines.append(
            f'u {instance_user(name)} - "octobrix OctoPrint {name}" /var/lib/octobrix/{name}/home /usr/sbin/nologin\n'
        )
    for name in sorted(config.cameras):
        lines.append(f'u {instance_user(name)} - "octobrix camera {name}" - /usr/sbin/nologin\n')
    return "".join(lines)
