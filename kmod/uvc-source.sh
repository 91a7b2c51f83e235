#!/bin/sh
# Find the uvcvideo sources for one kernel and copy them out, so that only that driver is built.
#
#   uvc-source.sh locate KVER          print the tree or tarball the sources would come from
#   uvc-source.sh extract KVER DEST    put drivers/media/usb/uvc/ of that source under DEST
#
# Where it looks, first match wins (X.Y is the kernel series of KVER, e.g. 6.1 for 6.1.0-56-amd64):
#   1. $UVC_SRC                                       a kernel tree or tarball named explicitly
#   2. /lib/modules/KVER/source                       a self-built kernel's own tree
#   3. /usr/src/linux-source-X.Y.tar.*                Debian's linux-source-X.Y package
#      /usr/src/linux-source-X.Y.Z/*.tar.*            Ubuntu's linux-source-X.Y.Z package
#      /usr/src/linux-hwe-X.Y-source-X.Y.Z/*.tar.*    Ubuntu's HWE kernel sources
#   4. /usr/src/linux-X.Y*/  /usr/src/linux-X.Y*.tar.*  an unpacked tree (apt-get source) or a
#                                                     kernel.org tarball of the same series
# The source must be of the same X.Y series as KVER; a newer point release of that series is fine
# (the driver's own headers travel with it, and the kernel's headers come from KVER's build tree).
# OCTOBRIX_ROOT prefixes every path (for tests).
set -eu

UVC=drivers/media/usb/uvc
ROOT=${OCTOBRIX_ROOT:-}
SRCDIR=$ROOT/usr/src

die() {
    printf 'octobrix-uvcvideo: %s\n' "$1" >&2
    shift
    [ $# -eq 0 ] || printf '%s\n' "$@" >&2
    exit 1
}

# 6.1.0-56-amd64 -> 6.1; 5.4.0-150-generic -> 5.4
series_of() {
    printf '%s\n' "$1" | sed -n 's/^\([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p'
}

# 5.4.0-150-generic -> 5.4.0 (Ubuntu names its source packages after this)
base_of() {
    printf '%s\n' "$1" | sed -n 's/^\([0-9][0-9]*\.[0-9][0-9]*\(\.[0-9][0-9]*\)\{0,1\}\).*/\1/p'
}

# Is version string $1 (e.g. "6.1", "6.1.55", "5.4.0", "6.1-rc3") of series $2? "6.12" is not "6.1".
in_series() {
    case "$1" in
        "$2" | "$2".* | "$2"-* | "$2"+* | "$2"~*) return 0 ;;
    esac
    return 1
}

# Version part of a name such as linux-source-6.1.tar.xz, linux-6.1.55, linux-hwe-5.15-source-5.15.0.
version_of() {
    name=${1##*/}
    name=${name%.tar.*}
    case "$name" in
        *-source-*) printf '%s\n' "${name##*-source-}" ;;
        linux-*) printf '%s\n' "${name#linux-}" ;;
        *) printf '\n' ;;
    esac
}

is_tree() {
    [ -f "$1/$UVC/uvc_video.c" ]
}

is_tarball() {
    case "$1" in
        *.tar.xz | *.tar.bz2 | *.tar.gz | *.tar.zst) [ -f "$1" ] ;;
        *) return 1 ;;
    esac
}

# Every existing path matching the glob patterns given, newest version first.
newest_first() {
    for pattern in "$@"; do
        # shellcheck disable=SC2086  # the pattern must glob
        for path in $pattern; do
            [ -e "$path" ] && printf '%s\n' "$path"
        done
    done | sort -r -V -u
}

# Candidates in priority order, one per line.
candidates() {
    kver=$1
    series=$2
    if [ -n "${UVC_SRC:-}" ]; then
        printf '%s\n' "$UVC_SRC"
        return 0
    fi
    printf '%s\n' "$ROOT/lib/modules/$kver/source"
    for path in $(newest_first "$SRCDIR/linux-source-*.tar.*"); do
        in_series "$(version_of "$path")" "$series" && printf '%s\n' "$path"
    done
    for dir in $(newest_first "$SRCDIR/linux-source-*" "$SRCDIR/linux-*-source-*"); do
        [ -d "$dir" ] || continue
        in_series "$(version_of "$dir")" "$series" || continue
        printf '%s\n' "$dir"
        newest_first "$dir/*.tar.*"
    done
    for path in $(newest_first "$SRCDIR/linux-[0-9]*"); do
        in_series "$(version_of "$path")" "$series" && printf '%s\n' "$path"
    done
    return 0
}

locate() {
    kver=$1
    series=$(series_of "$kver")
    [ -n "$series" ] || die "cannot tell the kernel series of '$kver'"
    # One candidate per line: split on newlines only.
    IFS='
'
    for candidate in $(candidates "$kver" "$series"); do
        if is_tree "$candidate" || is_tarball "$candidate"; then
            printf '%s\n' "$candidate"
            return 0
        fi
    done
    if [ -n "${UVC_SRC:-}" ]; then
        die "UVC_SRC=$UVC_SRC is neither a kernel tree with $UVC/ nor a kernel tarball"
    fi
    base=$(base_of "$kver")
    die "no uvcvideo sources for kernel $kver (series $series) in $SRCDIR or $ROOT/lib/modules/$kver/source." \
        "Install the sources of your kernel series, then run 'octobrixctl kmod install' again:" \
        "  Debian:  apt-get install linux-source-$series" \
        "  Ubuntu:  apt-get install linux-source-$base   (HWE kernels: linux-hwe-$series-source-$base)" \
        "  other:   put a kernel.org tarball linux-$series.N.tar.xz, or a kernel tree unpacked with" \
        "           'apt-get source', in $SRCDIR/; or set UVC_SRC=/path/to/tree-or-tarball"
}

extract() {
    kver=$1
    dest=$2
    source=$(locate "$kver")
    mkdir -p "$dest/$UVC"
    if is_tree "$source"; then
        cp -R "$source/$UVC/." "$dest/$UVC/"
    else
        # Every kernel tarball has one top directory (linux-source-6.1/, linux-6.1.55/): drop it.
        tar -xf "$source" -C "$dest" --strip-components=1 --wildcards "*/$UVC/*" ||
            die "could not extract $UVC/ from $source"
    fi
    is_tree "$dest" || die "$source has no $UVC/uvc_video.c"
    printf 'octobrix-uvcvideo: uvcvideo sources for %s taken from %s\n' "$kver" "$source"
}

case "${1:-}" in
    locate)
        [ $# -eq 2 ] || die "usage: $0 locate KVER"
        locate "$2"
        ;;
    extract)
        [ $# -eq 3 ] || die "usage: $0 extract KVER DEST"
        extract "$2" "$3"
        ;;
    *)
        die "usage: $0 locate KVER | extract KVER DEST"
        ;;
esac
