"""Real systemd runs octobrix's units: the octoprint@ template plus a rendered drop-in, in nspawn."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.lab.harness.container import Container
from tests.lab.harness.project import install_rendered, install_templates, render

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


def test_octoprint_template_starts_a_virtual_printer(container: Container, tmp_path: Path) -> None:
    """`systemctl start octoprint@demo` reaches active with the rendered drop-in and template.

    ExecStart's target (/var/lib/octobrix/demo/venv/bin/octoprint) is a stand-in script, see
    STANDIN_OCTOPRINT: this test is about the units, users and paths, not OctoPrint itself.
    """
    root = render("[printers.demo]\nvirtual = true\nport = 5000\n", tmp_path)
    install_templates(container, "octoprint@.service")
    install_rendered(container, root)
    container.write_file("/var/lib/octobrix/demo/venv/bin/octoprint", STANDIN_OCTOPRINT, mode=0o755)
    container.run(["chown", "-R", "octobrix-demo:octobrix-demo", "/var/lib/octobrix/demo"])
    container.systemctl("daemon-reload")

    container.systemctl("start", "octoprint@demo.service")
    state = container.wait_active("octoprint@demo.service", timeout=30)
    assert state == "active", container.journal("octoprint@demo.service")

    container.wait_for_path("/var/lib/octobrix/demo/standin.json", timeout=20)
    show = container.systemctl("show", "-p", "User,MainPID,Environment", "octoprint@demo.service").stdout
    assert "User=octobrix-demo" in show
    standin = json.loads(container.read_file("/var/lib/octobrix/demo/standin.json"))
    uid = int(container.run(["id", "-u", "octobrix-demo"]).stdout)
    assert standin["uid"] == uid
    assert standin["argv"] == [
        "serve", "--basedir", "/var/lib/octobrix/demo/basedir", "--host", "::", "--port", "5000",
    ]  # fmt: skip
    # Still up a moment later: it did not crash into a restart loop.
    assert container.wait_active("octoprint@demo.service", timeout=1) == "active"

    container.systemctl("stop", "octoprint@demo.service")
    assert container.is_active("octoprint@demo.service") == "inactive"
