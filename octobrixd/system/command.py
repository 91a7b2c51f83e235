"""The one way octobrix runs an external command."""

from __future__ import annotations

import logging
import shlex
import subprocess
from collections.abc import Mapping, Sequence

from octobrixd.errors import CommandError, CommandNotFoundError, CommandTimeoutError

log = logging.getLogger(__name__)


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    input_text: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    new_session: bool = False,
    as_user: tuple[int, int] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run argv (never through a shell), log it quoted, raise CommandError with stderr on failure.

    new_session detaches the command from the caller's terminal, so a program that would ask
    for a password there reads it from input_text instead. input_text is never logged.
    as_user=(uid, gid) runs it as that user with no supplementary groups.
    """
    args = [str(a) for a in argv]
    log.debug("running %s", shlex.join(args))
    try:
        result = subprocess.run(
            args,
            input=input_text,
            capture_output=True,
            text=True,
            env=dict(env) if env is not None else None,
            timeout=timeout,
            check=False,
            start_new_session=new_session,
            user=as_user[0] if as_user else None,
            group=as_user[1] if as_user else None,
            extra_groups=[] if as_user else None,
        )
    except subprocess.TimeoutExpired as exc:
        # subprocess.run has killed it; what it said so far may tell why it was slow.
        said = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
        raise CommandTimeoutError(args, float(exc.timeout), said) from None
    except FileNotFoundError as exc:
        raise CommandNotFoundError(
            f"{args[0]} is not installed", hint=f"install the package that provides {args[0]}"
        ) from exc
    if check and result.returncode != 0:
        raise CommandError(args, result.returncode, result.stderr)
    return result
