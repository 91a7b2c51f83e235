#!/bin/sh
# Host packages for the packaging tests: shellcheck for the installer and the Debian package's
# maintainer scripts, shfmt (its syntax tree tells tests/test_declared_programs.py which programs
# they run), and pip for packaging/build-deb.sh (it gathers the package's wheels).
# Idempotent and quick when everything is present: apt-get runs only when something is missing.
set -eu

exec "$(dirname "$0")/apt-install" packaging.sh shellcheck shfmt python3-pip dpkg
