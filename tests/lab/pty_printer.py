"""A simulated printer on a pty, run *inside* the lab container (which has no udev and no USB).

    python3 pty_printer.py LINK LOG [MOVE_SECONDS]

Makes a pty, points LINK (e.g. /dev/octobrix/bench) at its far end, as udev would for a USB
adapter, and answers like Marlin (printer_sim.py, copied next to this file). Every line the
printer receives is appended to LOG, so a test can see what reached it. MOVE_SECONDS: how long
each G0/G1 takes (MarlinSim.move_seconds), so that a print streamed to it lasts.
"""

from __future__ import annotations

import os
import select
import sys
import tty
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from printer_sim import MarlinSim  # type: ignore[import-not-found]  # next to this file in the container


def main(link: Path, log_path: Path, move_seconds: float = 0.0) -> None:
    master, slave = os.openpty()
    # Raw like a real serial port: no echo, no line editing of G-code.
    tty.setraw(slave)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.unlink(missing_ok=True)
    link.symlink_to(os.ttyname(slave))
    sim = MarlinSim(move_seconds=move_seconds)
    # Keeping our own slave fd open means the master never sees EIO when OctoPrint closes the port.
    os.write(master, sim.connected())
    seen = 0
    with log_path.open("a", encoding="ascii", errors="replace") as log:
        while True:
            ready, _, _ = select.select([master], [], [], 0.1)
            out = sim.feed(os.read(master, 4096)) if ready else b""
            out += sim.tick()
            if out:
                os.write(master, out)
            for line in sim.lines[seen:]:
                log.write(line + "\n")
            if len(sim.lines) > seen:
                log.flush()
                seen = len(sim.lines)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]) if len(sys.argv) > 3 else 0.0)
