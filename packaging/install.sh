#!/bin/sh
# Install, upgrade or remove octobrix on Debian 12/13 or Ubuntu 22.04/24.04.
#
#   sudo packaging/install.sh                 install, or upgrade in place (run it again any time)
#   sudo packaging/install.sh --with-kmod     also build the patched uvcvideo module (several cameras per bus)
#   sudo packaging/install.sh --wheels DIR    no internet: install from a folder of wheels made elsewhere with
#                                             `pip wheel ./octobrix octoprint==1.11.8 pip setuptools wheel -w DIR`
#   sudo packaging/install.sh --uninstall     remove octobrix; keeps /etc/octobrix.toml and /var/lib/octobrix
#   sudo packaging/install.sh --uninstall --purge   remove those too
#
# Running it again with the same checkout changes nothing: files are only written when their
# content differs, and nothing running is restarted unless octobrix itself was upgraded.
#
# What apt and pip print goes to /var/log/octobrix-install.log (root only); the terminal shows
# octobrix's own lines, and a failure ends with one line saying what failed and where the log is.
set -eu

SRC=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=/opt/octobrix
UNIT_DIR=/usr/local/lib/systemd/system
TMPFILES_DIR=/usr/local/lib/tmpfiles.d
MODULES_DIR=/usr/local/lib/modules-load.d
BIN_DIR=/usr/local/bin
CONFIG=/etc/octobrix.toml
LOG=/var/log/octobrix-install.log
# What the venv in $PREFIX was installed from: a second run with the same source skips pip.
STAMP=$PREFIX/.octobrix-installed
PACKAGES="python3 python3-venv python3-dev gcc ustreamer kmod udev v4l-utils nginx openssl"
UNITS="octoprint@.service ustreamer@.service mjpg-streamer@.service octobrixd.service octobrix-config.path octobrix-config.service octobrix-failed@.service octobrix-backup.service octobrix-backup.timer octobrix-web.socket octobrix-web.service"

say() { printf '%s\n' "octobrix: $*"; }
reported=no
die() {
    printf '%s\n' "octobrix: $*" >&2
    reported=yes
    exit 1
}

# fail WHAT: a tool run by logged failed. Its last lines, then one line of ours, last.
fail() {
    if [ -s "$LOG" ]; then
        printf '%s\n' "  (the last lines of $LOG:)" >&2
        tail -n 15 "$LOG" | sed 's/^/  | /' >&2
    fi
    die "$1 failed; all it printed is in $LOG"
}

# logged WHAT COMMAND...: run a tool (apt, pip) with its output in the log, not on the terminal.
logged() {
    what=$1
    shift
    printf '\n$ %s\n' "$*" >>"$LOG"
    "$@" >>"$LOG" 2>&1 </dev/null || fail "$what"
}

build=""
on_exit() {
    status=$?
    [ -n "$build" ] && rm -rf "$build"
    if [ "$status" != 0 ] && [ "$reported" = no ]; then
        printf '%s\n' "octobrix: stopped by an unexpected error (exit status $status); the tools' output is in $LOG" >&2
    fi
}

mode=install
with_kmod=no
purge=no
wheels=""
while [ $# -gt 0 ]; do
    case "$1" in
        --uninstall) mode=uninstall ;;
        --purge) purge=yes ;;
        --with-kmod) with_kmod=yes ;;
        --wheels)
            [ $# -ge 2 ] || die "--wheels needs a folder"
            [ -d "$2" ] || die "--wheels $2: no such folder (hint: make it on a computer with internet, see --help)"
            wheels=$(cd "$2" && pwd)
            shift
            ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
    shift
done

[ "$(id -u)" = 0 ] || die "needs root: sudo $0"
[ -d /run/systemd/system ] || die "this system does not run systemd; octobrix needs it"
command -v apt-get >/dev/null 2>&1 || die "this installer is for Debian and Ubuntu (it needs apt-get)"

# One log per run, readable by root only (apt's and pip's output can name local paths and sources).
(umask 077 && : >"$LOG")
chmod 0600 "$LOG"
printf 'octobrix install.sh %s, %s\n' "$*" "$(date)" >>"$LOG"
trap on_exit EXIT

os_id=unknown
os_name="this system"
if [ -r /etc/os-release ]; then
    # shellcheck disable=SC1091  # the running system's file
    os_id=$(. /etc/os-release && printf '%s' "${ID:-unknown}")
    # shellcheck disable=SC1091
    os_name=$(. /etc/os-release && printf '%s' "${PRETTY_NAME:-this system}")
fi

case "$(dpkg-query -W -f='${Status}' octobrix 2>/dev/null || true)" in
    *" installed")
        if [ "$mode" = uninstall ]; then
            die "octobrix is installed from its Debian package here: remove it with \`sudo apt remove octobrix\` (\`apt purge\` also removes the config and the printers' data)"
        fi
        die "octobrix is installed from its Debian package here: upgrade it with \`sudo apt install ./octobrix_VERSION_ARCH.deb\` (see packaging/build-deb.sh), or \`sudo apt remove octobrix\` first to use this script"
        ;;
