"""The octobrix test lab: a cached Debian rootfs booted in systemd-nspawn or QEMU, and a printer simulator.

Importable without root and without the lab being built; only starting something needs either.
"""
