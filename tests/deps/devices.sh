#!/bin/sh
# Host packages the device tests use: umockdev (a fake sysfs/udev that discovery reads as if
# the recorded printers and cameras were plugged in) with its GObject bindings for Debian's
# Python, v4l-utils (v4l2-ctl, the camera format query discovery runs for real), and strace
# (the test that proves discovery never opens a serial port).
# Idempotent and quick when everything is present: apt-get runs only when something is missing.
set -eu

exec "$(dirname "$0")/apt-install" devices.sh umockdev gir1.2-umockdev-1.0 python3-gi v4l-utils strace
