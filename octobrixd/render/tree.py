"""Config in, every generated file out: {path relative to the root: content}. Never touches the system."""

from __future__ import annotations

from pathlib import PurePosixPath

from octobrixd.config.model import Config
from octobrixd.instances.instance import PLUGINS, tree_basedir
from octobrixd.names import dropin, octoprint_unit, streamer_unit
from octobrixd.render.backup_timer import timer_files
from octobrixd.render.common import RenderedFile, header
from octobrixd.render.nginx import NGINX_SITE, render_frontdoor
from octobrixd.render.octoprint import ONLINE_CHECK_PLUGIN_NAME, render_octoprint_seed, render_online_check_plugin
from octobrixd.render.udev import render_udev_rules
from octobrixd.render.units import (
    pip_constraints_path,
    render_octoprint_dropin,
    render_pip_constraints,
    render_streamer_dropin,
    render_sysusers,
)
from octobrixd.system import paths

SEED_NAME = "octobrix-seed.yaml"


def seed_path(name: str) -> PurePosixPath:
    return paths.STATE_DIR / name / SEED_NAME


def online_check_plugin_path(name: str) -> PurePosixPath:
    return tree_basedir(name) / PLUGINS / ONLINE_CHECK_PLUGIN_NAME


def render_all(config: Config) -> dict[PurePosixPath, RenderedFile]:
    files: dict[PurePosixPath, RenderedFile] = {
        paths.UDEV_RULES: RenderedFile(render_udev_rules(config)),
        paths.SYSUSERS_FILE: RenderedFile(render_sysusers(config)),
    }
    for name in config.printers:
        files[paths.UNIT_DIR / dropin(octoprint_unit(name))] = RenderedFile(render_octoprint_dropin(config, name))
        files[seed_path(name)] = RenderedFile(render_octoprint_seed(config, name), owner=name)
        files[pip_constraints_path(name)] = RenderedFile(render_pip_constraints(config, name))
        files[online_check_plugin_path(name)] = RenderedFile(render_online_check_plugin(config), owner=name)
    for name in config.cameras:
        files[paths.UNIT_DIR / dropin(streamer_unit(config, name))] = RenderedFile(render_streamer_dropin(config, name))
    if config.frontdoor.enabled:
        files[NGINX_SITE] = RenderedFile(render_frontdoor(config))
    options = render_uvcvideo_options(config)
    if options:
        files[paths.MODPROBE_FILE] = RenderedFile(
            header(config.source) + "# Takes effect with the patched uvcvideo from `octobrixctl kmod install`.\n"
            f"options uvcvideo {options}\n"
        )
    for rel, text in timer_files(config.octobrix.backup_schedule, bool(config.printers), header(config.source)).items():
        files[rel] = RenderedFile(text)
    return files


def render_uvcvideo_options(config: Config) -> str:
    """The module options [uvcvideo] sets, as modprobe.d wants them; empty when it sets none."""
    uvc = config.uvcvideo
    options = []
    if uvc.max_compressed_payload is not None:
        options.append(f"max_compressed_payload={uvc.max_compressed_payload}")
    if uvc.uncompressed_bandwidth_fix is not None:
        options.append(f"uncompressed_bandwidth_fix={'Y' if uvc.uncompressed_bandwidth_fix else 'N'}")
    return " ".join(options)