esac

missing_packages() {
    for pkg in "$@"; do
        case "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)" in
            *" installed") ;;
            *) printf '%s ' "$pkg" ;;
        esac
    done
}

# install_packages HINT PACKAGE...: HINT is added to the message when apt does not offer one of them.
install_packages() {
    hint=$1
    shift
    missing=$(missing_packages "$@")
    [ -z "$missing" ] && return 0
    export DEBIAN_FRONTEND=noninteractive
    # apt-get update only warns about a source it cannot reach; remember it for the message below.
    update_log=$(mktemp /tmp/octobrix-apt.XXXXXX)
    say "updating apt's package lists (its output: $LOG)"
    printf '\n$ apt-get update\n' >>"$LOG"
    apt-get -o DPkg::Lock::Timeout=300 update -q >>"$LOG" 2>"$update_log" </dev/null || true
    cat "$update_log" >>"$LOG"
    update_failed=no
    grep -q '^[WE]:' "$update_log" && update_failed=yes
    warnings=$(grep '^[WE]:' "$update_log" | tail -n 5 || true)
    rm -f "$update_log"
    unavailable=""
    for pkg in $missing; do
        case "$(apt-cache policy "$pkg" 2>/dev/null | sed -n 's/^ *Candidate: *//p')" in
            "" | "(none)") unavailable="$unavailable $pkg" ;;
        esac
    done
    if [ -n "$unavailable" ]; then
        advice=""
        if [ "$update_failed" = yes ]; then
            printf '%s\n' "$warnings" | sed 's/^/  | /' >&2
            advice="apt could not reach all of its package sources (its warnings above, all of it in $LOG): check the network, then run this again."
        elif [ "$os_id" = ubuntu ]; then
            advice="On Ubuntu they come from the \"universe\" component: sudo add-apt-repository universe, then run this again."
        fi
        die "the package sources of $os_name do not offer:$unavailable. $advice${hint:+ $hint}"
    fi
    say "installing $missing"
    # shellcheck disable=SC2086  # the list is meant to split into words
    logged "installing $missing with apt-get" apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends $missing
}

# new_enough PYTHON: octobrix runs on Python 3.11 or newer (each printer's OctoPrint uses the system's python3).
new_enough() {
    [ -x "$1" ] && "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
}

python_version() {
    "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true
}

# install_file SRC DEST: copy only when the content differs, so a second run leaves files and
# their times alone. Prints DEST when it was written.
install_file() {
    if ! cmp -s "$1" "$2"; then
        install -m 0644 "$1" "$2"
        printf '%s\n' "$2"
    fi
}

pip_offline() {
    logged "installing octobrix from the wheels in $wheels" \
        "$PREFIX/bin/python" -m pip install --disable-pip-version-check --no-index --find-links "$wheels" "$@"
}

link_file() {
    [ "$(readlink "$2" 2>/dev/null || true)" = "$1" ] || ln -sfn "$1" "$2"
}

