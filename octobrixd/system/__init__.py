"""The system boundary: running programs, /proc, systemctl, udevadm, atomic files, paths, loopback HTTP."""
