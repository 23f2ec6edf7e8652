#!/usr/bin/env bash
# The build's compiled parts; prints the path of what it built. scripts/build.sh runs it.
#
#   scripts/build-native.sh bootloader [--python PYTHON]
#   scripts/build-native.sh setns [--python PYTHON]
#
# bootloader: PyInstaller's onedir executable execs itself a second time on Linux
#   so that LD_LIBRARY_PATH takes effect (~1 ms of CPU on every CNI command). This
#   builds PyInstaller's own bootloader from the source of the PyInstaller release
#   that PYTHON (default python3) imports, with scripts/lib/bootloader_patch.py
#   applied, linked with an RPATH of $ORIGIN/_internal and with zlib compiled in;
#   that one starts a onedir in one exec. build.spec uses it for the onedir only.
#   Needs gcc, libc6-dev and the network (pip downloads the source once); kept in
#   build/bootloader/VERSION-PLATFORM-GLIBC-PATCHHASH/run and reused.
# setns: before Python 3.12 (no os.setns), scripts/native/egress_setns.c against
#   PYTHON's headers (Debian: libpython3.X-dev), into build/native/;
#   egress_router_cni/netns.py imports it instead of loading _ctypes and libffi
#   (~0.4 ms per CNI command). Prints nothing from Python 3.12 on.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=python3
WHAT=
while [ $# -gt 0 ]; do
    case "$1" in
        bootloader | setns) WHAT=$1; shift ;;
        --python) PYTHON=$2; shift 2 ;;
        -h | --help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "build-native.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
log() { echo "build-native.sh: $*" >&2; }
die() {
    log "$*"
    exit 1
}
[ -n "$WHAT" ] || die "say what to build: bootloader or setns (--help)"
PYTHON=$("$PYTHON" -c 'import sys; print(sys.executable)') || die "no Python at $PYTHON" # absolute: waf runs elsewhere

bootloader() {
    local PATCH="$REPO/scripts/lib/bootloader_patch.py" version platform glibc dir tmp src run
    version=$("$PYTHON" -c 'import PyInstaller; print(PyInstaller.__version__)') || die "$PYTHON has no PyInstaller"
    platform=$("$PYTHON" -c 'from PyInstaller import PLATFORM; print(PLATFORM)')
    # Per glibc too: a bootloader linked against a newer glibc does not start on an older one
    # (scripts/build-portable.sh builds in Debian 11 from the same tree).
    glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null | tr ' ' '-' || echo unknown-libc)
    dir="$REPO/build/bootloader/$version-$platform-$glibc-$(sha256sum "$PATCH" | cut -c1-12)"
    if [ -x "$dir/run" ]; then
        echo "$dir/run"
        return 0
    fi

    tmp="$dir.tmp"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    log "compiling PyInstaller $version's bootloader for the onedir (scripts/lib/bootloader_patch.py)"
    # pip prepares the source's metadata, and PyInstaller's build hook compiles a bootloader for
    # that (then thrown away): zlib compiled in spares it zlib's headers (zlib1g-dev).
    PYI_STATIC_ZLIB=1 "$PYTHON" -m pip download -q --no-binary :all: --no-deps -d "$tmp" "pyinstaller==$version" >&2 \
        || die "cannot download the source of PyInstaller $version"
    tar -xzf "$tmp/pyinstaller-$version.tar.gz" -C "$tmp" || die "cannot unpack the source of PyInstaller $version"
    src="$tmp/pyinstaller-$version"
    rm -rf "${src:?}/PyInstaller/bootloader/$platform" # only what waf builds below lands here
    "$PYTHON" "$PATCH" "$src" || die "cannot patch PyInstaller $version's bootloader"
    # shellcheck disable=SC2016  # $ORIGIN is for the dynamic linker, not the shell
    if ! (cd "$src/bootloader" && LDFLAGS='-Wl,--disable-new-dtags -Wl,-rpath,$ORIGIN/_internal' \
        "$PYTHON" ./waf --static-zlib configure all >"$tmp/waf.log" 2>&1); then
        tail -20 "$tmp/waf.log" >&2
        die "compiling PyInstaller's bootloader failed (the whole log: $tmp/waf.log)"
    fi
    run="$src/PyInstaller/bootloader/$platform/run"
    readelf -d "$run" 2>/dev/null | grep -q 'Library rpath: \[\$ORIGIN/_internal\]' \
        || die "the build produced no $run linked with RPATH \$ORIGIN/_internal (see $tmp/waf.log)"
    mkdir -p "$dir"
    cp "$run" "$dir/run"
    rm -rf "$tmp"
    echo "$dir/run"
}

setns() {
    local include ext
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info >= (3, 12))' || return 0
    include=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
    [ -e "$include/Python.h" ] || die "no $include/Python.h (Debian: apt-get install libpython3-dev)"
    ext="$REPO/build/native/_egress_setns$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
    mkdir -p "$(dirname "$ext")"
    gcc -O2 -Wall -Wextra -Werror -shared -fPIC -I"$include" -o "$ext" "$REPO/scripts/native/egress_setns.c" >&2 \
        || die "compiling scripts/native/egress_setns.c failed"
    echo "$ext"
}

"$WHAT"
