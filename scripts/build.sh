#!/usr/bin/env bash
# Build the self-contained egress-router executables with PyInstaller (build.spec):
#   dist/egress-router/egress-router   onedir tree, the installed form (scripts/install.sh)
#   dist/onefile/egress-router         one file, for copying around and manual cnitool runs
# then smoke-test both and print what was produced.
#
#   scripts/build.sh [--venv | --python PYTHON] [--without-iptables] [--no-apt]
#
#   --venv           always build in a fresh virtualenv (build/venv); the default uses the
#                    current python3 when it already has the project, pyinstaller,
#                    pyroute2, click and structlog, and a venv otherwise
#   --python PATH    the interpreter to build with (or to create the venv from)
#   --without-iptables  leave out the iptables NAT backend (bundled by default: pip installs
#                    python-iptables, which compiles a small C helper; `--with-iptables` is
#                    accepted for compatibility)
#   --no-apt         never install Debian packages; fail with a hint instead
#
# On a fresh Debian 12 / Ubuntu machine run as root, it installs only what is missing:
# python3-venv, libpython3.X (PyInstaller needs the shared libpython), binutils
# (strip), libxtables12 for the iptables backend (bundled; EGRESS_ROUTER_BUNDLE_NFT=0 to leave
# it to the node), and gcc, libc6-dev and iptables (libxtables' extensions, which the bundle's
# self-test loads; minimal and container images lack them). nftables needs no library: the
# plugin speaks nfnetlink itself. scripts/fresh-install-check.sh proves it on a pristine
# Debian 12 without the iptables package.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
PYTHON=${PYTHON:-python3}
USE_VENV=auto
WITH_IPTABLES=1
APT=1
VENV="$REPO/build/venv"
WORK="$REPO/build/pyinstaller"
ONEDIR="$REPO/dist/egress-router"
ONEFILE="$REPO/dist/onefile/egress-router"
CLEAN_ENV=(env -i "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" "HOME=/nonexistent")

log() { echo "build.sh: $*" >&2; }
die() {
    log "$*"
    exit 1
}

while [ $# -gt 0 ]; do
    case "$1" in
        --venv) USE_VENV=1; shift ;;
        --python) PYTHON=${2:?--python needs a path}; shift 2 ;;
        --with-iptables) WITH_IPTABLES=1; shift ;;
        --without-iptables) WITH_IPTABLES=0; shift ;;
        --no-apt) APT=0; shift ;;
        -h | --help) sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
done

ERT_PROG=build.sh
# shellcheck source=scripts/lib/setup.sh
. "$REPO/scripts/lib/setup.sh"

APT_MISSING=()
need_pkg() { APT_MISSING+=("$1"); }

