#!/bin/sh
# Build octobrix's Debian package from this checkout:
#
#   packaging/build-deb.sh [--out DIR]         writes DIR/octobrix_VERSION-1_ARCH.deb (default DIR: dist/)
#
# Then, on the farm computer (Debian 12/13, Ubuntu 24.04): sudo apt install ./octobrix_*.deb
#
# The package holds octobrix and every Python package it needs as wheels, for each Python those
# releases ship (3.11, 3.12, 3.13), so installing it needs no PyPI; only each printer's OctoPrint
# comes from PyPI when it is first set up. Building needs python3 with pip, dpkg-deb, and PyPI.
# The wheels are compiled for this machine's architecture, so is the package.
set -eu

SRC=$(cd "$(dirname "$0")/.." && pwd)
OUT=$SRC/dist
# Debian 12, Ubuntu 24.04, Debian 13. (Ubuntu 22.04's python3 is 3.10: use install.sh there.)
PYTHONS="3.11 3.12 3.13"
# The oldest C library among those releases is Debian 12's glibc 2.36: no wheel may need a newer one.
GLIBC_MINORS="5 12 17 24 26 27 28 31 34 35 36"

die() { printf '%s\n' "build-deb: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --out) [ $# -ge 2 ] || die "--out needs a folder"; OUT=$2; shift ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done

command -v dpkg-deb >/dev/null 2>&1 || die "dpkg-deb is missing: sudo apt-get install dpkg"
python3 -m pip --version >/dev/null 2>&1 || die "pip is missing: sudo apt-get install python3-pip"

arch=$(dpkg --print-architecture)
case "$arch" in
    amd64) machine=x86_64 ;;
    arm64) machine=aarch64 ;;
    *) die "no prebuilt wheels for $arch; use packaging/install.sh on this machine" ;;
esac
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$SRC/pyproject.toml" | head -n 1)
[ -n "$version" ] || die "no version in pyproject.toml"
# The dependencies, one per line, as pyproject.toml lists them.
dependencies=$(sed -n '/^dependencies = \[/,/^\]/p' "$SRC/pyproject.toml" | sed -n 's/^ *"\([^"]*\)".*/\1/p')

work=$(mktemp -d /tmp/octobrix-deb.XXXXXX)
trap 'rm -rf "$work"' EXIT
root=$work/root
wheels=$root/usr/share/octobrix/wheels
mkdir -p "$wheels" "$root/DEBIAN" "$root/usr/lib/systemd/system" "$root/usr/lib/tmpfiles.d" \
    "$root/usr/lib/modules-load.d" "$root/usr/bin" "$root/usr/share/doc/octobrix"

# octobrix itself, built from a copy so the checkout gets no build/ or egg-info folders.
mkdir "$work/src"
cp -R "$SRC/pyproject.toml" "$SRC/README.md" "$SRC/octobrixd" "$work/src/"
python3 -m pip wheel --quiet --disable-pip-version-check --no-deps --wheel-dir "$wheels" "$work/src"

platforms=""
for minor in $GLIBC_MINORS; do
    platforms="$platforms --platform manylinux_2_${minor}_$machine"
done
for python in $PYTHONS; do
    echo "build-deb: wheels for Python $python"
    # shellcheck disable=SC2086  # one word per option and per requirement
    python3 -m pip download --quiet --disable-pip-version-check --only-binary=:all: --implementation cp \
        --python-version "$python" $platforms --dest "$wheels" $dependencies
done

install -m 0644 "$SRC"/systemd/*.service "$SRC"/systemd/*.path "$SRC"/systemd/*.timer "$SRC"/systemd/*.socket "$root/usr/lib/systemd/system/"
install -m 0644 "$SRC/systemd/octobrix.tmpfiles" "$root/usr/lib/tmpfiles.d/octobrix.conf"
install -m 0644 "$SRC/systemd/octobrix.modules-load" "$root/usr/lib/modules-load.d/octobrix.conf"
install -m 0644 "$SRC/packaging/octobrix.toml" "$root/usr/share/octobrix/octobrix.toml"
install -m 0644 "$SRC/README.md" "$root/usr/share/doc/octobrix/README.md"
# The reference the README links to, beside it as in the repository.
install -d "$root/usr/share/doc/octobrix/docs"
install -m 0644 "$SRC"/docs/*.md "$root/usr/share/doc/octobrix/docs/"
printf '%s\n' "octobrix: run a farm of 3D printers from one Linux computer" \
    "License: AGPL-3.0-or-later, https://www.gnu.org/licenses/agpl-3.0.html" >"$root/usr/share/doc/octobrix/copyright"
# The programs live in the venv that postinst makes from the wheels.
ln -s /opt/octobrix/bin/octobrixctl "$root/usr/bin/octobrixctl"
ln -s /opt/octobrix/bin/octobrixd "$root/usr/bin/octobrixd"

for script in preinst postinst prerm postrm; do
    install -m 0755 "$SRC/packaging/debian/$script" "$root/DEBIAN/$script"
done
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version-1/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
    "$SRC/packaging/debian/control.in" >"$root/DEBIAN/control"

mkdir -p "$OUT"
deb="$OUT/octobrix_${version}-1_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "build-deb: $deb ($(du -h "$deb" | cut -f1)); install it with: sudo apt install $deb"
