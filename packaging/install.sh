#!/bin/sh
# Install, upgrade or remove octobrix on Debian 12/13 or Ubuntu 22.04/24.04.
#
#   sudo packaging/install.sh                 install, or upgrade in place (run it again any time)
#   sudo packaging/install.sh --with-kmod     also build the patched uvcvideo module (several cameras per bus)
#   sudo packaging/install.sh --wheels DIR    no internet: install from a folder of wheels made elsewhere with
#                                             `pip wheel ./octobrix octoprint==1.11.8 pip setuptools wheel -w DIR`
#   sudo packaging/install.sh --uninstall     remove octobrix; keeps /etc/octobrix.toml and /var/lib/octobrix
#   sudo packaging/install.sh --uninstall --purge   remove those too
set -eu

SRC=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=/opt/octobrix
UNIT_DIR=/usr/local/lib/systemd/system
TMPFILES_DIR=/usr/local/lib/tmpfiles.d
CONFIG=/etc/octobrix.toml
PACKAGES="python3 python3-venv python3-dev gcc ustreamer"

say() { printf '%s\n' "octobrix: $*"; }
die() { printf '%s\n' "octobrix: $*" >&2; exit 1; }

mode=install
with_kmod=no
purge=no
wheels=""
while [ $# -gt 0 ]; do
    case "$1" in
        --uninstall) mode=uninstall ;;
        --purge) purge=yes ;;
        --with-kmod) with_kmod=yes ;;
        --wheels) [ $# -ge 2 ] || die "--wheels needs a folder"; wheels=$(cd "$2" && pwd); shift ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done

[ "$(id -u)" = 0 ] || die "needs root: sudo $0"
[ -d /run/systemd/system ] || die "this system does not run systemd; octobrix needs it"

missing_packages() {
    for pkg in "$@"; do
        case "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)" in
            *" installed") ;;
            *) printf '%s ' "$pkg" ;;
        esac
    done
}

install_packages() {
    missing=$(missing_packages "$@")
    [ -z "$missing" ] && return 0
    say "installing $missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=300 update -q
    # shellcheck disable=SC2086  # the list is meant to split into words
    apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends $missing
}

uninstall() {
    say "stopping octobrix and its printers"
    systemctl disable --now octobrixd.service 2>/dev/null || true
    units=$(systemctl list-units --all --plain --no-legend 'octoprint@*' 'ustreamer@*' 'mjpg-streamer@*' | awk '{print $1}')
    # shellcheck disable=SC2086
    [ -n "$units" ] && systemctl disable --now $units 2>/dev/null || true
    rm -f /etc/udev/rules.d/99-octobrix.rules /etc/sysusers.d/octobrix.conf /etc/modprobe.d/octobrix-uvcvideo.conf
    rm -f /etc/systemd/system/octoprint@*.service.d/50-octobrix.conf \
          /etc/systemd/system/ustreamer@*.service.d/50-octobrix.conf \
          /etc/systemd/system/mjpg-streamer@*.service.d/50-octobrix.conf
    rmdir /etc/systemd/system/octoprint@*.service.d /etc/systemd/system/ustreamer@*.service.d \
          /etc/systemd/system/mjpg-streamer@*.service.d 2>/dev/null || true
    rm -f "$UNIT_DIR/octoprint@.service" "$UNIT_DIR/ustreamer@.service" "$UNIT_DIR/mjpg-streamer@.service" \
          "$UNIT_DIR/octobrixd.service" "$UNIT_DIR/octobrix-config.path" "$UNIT_DIR/octobrix-config.service" \
          "$TMPFILES_DIR/octobrix.conf" /usr/local/bin/octobrixctl /usr/local/bin/octobrixd
    rm -rf "$PREFIX"
    systemctl daemon-reload
    udevadm control --reload 2>/dev/null || true
    if [ "$purge" = yes ]; then
        rm -rf /var/lib/octobrix /var/cache/octobrix "$CONFIG"
        for user in $(awk -F: '/^octobrix-/ {print $1}' /etc/passwd); do
            userdel "$user" 2>/dev/null || true
        done
        say "removed, with all printers' data and the config"
    else
        say "removed; kept $CONFIG and /var/lib/octobrix (printers' settings and files): --purge removes them"
    fi
}

if [ "$mode" = uninstall ]; then
    uninstall
    exit 0
fi

if [ -n "$wheels" ]; then
    # Everything comes as wheels: nothing is compiled here.
    PACKAGES="python3 python3-venv ustreamer"
fi
# shellcheck disable=SC2086
install_packages $PACKAGES
if [ "$with_kmod" = yes ]; then
    install_packages dkms build-essential "linux-headers-$(uname -r)"
fi

# octobrix itself lives in its own venv; upgrading replaces it in place.
if [ ! -x "$PREFIX/bin/python" ]; then
    say "creating $PREFIX"
    python3 -m venv "$PREFIX"
fi
say "installing octobrix from ${wheels:-$SRC}"
if [ -n "$wheels" ]; then
    # The folder holds octobrix's own wheel too: nothing is built here.
    "$PREFIX/bin/python" -m pip install --quiet --disable-pip-version-check --no-index --find-links "$wheels" \
        --upgrade octobrix
else
    "$PREFIX/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "$SRC"
fi
ln -sf "$PREFIX/bin/octobrixctl" /usr/local/bin/octobrixctl
ln -sf "$PREFIX/bin/octobrixd" /usr/local/bin/octobrixd

mkdir -p "$UNIT_DIR" "$TMPFILES_DIR"
for unit in "$SRC"/systemd/*.service "$SRC"/systemd/*.path; do
    [ -e "$unit" ] || continue
    install -m 0644 "$unit" "$UNIT_DIR/$(basename "$unit")"
done
install -m 0644 "$SRC/systemd/octobrix.tmpfiles" "$TMPFILES_DIR/octobrix.conf"
systemd-tmpfiles --create "$TMPFILES_DIR/octobrix.conf"
systemctl daemon-reload

if [ ! -e "$CONFIG" ]; then
    say "writing the starter config $CONFIG (a demo printer that needs no hardware)"
    install -m 0644 "$SRC/packaging/octobrix.toml" "$CONFIG.new"
    if [ -n "$wheels" ]; then
        sed -i "s|^\[octobrix\]\$|[octobrix]\nwheels = \"$wheels\"|" "$CONFIG.new"
    fi
    suggestions=$(/usr/local/bin/octobrixctl discover --toml 2>/dev/null | sed 's/^\([^#]\)/# \1/' || true)
    if [ -n "$suggestions" ]; then
        printf '\n# Found plugged in when octobrix was installed; uncomment to use:\n%s\n' "$suggestions" >>"$CONFIG.new"
    fi
    mv "$CONFIG.new" "$CONFIG"
fi

if [ "$with_kmod" = yes ]; then
    /usr/local/bin/octobrixctl kmod install
fi

say "applying $CONFIG (the first time builds each printer's OctoPrint: a few minutes)"
/usr/local/bin/octobrixctl apply
systemctl enable --now octobrixd.service octobrix-config.path

echo
/usr/local/bin/octobrixctl status || true
echo
say "installed. Edit $CONFIG to add your printers; \`sudo octobrixctl credentials\` shows the logins."
