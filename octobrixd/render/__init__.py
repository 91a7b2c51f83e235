"""Pure renderers: Config in, {path: text} out (udev rules, units, OctoPrint seeds, nginx, timers)."""
