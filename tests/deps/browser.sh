#!/bin/sh
# Host packages for the farm overview's browser test (tests/lab/test_overview_browser.py):
# Debian's chromium, run headless, and its chromedriver, which Selenium (the test extras) drives.
# Idempotent and quick when everything is present: apt-get runs only when something is missing.
set -eu

exec "$(dirname "$0")/apt-install" browser.sh chromium chromium-driver fonts-dejavu-core
