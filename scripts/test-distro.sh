#!/usr/bin/env bash
# Run this project's tests in a pristine root filesystem of another Debian release, the way
# a new user on that release would: a stock cloud-image package set (python3, iproute2,
# iptables; no pip, venv, nftables or gcc), a fresh `git clone` of HEAD, then
# `bash scripts/test.sh`, which installs what it needs with apt-get and pip.
#
#   scripts/test-distro.sh [SUITE [COMMAND]]
#                                       SUITE default: trixie (Debian 13: Python 3.13, iptables
#                                       1.8.11, podman 5, containerd 1.7); COMMAND: run that
#                                       instead of the tests (test.sh runs the stock-machine
#                                       install check, scripts/fresh-install-check.sh, this way)
#
# What runs inside: the README's test command without the two steps that do not depend on
# the release it runs on: the portable build (it always builds in its own Debian 11 root
# filesystem) and this check itself. So: ruff, mypy, the runtimes install, pytest (unit,
# netns, runtimes), the fuzzer (ERT_DISTRO_FUZZ_SECONDS, default 20), the PyInstaller build
# and the end-to-end suite against it, all under that release's Python and tools.
#
# It uses fresh-run.sh (ERT_FRESH_RUN, else ../shared/tools/fresh-run.sh beside the
# checkout): the pristine tree is debootstrapped once (about a minute) and kept under
# $FRESH_HOME (default /var/tmp/fresh-run); each run is a throwaway overlay on it with
# private mount, PID, UTS and IPC namespaces, and everything network-related in the tests
# runs in namespaces of its own, as on any machine. Committed files only (HEAD).
#
# Needs root. Exit status: 0 passed or skipped (no fresh-run.sh, or no Debian mirror serves
# SUITE: a printed skip, like the portable build's); otherwise test.sh's exit status.
set -euo pipefail

SUITE=${1:-trixie}
COMMAND=${2:-"ERT_SKIP_PORTABLE=1 ERT_SKIP_DISTRO=1 ERT_FUZZ_SECONDS=${ERT_DISTRO_FUZZ_SECONDS:-20} bash scripts/test.sh"}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROG=test-distro.sh
log() { echo "$PROG: $*" >&2; }

skip() {
    log "SKIPPED ($SUITE): $*"
    exit 0
}

[ "$(id -u)" = 0 ] || { log "needs root (debootstrap, chroot, namespaces)"; exit 1; }

FRESH_RUN=${ERT_FRESH_RUN:-$ROOT/../shared/tools/fresh-run.sh}
[ -x "$FRESH_RUN" ] || [ -f "$FRESH_RUN" ] ||
    skip "no fresh-run.sh at $FRESH_RUN (set ERT_FRESH_RUN to its path)"

# fresh-run builds the root filesystem from the mirror this machine's apt uses.
mirror=$(awk '/^URIs:/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}
url_ok() {
    if command -v curl >/dev/null; then
        curl -fsS -m 20 -o /dev/null "$1" 2>/dev/null
    else
        python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=20)' "$1" 2>/dev/null
    fi
}
if ! url_ok "$mirror/dists/$SUITE/Release"; then
    skip "no Debian mirror serves $SUITE from this machine ($mirror/dists/$SUITE/Release)"
fi
if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null ||
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; } ||
        { log "cannot install debootstrap"; exit 1; }
fi

t0=$(date +%s)
log "Debian $SUITE: $COMMAND, in a pristine root filesystem (HEAD $(git -C "$ROOT" rev-parse --short HEAD))"
rc=0
FRESH_SUITE=$SUITE bash "$FRESH_RUN" "$ROOT" "$COMMAND" </dev/null || rc=$?
log "Debian $SUITE: exit $rc after $(($(date +%s) - t0)) s"
exit "$rc"
