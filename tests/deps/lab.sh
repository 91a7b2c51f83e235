#!/bin/sh
# Host packages for the test lab (tests/lab): a debootstrap'd Debian rootfs booted two ways,
# systemd-nspawn (real systemd) and QEMU/TCG (real kernel, real udev, USB hotplug); socat for
# the VM's serial console (python -m tests.lab.harness shell vm).
# prometheus: a real Prometheus scrapes the front door's /metrics (tests/lab/test_metrics.py), and promtool checks it.
# openssh-client: ansible-playbook reaches the two farm PCs of tests/lab/test_ansible.py over SSH (ssh, ssh-keygen).
# Idempotent and quick when everything is present: apt-get runs only when something is missing.
set -eu

exec "$(dirname "$0")/apt-install" lab.sh systemd-container debootstrap debian-archive-keyring qemu-system-x86 e2fsprogs util-linux procps socat prometheus openssh-client
