"""`python -m octobrixd.web`: the web service (systemd runs it as octobrix-web.service).

By hand, for development:
  python -m octobrixd.web --config tests/data/farm.toml --login DIR/login.json --keys DIR/keys.json --port 8099
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from pathlib import Path

from octobrixd.cliargs import add_config_argument, add_root_argument
from octobrixd.config.model import load_config, with_machine_defaults
from octobrixd.errors import OctobrixError
from octobrixd.frontdoor import auth
from octobrixd.frontdoor.sessions import SESSIONS_FILE, SessionStore
from octobrixd.system.paths import Layout
from octobrixd.web.context import (
    KEYS_CREDENTIAL,
    LOGIN_CREDENTIAL,
    METRICS_CREDENTIAL,
    PRINTER_LOGIN_CREDENTIAL,
    WebContext,
    read_keys,
)
from octobrixd.web.door import read_printer_login
from octobrixd.web.server import FarmServer, systemd_listener, tcp_listener, unix_listener

log = logging.getLogger("octobrixd.web")


def _credential(name: str) -> Path | None:
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    return Path(directory) / name if directory else None


def _sessions_file(given: Path | None) -> Path | None:
    """Where the live sessions are kept: --sessions, or systemd's StateDirectory= (octobrix-web.service);
    neither: in memory only (a restart logs everyone out)."""
    if given is not None:
        return given
    directory = os.environ.get("STATE_DIRECTORY")
    return Path(directory.split(":")[0]) / SESSIONS_FILE if directory else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="octobrix-web", description="octobrix's farm login and overview service")
    add_config_argument(parser)
    parser.add_argument("--login", type=Path, help="the farm login file (default: systemd credential farm-login)")
    parser.add_argument("--keys", type=Path, help="read-only keys per printer (default: systemd credential web-keys)")
    parser.add_argument("--metrics-token", type=Path,
                        help="the metrics token's digest (default: systemd credential metrics-token)")  # fmt: skip
    parser.add_argument("--printer-login", type=Path,
                        help="the farm user's printer login (default: systemd credential printer-login)")  # fmt: skip
    parser.add_argument("--sessions", type=Path,
                        help="the live sessions' file (default: sessions.json in the state directory)")  # fmt: skip
    add_root_argument(parser, "the system's root, as for octobrixctl")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--port", type=int, help="listen on 127.0.0.1:PORT instead of systemd's socket")
    where.add_argument("--socket", type=Path, help="listen on this unix socket instead of systemd's socket")
    parser.add_argument("--debug", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, format="%(levelname)s %(message)s")
    try:
        login_file = args.login or _credential(LOGIN_CREDENTIAL)
        keys_file = args.keys or _credential(KEYS_CREDENTIAL)
        metrics_file = args.metrics_token or _credential(METRICS_CREDENTIAL)
        printer_login_file = args.printer_login or _credential(PRINTER_LOGIN_CREDENTIAL)
        if login_file is None:
            raise OctobrixError("no farm login given", hint="pass --login FILE, or run it as octobrix-web.service")
        config = load_config(args.config)
        config = with_machine_defaults(config, os.uname().nodename)
        context = WebContext(
            config=config,
            login=auth.read_login(login_file),
            readonly_keys=read_keys(keys_file) if keys_file else {},
            layout=Layout(args.root),
            metrics_token_sha256=auth.read_token_digest(metrics_file) if metrics_file else None,
            sessions=SessionStore(_sessions_file(args.sessions)),
            printer_login=read_printer_login(printer_login_file) if printer_login_file else None,
        )
        if args.port is not None:
            listener = tcp_listener("127.0.0.1", args.port)
        elif args.socket is not None:
            listener = unix_listener(args.socket)
        else:
            found = systemd_listener(dict(os.environ), os.getpid())
            if found is None:
                raise OctobrixError(
                    "no socket to listen on", hint="pass --port or --socket, or start octobrix-web.socket"
                )
            listener = found
    except OctobrixError as error:
        print(f"error: {error}", file=sys.stderr)
        if error.hint:
            print(f"hint: {error.hint}", file=sys.stderr)
        return 1
    server = FarmServer(context, listener)
    log.info("serving the farm of %d printers on %s", len(config.printers), listener.getsockname() or "a socket")
    with contextlib.suppress(KeyboardInterrupt):
        # One wake-up a day while nobody asks (the default is twice a second); SIGTERM ends the process.
        server.serve_forever(poll_interval=86400.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
