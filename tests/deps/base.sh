#!/bin/sh
# Host packages the unit tests use: systemd's own checkers (systemd-analyze verify,
# systemd-sysusers), the real ustreamer binary the camera units start, and util-linux's
# unshare for the private mount namespace the unit check runs in.
# Idempotent and quick when everything is present: apt-get runs only when something is missing.
set -eu

packages="systemd ustreamer util-linux python3-venv python3-dev gcc"

missing=""
for pkg in $packages; do
    case "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)" in
        *" installed") ;;
        *) missing="$missing $pkg" ;;
    esac
done
[ -z "$missing" ] && exit 0

echo "base.sh: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 update -q
# shellcheck disable=SC2086  # word splitting of the package list is intended
apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends $missing