# source_id: identifies what octobrix would be installed from (the checkout's files or the wheels).
source_id() {
    if [ -n "$wheels" ]; then
        (cd "$wheels" && find . -maxdepth 1 -name '*.whl' -exec sha256sum {} + | LC_ALL=C sort -k2)
    else
        (cd "$SRC" && find pyproject.toml README.md octobrixd -type f ! -name '*.pyc' ! -path '*/__pycache__/*' \
            -exec sha256sum {} + | LC_ALL=C sort -k2)
    fi | sha256sum | cut -d' ' -f1
}

uninstall() {
    say "stopping octobrix and its printers"
    systemctl disable --now octobrixd.service octobrix-config.path octobrix-backup.timer octobrix-web.socket octobrix-web.service 2>/dev/null || true
    units=$(systemctl list-units --all --plain --no-legend 'octoprint@*' 'ustreamer@*' 'mjpg-streamer@*' | awk '{print $1}')
    # Enabled instances that are not loaded right now (stopped by hand) are still linked.
    links=$(find /etc/systemd/system -path '*.wants/*' \( -name 'octoprint@*' -o -name 'ustreamer@*' \
        -o -name 'mjpg-streamer@*' \) -printf '%f\n' 2>/dev/null | sort -u)
    if [ -n "$units$links" ]; then
        # shellcheck disable=SC2086  # one word per unit
        systemctl disable --now $units $links 2>/dev/null || true
    fi
    rm -f /etc/udev/rules.d/99-octobrix.rules /etc/sysusers.d/octobrix.conf /etc/modprobe.d/octobrix-uvcvideo.conf
    # The front door goes; nginx and the user's own sites stay (Debian's default site is not put back).
    if [ -e /etc/nginx/conf.d/octobrix.conf ]; then
        rm -f /etc/nginx/conf.d/octobrix.conf
        systemctl reload nginx.service 2>/dev/null || true
    fi
    rm -f /etc/systemd/system/octoprint@*.service.d/50-octobrix.conf \
          /etc/systemd/system/ustreamer@*.service.d/50-octobrix.conf \
          /etc/systemd/system/mjpg-streamer@*.service.d/50-octobrix.conf \
          /etc/systemd/system/octobrix-backup.timer.d/50-octobrix.conf
    rmdir /etc/systemd/system/octoprint@*.service.d /etc/systemd/system/ustreamer@*.service.d \
          /etc/systemd/system/mjpg-streamer@*.service.d /etc/systemd/system/octobrix-backup.timer.d 2>/dev/null || true
    # It lists the generated files just removed: without it, an install later writes them all
    # again and starts every printer, as the first time.
    rm -f /var/lib/octobrix/.manifest.json
    for unit in $UNITS; do
        rm -f "$UNIT_DIR/$unit"
    done
    rm -f "$TMPFILES_DIR/octobrix.conf" "$MODULES_DIR/octobrix.conf" "$BIN_DIR/octobrixctl" "$BIN_DIR/octobrixd" "$BIN_DIR/octobrix-web"
    # The program and its download cache (every OctoPrint venv holds its own copy of the files).
    rm -rf "$PREFIX" /var/cache/octobrix
    systemctl daemon-reload
    udevadm control --reload 2>/dev/null || true
    if [ "$purge" = yes ]; then
        rm -rf /var/lib/octobrix /var/lib/octobrix-web "$CONFIG"
        awk -F: '/^octobrix-/ {print $1}' /etc/passwd | while read -r user; do
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

# --- system packages ---------------------------------------------------------------------------
PYTHON=/usr/bin/python3
python_hint=""
if [ -x /usr/bin/python3 ] && ! new_enough /usr/bin/python3; then
    # Ubuntu 22.04: python3 is 3.10. Its universe component has python3.11 (jammy-updates), which
    # runs octobrix itself; each printer's OctoPrint keeps using python3 (OctoPrint supports 3.7+).
    PYTHON=/usr/bin/python3.11
    PACKAGES="$PACKAGES python3.11 python3.11-venv"
    python_hint="(octobrix needs Python 3.11 or newer and python3 here is $(python_version /usr/bin/python3), so it needs python3.11, which Ubuntu 22.04 has in universe. Supported: Debian 12 and 13, Ubuntu 22.04 and 24.04.)"
fi
if [ -n "$wheels" ]; then
    # Everything comes as wheels: nothing is compiled here.
    PACKAGES=$(printf '%s\n' "$PACKAGES" | sed 's/ python3-dev gcc//')
fi
# shellcheck disable=SC2086
install_packages "$python_hint" $PACKAGES
if [ "$with_kmod" = yes ]; then
    install_packages "" dkms build-essential "linux-headers-$(uname -r)"
fi
new_enough "$PYTHON" || die "octobrix needs Python 3.11 or newer; $os_name has $(python_version "$PYTHON"). Supported: Debian 12 and 13, Ubuntu 22.04 (with python3.11 from universe) and 24.04."

# --- octobrix itself, in its own venv -------------------------------------------------------------
want_python=$(python_version "$PYTHON")
if [ -e "$PREFIX" ] && [ "$(python_version "$PREFIX/bin/python")" != "$want_python" ]; then
    # The system's Python changed (a release upgrade) or the venv is broken: build it again.
    say "rebuilding $PREFIX for Python $want_python"
    rm -rf "$PREFIX"
fi
upgraded=no
if [ ! -x "$PREFIX/bin/python" ]; then
    say "creating $PREFIX (Python $want_python)"
    logged "creating $PREFIX" "$PYTHON" -m venv "$PREFIX"
fi
want="$(source_id) python$want_python"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$want" ]; then
    say "installing octobrix from ${wheels:-$SRC} (pip's output: $LOG)"
    rm -f "$STAMP"
    if [ -n "$wheels" ]; then
        # The folder holds octobrix's own wheel too: nothing is built here.
        pip_offline --upgrade octobrix
        # Same version number, other contents (a rebuilt wheel): replace octobrix itself only.
        pip_offline --force-reinstall --no-deps octobrix
    else
        # Built from a copy, so the checkout gets no root-owned build/ or egg-info folders.
        build=$(mktemp -d /tmp/octobrix-build.XXXXXX)
        cp -R "$SRC/pyproject.toml" "$SRC/README.md" "$SRC/octobrixd" "$build/"
        # pip always reinstalls a project given as a folder; --upgrade updates only what it needs.
        logged "installing octobrix and the Python packages it needs (from PyPI)" \
            "$PREFIX/bin/python" -m pip install --disable-pip-version-check --upgrade "$build"
        rm -rf "$build"
        build=""
    fi
    printf '%s\n' "$want" >"$STAMP"
    upgraded=yes
else
    say "octobrix in $PREFIX is already this version"
fi
link_file "$PREFIX/bin/octobrixctl" "$BIN_DIR/octobrixctl"
link_file "$PREFIX/bin/octobrixd" "$BIN_DIR/octobrixd"
link_file "$PREFIX/bin/octobrix-web" "$BIN_DIR/octobrix-web"

# --- units and tmpfiles -------------------------------------------------------------------------
mkdir -p "$UNIT_DIR" "$TMPFILES_DIR" "$MODULES_DIR"
changed_units=""
updated_units=""
for unit in $UNITS; do
    existed=no
    [ -e "$UNIT_DIR/$unit" ] && existed=yes
    if [ -n "$(install_file "$SRC/systemd/$unit" "$UNIT_DIR/$unit")" ]; then
        changed_units="$changed_units $unit"
        [ "$existed" = yes ] && updated_units="$updated_units $unit"
    fi
done
install_file "$SRC/systemd/octobrix.tmpfiles" "$TMPFILES_DIR/octobrix.conf" >/dev/null
install_file "$SRC/systemd/octobrix.modules-load" "$MODULES_DIR/octobrix.conf" >/dev/null
systemd-tmpfiles --create "$TMPFILES_DIR/octobrix.conf"
if [ -n "$changed_units" ]; then
    systemctl daemon-reload
fi

# --- the config: written once, never overwritten ------------------------------------------------
if [ ! -e "$CONFIG" ]; then
    say "writing the starter config $CONFIG (a demo printer that needs no hardware)"
    install -m 0644 "$SRC/packaging/octobrix.toml" "$CONFIG.new"
    if [ -n "$wheels" ]; then
        sed -i "s|^\[octobrix\]\$|[octobrix]\nwheels = \"$wheels\"|" "$CONFIG.new"
    fi
    suggestions=$("$BIN_DIR/octobrixctl" discover --toml 2>/dev/null | sed 's/^\([^#]\)/# \1/' || true)
    if [ -n "$suggestions" ]; then
        printf '\n# Found plugged in when octobrix was installed; uncomment to use:\n%s\n' "$suggestions" >>"$CONFIG.new"
    fi
    mv "$CONFIG.new" "$CONFIG"
fi

if [ "$with_kmod" = yes ]; then
    "$BIN_DIR/octobrixctl" kmod install || die "building the patched uvcvideo module failed (see above)"
fi

# --- the front door: nginx serves the farm on port 80 -------------------------------------------
# Debian's own "Welcome to nginx" site also claims port 80 as the default server. It is switched
# off only while it is Debian's unchanged file (its link in sites-enabled is removed; the file
# stays in sites-available); a default site the user edited, or any other site, is left alone.
debian_default=/etc/nginx/sites-enabled/default
if [ "$(readlink "$debian_default" 2>/dev/null || true)" = /etc/nginx/sites-available/default ]; then
    shipped=$(dpkg-query -W -f='${Conffiles}\n' nginx-common 2>/dev/null | awk '$1 == "/etc/nginx/sites-available/default" {print $2}')
    if [ -n "$shipped" ] && [ "$(md5sum </etc/nginx/sites-available/default | cut -d' ' -f1)" = "$shipped" ]; then
        say "switching off nginx's unchanged default site (octobrix's front door takes port 80)"
        rm -f "$debian_default"
    fi
fi
systemctl is-enabled --quiet nginx.service 2>/dev/null || systemctl enable --quiet nginx.service
systemctl is-enabled --quiet octobrix-web.socket 2>/dev/null || systemctl enable --quiet octobrix-web.socket
systemctl is-active --quiet octobrix-web.socket || systemctl start octobrix-web.socket

say "applying $CONFIG (the first time builds each printer's OctoPrint: a minute or two)"
"$BIN_DIR/octobrixctl" apply || die "applying $CONFIG failed (see above); fix that, then run this again"

for unit in octobrixd.service octobrix-config.path; do
    systemctl is-enabled --quiet "$unit" 2>/dev/null || systemctl enable --quiet "$unit"
    if ! systemctl is-active --quiet "$unit"; then
        systemctl start "$unit"
    elif [ "$unit" = octobrixd.service ] && [ "$upgraded" = yes ]; then
        # The new octobrix takes over; the printers' OctoPrints keep running (KillMode=process).
        systemctl restart "$unit"
    else
        case "$updated_units " in
            *" $unit "*) systemctl restart "$unit" ;;
        esac
    fi
