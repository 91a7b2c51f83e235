"""USB serial numbers that do not tell boards apart: placeholders that a firmware or a cheap
adapter reports on every unit ("0001", "123456789", all zeros). A second such board makes its
serial ambiguous, so it is bound by the USB port it is plugged into instead, even while only
one of them is attached.
"""

from __future__ import annotations

from octobrixd.config.model import Config

# Seen on many boards at once; compared without case.
KNOWN_PLACEHOLDERS = frozenset({"0123456789abcdef", "abcdef", "none", "null", "serial", "default", "unknown"})
ASCENDING = "01234567890"
# A number this small is a counter's first value, not a unique id.
SMALL_NUMBER = 16


def placeholder_reason(serial: str) -> str | None:
    """Why serial is a placeholder many boards share, or None when it looks like a real one."""
    text = serial.strip().lower()
    if not text:
        return "it is empty"
    if len(set(text)) == 1:
        return f"{serial!r} is one character repeated, a placeholder many boards report"
    if text.isdigit() and int(text) <= SMALL_NUMBER:
        return f"{serial!r} is a placeholder many boards report (a counter's first value)"
    if len(text) >= 4 and text in ASCENDING:
        return f"{serial!r} is a placeholder many boards report (digits counted up)"
    if text in KNOWN_PLACEHOLDERS:
        return f"{serial!r} is a placeholder many boards report"
    return None


def placeholder_warnings(config: Config) -> list[str]:
    """`check` and `apply`: each entry bound by a placeholder serial, with what to do."""
    warnings = []
    for section, entries in (("printers", config.printers), ("cameras", config.cameras)):
        for name, entry in sorted(entries.items()):
            reason = placeholder_reason(entry.serial) if entry.serial is not None else None
            if reason is not None:
                warnings.append(
                    f"{section}.{name}.serial: {reason}: a second such board would take its place — "
                    "bind it by usb_port instead (`octobrixctl discover` shows the port)"
                )
    return warnings
