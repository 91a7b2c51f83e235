#!/bin/sh
# Host setup for tests/test_kmod.py: DKMS and Debian's 6.1 headers and sources, to build the
# patched uvcvideo for real; plus the uvc driver sources of every other kernel series Debian's
# archive offers (bullseye's 5.10 to sid's newest), to check that the patch applies to each.
# Idempotent and quick when everything is present: apt-get runs only when something is missing,
# and the other series are fetched once into a cache outside the repository.
set -eu

"$(dirname "$0")/apt-install" kmod.sh dkms build-essential linux-headers-amd64 linux-source-6.1 kmod patch xz-utils bzip2

# --- uvc sources of the other series -----------------------------------------------------------
# A private apt configuration reaches the other suites without touching the host's sources or
# package lists. Only drivers/media/usb/uvc/ of each linux-source-X.Y is kept (about 1 MB each).
cache=${OCTOBRIX_UVC_CACHE:-/var/cache/octobrix-tests/uvc-sources}
[ -f "$cache/.complete" ] && exit 0

work=$(mktemp -d /var/tmp/octobrix-uvc-sources.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/archives/partial" "$cache"
: >"$work/status"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
for suite in bullseye bullseye-security bookworm-backports trixie trixie-backports sid; do
    case $suite in
        *-security) url=http://deb.debian.org/debian-security ;;
        *) url=http://deb.debian.org/debian ;;
    esac
    echo "deb [signed-by=$keyring] $url $suite main"
done >"$work/sources.list"
cat >"$work/apt.conf" <<EOF
Dir::Etc::SourceList "$work/sources.list";
Dir::Etc::SourceParts "/dev/null";
Dir::State::Lists "$work/lists";
Dir::State::status "$work/status";
Dir::Cache "$work";
Dir::Cache::archives "$work/archives";
Acquire::Languages "none";
EOF
export APT_CONFIG="$work/apt.conf"
# A suite that has left the mirror only shrinks the set; what was fetched still counts.
apt-get update -q >"$work/update.log" 2>&1 || echo "kmod.sh: some suites could not be fetched (see above)" >&2

names=$(apt-cache search --names-only '^linux-source-[0-9]+\.[0-9]+$' | cut -d' ' -f1 | sort -V)
[ -n "$names" ] || { echo "kmod.sh: no linux-source-X.Y found in Debian's archive" >&2; exit 1; }
fetched=0
for name in $names; do
    series=${name#linux-source-}
    [ "$series" = 6.1 ] && continue # the host's own linux-source-6.1 is tested from /usr/src
    [ -f "$cache/$series/drivers/media/usb/uvc/uvc_video.c" ] && { fetched=$((fetched + 1)); continue; }
    echo "kmod.sh: fetching the uvc sources of $name" >&2
    (cd "$work/archives" && apt-get download -q "$name" >/dev/null 2>&1) || {
        echo "kmod.sh: could not download $name" >&2
        continue
    }
    deb=$(ls "$work/archives/${name}_"*.deb)
    rm -rf "$cache/$series.tmp"
    mkdir -p "$cache/$series.tmp"
    dpkg-deb --fsys-tarfile "$deb" | tar -xO "./usr/src/$name.tar.xz" |
        tar -xJ -C "$cache/$series.tmp" --strip-components=1 --wildcards '*/drivers/media/usb/uvc/*'
    dpkg-deb -f "$deb" Version >"$cache/$series.tmp/VERSION"
    rm -rf "$cache/$series"
    mv "$cache/$series.tmp" "$cache/$series"
    rm -f "$deb"
    fetched=$((fetched + 1))
done
[ "$fetched" -gt 0 ] || { echo "kmod.sh: could not fetch any other kernel series" >&2; exit 1; }
touch "$cache/.complete"
