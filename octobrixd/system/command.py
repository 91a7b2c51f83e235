"""The one way octobrix runs an external command.

Every child gets the same clean environment, whoever started octobrix and from which shell: a
fixed PATH, `LANG=C.UTF-8` (so what octobrix parses is never translated), the proxy and CA settings
pip and uv need to reach an index, and then the caller's own variables. Its stdin is /dev/null
(nothing waits on a terminal), no other descriptor of octobrix's is open in it, and it runs in a
process group of its own, so a timeout or an interrupt ends it with every process it started (uv's
builds, dkms's compilers), not just the first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence

from octobrixd.errors import CommandError, CommandNotFoundError, CommandTimeoutError

log = logging.getLogger(__name__)

SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BASE_ENVIRONMENT: Mapping[str, str] = {"LANG": "C.UTF-8", "PATH": SYSTEM_PATH}
# The only variables taken from octobrix's own environment: how this machine reaches the network.
PASSED_THROUGH = (
    *("http_proxy", "https_proxy", "no_proxy", "all_proxy"),
    *("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY"),
    *("SSL_CERT_FILE", "SSL_CERT_DIR"),
)
# How long the output of a killed command may take to drain (a process that left the group may
# still hold its pipes).
DRAIN_SECONDS = 5.0


def child_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a command runs in: the fixed base, the network settings, then env."""
    out = dict(BASE_ENVIRONMENT)
    out.update({name: os.environ[name] for name in PASSED_THROUGH if name in os.environ})
    out.update(env or {})
    return out


def _program(name: str) -> str:
    """Where name is: as octobrix's own PATH finds it (a stand-in put first on it is used), else on the
    fixed PATH (sbin, which a user's PATH may lack)."""
    if "/" in name:
        return name
    search = os.pathsep.join(p for p in (os.environ.get("PATH", ""), SYSTEM_PATH) if p)
    found = shutil.which(name, path=search)
    if found is None:
        raise CommandNotFoundError(f"{name} is not installed", hint=f"install the package that provides {name}")
    return found


def _end_group(process: subprocess.Popen[str]) -> None:
    """Kill the command's whole process group (its children too) and reap the command."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.kill()  # a command that left its group on purpose still ends


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    input_text: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    as_user: tuple[int, int] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run argv (never through a shell), log it quoted, raise CommandError with stderr on failure.

    env is added to the clean environment (child_environment). stdin is /dev/null, or input_text,
    which is never logged. The command has no terminal (a session of its own): a program that
    would ask for a password there reads it from input_text instead. as_user=(uid, gid) runs it
    as that user with no supplementary groups.
    """
    args = [str(a) for a in argv]
    log.debug("running %s", shlex.join(args))
    try:
        process = subprocess.Popen(
            args,
            executable=_program(args[0]),
            stdin=subprocess.PIPE if input_text is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_environment(env),
            start_new_session=True,
            close_fds=True,  # no descriptor of octobrix's reaches a command (one run as a printer's user)
            user=as_user[0] if as_user else None,
            group=as_user[1] if as_user else None,
            extra_groups=[] if as_user else None,
        )
    except FileNotFoundError as exc:
        raise CommandNotFoundError(
            f"{args[0]} is not installed", hint=f"install the package that provides {args[0]}"
        ) from exc
    try:
        stdout, stderr = process.communicate(input_text, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        _end_group(process)
        # What it said so far may tell why it was slow.
        said = _drain(process)
        raise CommandTimeoutError(args, float(exc.timeout), said) from None
    except BaseException:
        # Interrupted (Ctrl-C, the daemon stopping): nothing it started outlives octobrix's wait.
        _end_group(process)
        with contextlib.suppress(Exception):
            _drain(process)
        raise
    result = subprocess.CompletedProcess(args, process.returncode, stdout, stderr)
    if check and result.returncode != 0:
        raise CommandError(args, result.returncode, result.stderr)
    return result


def _drain(process: subprocess.Popen[str]) -> str:
    """Reap a killed command; its stderr so far (all of it that reached the pipe)."""
    try:
        _stdout, stderr = process.communicate(timeout=DRAIN_SECONDS)
    except subprocess.TimeoutExpired:
        # Someone outside its group holds the pipes: stop reading, still reap the command.
        for pipe in (process.stdin, process.stdout, process.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        process.wait()
        return ""
    return stderr or ""