done
# A new octobrix (or unit) for the web service: it starts again on nginx's next request.
if [ "$upgraded" = yes ] || case "$updated_units " in *" octobrix-web.service "*) true ;; *) false ;; esac; then
    systemctl try-restart octobrix-web.service
fi
templates=""
for unit in $updated_units; do
    case "$unit" in *@.service) templates="$templates $unit" ;; esac
done
if [ -n "$templates" ] &&
    [ -n "$(systemctl list-units --plain --no-legend --state=active 'octoprint@*' 'ustreamer@*' 'mjpg-streamer@*')" ]; then
    say "updated$templates; running printers and cameras use it from their next restart (\`sudo systemctl restart octoprint@NAME\` when it is not printing)"
fi

echo
# A first start of OctoPrint takes a little while: the table waits (two minutes at most) until
# each one answers, so it says what every printer is doing.
"$BIN_DIR/octobrixctl" status --wait 120 || true
echo
# octobrixctl says where: the front door with its port, or each printer's own port with it off.
say "installed. Open in a browser (\`sudo octobrixctl credentials\` shows the logins first):"
"$BIN_DIR/octobrixctl" url || true
say "to add printers and cameras: plug them in, then \`sudo octobrixctl add --all\` (no config to type; $CONFIG is applied whenever you save it)."