apt_install() {
    [ ${#APT_MISSING[@]} -eq 0 ] && return 0
    if [ "$APT" = 0 ] || [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        die "missing: ${APT_MISSING[*]} (install them, e.g. apt-get install ${APT_MISSING[*]})"
    fi
    ert_apt_install "${APT_MISSING[@]}" || die "apt-get install ${APT_MISSING[*]} failed"
    APT_MISSING=()
}

# --- host prerequisites ---------------------------------------------------------------------
command -v "$PYTHON" >/dev/null || { need_pkg python3; apt_install; }
PYTHON=$("$(command -v "$PYTHON")" -c "import sys; print(sys.executable)")
PYVER=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 9))' || die "$PYTHON is Python $PYVER; 3.9 or later is needed"

# PyInstaller embeds the shared libpython; Debian ships it separately from the interpreter.
has_libpython() {
    "$PYTHON" - <<'EOF'
import os, sys, sysconfig
name = sysconfig.get_config_var("INSTSONAME") or "libpython%d.%d.so.1.0" % sys.version_info[:2]
dirs = [sysconfig.get_config_var("LIBDIR") or "", sysconfig.get_config_var("LIBPL") or "", "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib"]
sys.exit(0 if any(os.path.exists(os.path.join(d, name)) for d in dirs if d) else 1)
EOF
}
# The linker cache, read once: `ldconfig -p | grep -q` under pipefail fails whenever grep
# stops reading before ldconfig has written everything (SIGPIPE).
LD_CACHE=$(ldconfig -p 2>/dev/null || true)
has_lib() { grep -q "$1" <<<"$LD_CACHE"; }
# libxt_comment.so in any of the distributions' extension directories (`ls A B C` fails
# when any one of them is missing, so each is tested on its own).
has_xt_extensions() {
    local f
    for f in /usr/lib/*/xtables/libxt_comment.so /usr/lib64/xtables/libxt_comment.so /usr/lib/xtables/libxt_comment.so; do
        [ -e "$f" ] && return 0
    done
    return 1
}
has_libpython || need_pkg "libpython$PYVER"
# Before Python 3.12 (no os.setns) the bundle carries a small C module for setns(2)
# (scripts/build-native.sh setns), compiled against the interpreter's headers.
if "$PYTHON" -c 'import sys; sys.exit(sys.version_info >= (3, 12))'; then
    "$PYTHON" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
        || need_pkg "libpython$PYVER-dev"
fi
command -v strip >/dev/null || need_pkg binutils
if [ "$WITH_IPTABLES" = 1 ] && [ "${EGRESS_ROUTER_BUNDLE_NFT:-1}" != 0 ] && ! has_lib 'libxtables\.so\.12 '; then
    need_pkg libxtables12
fi
# The onedir's bootloader is compiled from PyInstaller's source (scripts/build-native.sh);
# python-iptables' C helper (libxtwrapper) needs the compiler too.
command -v gcc >/dev/null || need_pkg gcc
[ -e /usr/include/stdio.h ] || need_pkg libc6-dev
if [ "$WITH_IPTABLES" = 1 ]; then
    # The bundle carries python-iptables, not xtables: the self-test loads libxtables, libip4tc
    # and the extensions (libxt_comment.so, libipt_DNAT.so...) from the build machine, and
    # minimal or container images have neither. Debian's iptables package brings all three.
    if ! has_lib 'libxtables\.so\.12 ' || ! has_lib 'libip4tc\.so\.2 ' || ! has_xt_extensions; then
        need_pkg iptables
    fi
fi

deps_present() {
    WITH_IPTABLES=$WITH_IPTABLES "$1" - "$REPO" <<'EOF'
import importlib.metadata, os, sys
import PyInstaller, click, structlog  # noqa: F401
if not PyInstaller.__version__.startswith("6."):
    sys.exit("PyInstaller 6 is needed (build.spec replaces its pyimod03_ctypes)")  # the venv pins it
if os.environ.get("WITH_IPTABLES") == "1":
    import importlib.util
    if importlib.util.find_spec("iptc") is None:
        sys.exit("python-iptables is missing")
importlib.metadata.version("egress-router-cni")  # build.spec copies its metadata
import egress_router_cni
if not os.path.realpath(egress_router_cni.__file__).startswith(os.path.realpath(sys.argv[1]) + os.sep):
    sys.exit("egress_router_cni is not this checkout's")
EOF
}

if [ "$USE_VENV" = auto ]; then
    if deps_present "$PYTHON" 2>/dev/null; then USE_VENV=0; else USE_VENV=1; fi
fi
if [ "$USE_VENV" = 1 ]; then
    "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || need_pkg "python$PYVER-venv"
fi
apt_install

# --- build environment ----------------------------------------------------------------------
if [ "$USE_VENV" = 1 ]; then
    if [ ! -x "$VENV/bin/python" ]; then
        log "creating $VENV"
        "$PYTHON" -m venv "$VENV"
    fi
    BUILD_PY="$VENV/bin/python"
    log "installing the project and pyinstaller into $VENV"
    "$BUILD_PY" -m pip install -q --upgrade pip
    "$BUILD_PY" -m pip install -q "$REPO" "pyinstaller>=6,<7"
    if [ "$WITH_IPTABLES" = 1 ]; then
        "$BUILD_PY" -m pip install -q python-iptables
    fi
    deps_present "$BUILD_PY" || die "the build venv is incomplete"
else
    BUILD_PY=$PYTHON
    log "building with $BUILD_PY (project and pyinstaller already installed)"
fi

# --- the onedir's bootloader (scripts/build-native.sh bootloader) ----------------------------
# PyInstaller's stock onedir execs itself a second time on Linux (~1 ms of CPU per CNI command);
# this one, compiled from the building PyInstaller's own source, starts in one exec.
EGRESS_ROUTER_ONEDIR_BOOTLOADER=$("$REPO/scripts/build-native.sh" bootloader --python "$BUILD_PY") \
    || die "no bootloader for the onedir (scripts/build-native.sh bootloader failed, see above)"
export EGRESS_ROUTER_ONEDIR_BOOTLOADER

# --- setns(2) for Python < 3.12 (scripts/build-native.sh setns) --------------------------------
EGRESS_ROUTER_SETNS_EXT=$("$REPO/scripts/build-native.sh" setns --python "$BUILD_PY") \
    || die "scripts/build-native.sh setns failed"
export EGRESS_ROUTER_SETNS_EXT

# --- build ----------------------------------------------------------------------------------
log "pyinstaller build.spec ($("$BUILD_PY" -m PyInstaller --version), Python $("$BUILD_PY" -c 'import platform; print(platform.python_version())'))"
rm -rf "$ONEDIR" "$ONEFILE"
# A cache of our own: PyInstaller's default (~/.cache/pyinstaller) is shared by every build
# on the machine, and two builds at once strip and replace each other's files in it.
# A failed build leaves no half-assembled tree behind for a later step to run.
if ! PYINSTALLER_CONFIG_DIR="$REPO/build/pyinstaller-config" "$BUILD_PY" -m PyInstaller --noconfirm \
    --clean --log-level WARN --distpath "$REPO/dist" --workpath "$WORK" "$REPO/build.spec"; then
    rm -rf "$ONEDIR" "$ONEFILE"
    die "pyinstaller failed"
fi

# --- smoke tests (clean environment: no PYTHONPATH, no venv, minimal PATH) --------------------
smoke() {
    local exe=$1 out
    [ -x "$exe" ] || die "missing $exe"
    out=$("${CLEAN_ENV[@]}" CNI_COMMAND=VERSION "$exe" </dev/null) || die "$exe: VERSION failed"
    case "$out" in *'"supportedVersions"'*) ;; *) die "$exe: unexpected VERSION output: $out" ;; esac
    out=$("${CLEAN_ENV[@]}" "$exe" version) || die "$exe version failed"
    case "$out" in *egress-router*) ;; *) die "$exe version: unexpected output: $out" ;; esac
    # A malformed config must come back as CNI error JSON (code 6) before any netns is touched.
    out=$(echo '{' | "${CLEAN_ENV[@]}" CNI_COMMAND=ADD CNI_CONTAINERID=smoke CNI_NETNS=/nonexistent \
        CNI_IFNAME=net1 CNI_PATH=/opt/cni/bin "$exe" 2>/dev/null) && die "$exe: a broken config succeeded"
    case "$out" in *'"code": 6'*) ;; *) die "$exe: broken config gave: $out" ;; esac
    out=$("${CLEAN_ENV[@]}" EGRESS_ROUTER_SELFTEST=1 "$exe" 2>&1) || die "$exe self-test failed: $out"
    echo "$out"
}
SELFTEST=$(smoke "$ONEDIR/egress-router")
smoke "$ONEFILE" >/dev/null

field() { # field NAME: the "ok" of one self-test check
    "$BUILD_PY" -c 'import json,sys; r=json.loads(sys.stdin.read()); print("ok" if r[sys.argv[1]]["ok"] else "no: " + str(r[sys.argv[1]]["detail"]))' "$1" <<<"$SELFTEST"
}

size_of() { du -sh --apparent-size "$1" | cut -f1; }
echo
echo "built (smoke-tested: VERSION, 'version', error JSON, bundle self-test):"
echo "  onedir   $ONEDIR/egress-router   $(size_of "$ONEDIR") in $(find "$ONEDIR" -type f | wc -l) files"
echo "  onefile  $ONEFILE   $(size_of "$ONEFILE")"
echo "  iptables backend: $(field iptables_backend)"
if [ "$WITH_IPTABLES" = 1 ] && [ "$(field iptables_backend)" != ok ]; then
    die "the iptables backend was asked for but does not load from the bundle (see above)"
fi
echo "install:   sudo scripts/install.sh   (onedir -> /opt/egress-router, /opt/cni/bin/egress-router)"
