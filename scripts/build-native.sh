#!/usr/bin/env bash
# Compile the frozen build's C module for setns(2) before Python 3.12; print its path
# (nothing from Python 3.12 on, which has os.setns). scripts/build.sh runs it.
#
#   scripts/build-native.sh [--python PYTHON]
#
# scripts/native/egress_setns.c against PYTHON's headers (default python3; Debian:
# libpython3.X-dev), into build/native/. egress_router_cni/netns.py imports it
# instead of loading _ctypes and libffi (~0.4 ms per CNI command).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=python3
while [ $# -gt 0 ]; do
    case "$1" in
        --python) PYTHON=$2; shift 2 ;;
        -h | --help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "build-native.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

"$PYTHON" -c 'import sys; sys.exit(sys.version_info >= (3, 12))' || exit 0
include=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
[ -e "$include/Python.h" ] || { echo "build-native.sh: no $include/Python.h (Debian: apt-get install libpython3-dev)" >&2; exit 1; }
ext="$REPO/build/native/_egress_setns$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
mkdir -p "$(dirname "$ext")"
gcc -O2 -Wall -Wextra -Werror -shared -fPIC -I"$include" -o "$ext" "$REPO/scripts/native/egress_setns.c" >&2 \
    || { echo "build-native.sh: compiling scripts/native/egress_setns.c failed" >&2; exit 1; }
echo "$ext"
