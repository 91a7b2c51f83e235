"""The front door's part of apply, on the live system: secrets, `nginx -t`, reload, web service."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from octobrixd.config.model import Config
from octobrixd.errors import CommandError, CommandNotFoundError, OctobrixError
from octobrixd.frontdoor import secrets, tls
from octobrixd.render.nginx import NGINX_SITE
from octobrixd.system import systemd
from octobrixd.system.command import run
from octobrixd.system.fsutil import remove_file, write_atomic
from octobrixd.system.paths import Layout

log = logging.getLogger(__name__)

NGINX_UNIT = "nginx.service"
WEB_UNIT = "octobrix-web.service"


def check_nginx() -> None:
    try:
        run(["nginx", "-t", "-q"])
    except CommandNotFoundError:
        raise OctobrixError(
            "nginx is not installed, and the front door needs it",
            hint="sudo apt install nginx, or turn the front door off: [frontdoor] enabled = false",
        ) from None
    except CommandError as error:
        lines = error.stderr.strip().splitlines()
        # nginx says why in its [emerg] line; its last line only says that the test failed.
        said = next((line for line in lines if "[emerg]" in line), lines[-1] if lines else str(error))
        raise OctobrixError(
            f"nginx refused the front door's config: {said}",
            hint="`sudo nginx -t` shows it all; another site on the same port as default_server? "
            "change [frontdoor] port, or that site's listen line",
        ) from error


def after_apply(
    layout: Layout, printers: Sequence[str], site_old: str | None, site_touched: bool, *, https: Config | None = None
) -> None:
    """Run after the generated files are in place and instances are seeded.

    site_old: the site's text before this apply (None: there was none), put back if nginx refuses
    the new one, so a reload or reboot never meets a config nginx cannot load. https: the config,
    when the front door serves HTTPS: its certificate is made or renewed first.
    """
    synced = secrets.sync(layout, printers)
    certificate_changed = tls.ensure_certificate(https, layout) if https is not None else False
    site = layout.path(NGINX_SITE)
    if site_touched or synced.nginx_changed or certificate_changed:
        if site.exists():
            try:
                check_nginx()
            except OctobrixError:
                if site_touched:
                    _restore(site, site_old)
                raise
        systemd.reload_or_start([NGINX_UNIT])
        log.info("reloaded nginx (the front door)")
    if site_touched or synced.web_changed:
        systemd.restart_if_running([WEB_UNIT])


def _restore(site: Path, old: str | None) -> None:
    if old is None:
        remove_file(site)
    else:
        write_atomic(site, old)
