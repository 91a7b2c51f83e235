"""Real systemd runs octobrix's units: the octoprint@ template plus a rendered drop-in, in nspawn."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.lab.harness.container import Container
from tests.lab.harness.project import SYSTEMD_DIR, install_rendered, install_templates, render
from tests.lab.harness.waiting import wait_until

pytestmark = pytest.mark.lab

# A stand-in for the instance's OctoPrint: the real venv is provisioned by a later issue. It
# records how systemd started it (argv, user, environment) and then idles like a server would.
STANDIN_OCTOPRINT = textwrap.dedent(
    """\
    #!/usr/bin/python3
    import json, os, signal, sys
    state = {"argv": sys.argv[1:], "uid": os.getuid(), "home": os.environ.get("HOME")}
    path = os.path.join(os.environ["HOME"], "standin.json")
    with open(path + ".tmp", "w") as out:
        json.dump(state, out)
    os.rename(path + ".tmp", path)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        signal.pause()
    """
)


def show_value(container: Container, prop: str) -> str:
    return container.systemctl("show", "-P", prop, "octoprint@demo.service").stdout.strip()


def restart_sec() -> int:
    """RestartSec= of the template as shipped (systemctl show prints it as a time span, "5s")."""
    template = (SYSTEMD_DIR / "octoprint@.service").read_text()
    return int(next(line for line in template.splitlines() if line.startswith("RestartSec=")).partition("=")[2])


def uptime_usec(container: Container) -> int:
    """CLOCK_MONOTONIC in the container, the clock of systemd's *TimestampMonotonic properties."""
    return int(container.run(["python3", "-c", "import time; print(time.monotonic_ns() // 1000)"]).stdout)


def test_octoprint_template_starts_a_virtual_printer(container: Container, tmp_path: Path) -> None:
    """`systemctl start octoprint@demo` reaches active with the rendered drop-in and template.

    ExecStart's target (/var/lib/octobrix/demo/venv/bin/octoprint) is a stand-in script, see
    STANDIN_OCTOPRINT: this test is about the units, users and paths, not OctoPrint itself.
    """
    root = render("[printers.demo]\nvirtual = true\nport = 5000\n", tmp_path)
    install_templates(container, "octoprint@.service")
    install_rendered(container, root)
    container.write_file("/var/lib/octobrix/demo/venv/bin/octoprint", STANDIN_OCTOPRINT, mode=0o755)
    # The layout apply makes: the state dir is root's, the printer's user owns its home and basedir.
    container.run(["mkdir", "-p", "/var/lib/octobrix/demo/home", "/var/lib/octobrix/demo/basedir"])
    container.run(
        ["chown", "octobrix-demo:octobrix-demo", "/var/lib/octobrix/demo/home", "/var/lib/octobrix/demo/basedir"]
    )
    container.systemctl("daemon-reload")

    container.systemctl("start", "octoprint@demo.service")
    state = container.wait_active("octoprint@demo.service", timeout=30)
    assert state == "active", container.journal("octoprint@demo.service")

    container.wait_for_path("/var/lib/octobrix/demo/home/standin.json", timeout=20)
    show = container.systemctl("show", "-p", "User,MainPID,Environment", "octoprint@demo.service").stdout
    assert "User=octobrix-demo" in show
    standin = json.loads(container.read_file("/var/lib/octobrix/demo/home/standin.json"))
    uid = int(container.run(["id", "-u", "octobrix-demo"]).stdout)
    assert standin["uid"] == uid
    assert standin["argv"] == [
        "serve", "--basedir", "/var/lib/octobrix/demo/basedir", "--host", "::", "--port", "5000",
    ]  # fmt: skip
    assert standin["home"] == "/var/lib/octobrix/demo/home"
    # Still the same process once a crash would have been restarted (RestartSec=5): no restart loop.
    main_pid = show_value(container, "MainPID")
    entered = int(show_value(container, "ActiveEnterTimestampMonotonic"))
    restart_usec = restart_sec() * 1_000_000
    wait_until(
        "the unit to be up for longer than RestartSec",
        lambda: uptime_usec(container) - entered > restart_usec + 1_000_000,
        timeout=60,
        every=0.5,
    )
    assert (show_value(container, "MainPID"), show_value(container, "NRestarts")) == (main_pid, "0")
    assert container.is_active("octoprint@demo.service") == "active"

    container.systemctl("stop", "octoprint@demo.service")
    assert container.is_active("octoprint@demo.service") == "inactive"
