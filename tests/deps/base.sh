#!/bin/sh
# Host packages the unit tests use: systemd's own checkers (systemd-analyze verify,
# systemd-sysusers), the real ustreamer binary the camera units start, and util-linux's
# unshare for the private mount namespace the unit check runs in; nginx, whose own `nginx -t`
# checks the front door config octobrix renders.
# Idempotent and quick when everything is present: apt-get runs only when something is missing.
set -eu

exec "$(dirname "$0")/apt-install" base.sh systemd ustreamer util-linux nginx python3-venv python3-dev gcc
