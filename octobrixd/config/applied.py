"""The last config that applied: a copy of /etc/octobrix.toml as it was when apply or octobrixd last
made the system match it.

A config with mistakes changes nothing, so the farm keeps running on this one; `status` lists the
farm from it (with the config's errors on top) instead of showing nothing. apply and octobrixd
save it after every successful apply, atomically, with the config file's own permission bits.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

from octobrixd.config.model import Config, parse_config, with_machine_defaults
from octobrixd.config.view import save_view
from octobrixd.errors import ConfigError, OctobrixError
from octobrixd.system import paths
from octobrixd.system.fsutil import leftover_temps, write_atomic
from octobrixd.system.paths import Layout

log = logging.getLogger(__name__)

APPLIED_CONFIG = paths.STATE_DIR / ".applied.toml"
# The copy's first line says where it came from, so that `status --config OTHER` never takes the
# farm's copy for OTHER's; the rest is the config's text as it was read.
HEADER_PREFIX = "# octobrix: the last config that applied, from "
HEADER_SUFFIX = " (a copy: edit that file, not this one)\n"


@dataclass(frozen=True)
class Applied:
    config: Config
    path: Path
    saved_at: float


def applied_path(layout: Layout) -> Path:
    return layout.path(APPLIED_CONFIG)


def _header(source: Path) -> str:
    return f"{HEADER_PREFIX}{source.absolute()}{HEADER_SUFFIX}"


def remember_applied(layout: Layout, config: Config) -> bool:
    """After a successful apply: keep the text of the config that applied; True if it was saved.

    The file is read again here, so its text is saved only if it still says what was applied (an
    edit in between is not taken for the applied config). Never fails the apply that called it.
    """
    source = Path(config.source)
    try:
        text = source.read_text(encoding="utf-8")
        mode = stat.S_IMODE(source.stat().st_mode) & 0o644
        again = with_machine_defaults(parse_config(text, config.source), socket.gethostname())
        if again != config:
            log.info("%s changed while it was applied; keeping the previous copy", source)
            return False
        copy, wanted = applied_path(layout), _header(source) + text
        for temp in leftover_temps(copy):
            temp.unlink(missing_ok=True)  # of a run killed while it wrote the copy
        # An apply that changes nothing rewrites nothing, this copy included.
        if not _same(copy, wanted, mode):
            write_atomic(copy, wanted, mode=mode)
        _keep_view(layout, config, text, mode)
    except ConfigError:
        log.info("%s changed while it was applied; keeping the previous copy", source)
        return False
    except (OctobrixError, OSError, UnicodeDecodeError) as error:
        # A copy of an older config would make status list a farm that no longer runs.
        with contextlib.suppress(OSError):
            applied_path(layout).unlink(missing_ok=True)
        log.warning("could not keep a copy of the applied config in %s: %s", applied_path(layout), error)
        return False
    return True


def _keep_view(layout: Layout, config: Config, text: str, mode: int) -> None:
    # Keyed by the text it came from, a view is never taken for another config: one that could not
    # be written only makes status validate the config itself, as it did before views.
    try:
        save_view(layout, config, text, socket.gethostname(), mode)
    except (OctobrixError, OSError) as error:
        log.warning("could not keep the farm's view for status: %s", error)


def _same(path: Path, text: str, mode: int) -> bool:
    try:
        return stat.S_IMODE(path.stat().st_mode) == mode and path.read_text(encoding="utf-8") == text
    except (OSError, UnicodeDecodeError):
        return False


def last_applied(layout: Layout, source: Path) -> Applied | None:
    """The config that applied last, if it came from source and can be read; None otherwise."""
    path = applied_path(layout)
    try:
        text = path.read_text(encoding="utf-8")
        saved_at = path.stat().st_mtime
    except (OSError, UnicodeDecodeError):
        return None
    header, _, body = text.partition("\n")
    if f"{header}\n" != _header(source):
        return None
    try:
        config = parse_config(body, str(source.absolute()))
    except ConfigError:
        # Written only after it validated: an older octobrix's rules, or a damaged copy.
        return None
    return Applied(with_machine_defaults(config, socket.gethostname()), path, saved_at)
