#!/bin/sh
# Host packages for the test lab (tests/lab): a debootstrap'd Debian rootfs booted two ways,
# systemd-nspawn (real systemd) and QEMU/TCG (real kernel, real udev, USB hotplug); socat for
# the VM's serial console (python -m tests.lab.harness shell vm).
# Idempotent and quick when everything is present: apt-get runs only when something is missing.
set -eu

packages="systemd-container debootstrap debian-archive-keyring qemu-system-x86 e2fsprogs util-linux procps socat"

missing=""
for pkg in $packages; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    case "$status" in
        *" installed") ;;
        *) missing="$missing $pkg" ;;
    esac
done

if [ -z "$missing" ]; then
    exit 0
fi

echo "lab.sh: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
# A fresh machine may have stale or empty package lists; refresh only when we must install.
# Other deps scripts (or a person) may hold the dpkg lock: wait for it instead of failing.
apt-get -o DPkg::Lock::Timeout=600 update -q
# shellcheck disable=SC2086  # word splitting of the package list is intended
apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends $missing
