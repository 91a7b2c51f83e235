#!/bin/sh
# Host packages the device tests use: umockdev (a fake sysfs/udev that discovery reads as if
# the recorded printers and cameras were plugged in) with its GObject bindings for Debian's
# Python, v4l-utils (v4l2-ctl, the camera format query discovery runs for real), and strace
# (the test that proves discovery never opens a serial port).
# Idempotent and quick when everything is present: apt-get runs only when something is missing.
set -eu

packages="umockdev gir1.2-umockdev-1.0 python3-gi v4l-utils strace"

missing=""
for pkg in $packages; do
    case "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)" in
        *" installed") ;;
        *) missing="$missing $pkg" ;;
    esac
done
[ -z "$missing" ] && exit 0

echo "devices.sh: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
# Other deps scripts (or a person) may hold the dpkg lock: wait for it instead of failing.
apt-get -o DPkg::Lock::Timeout=600 update -q
# shellcheck disable=SC2086  # word splitting of the package list is intended
apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends $missing
