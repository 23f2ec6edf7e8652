#!/usr/bin/env bash
# Install the real CNI clients that tests/runtimes/ drives: podman (CNI backend), containerd (CRI),
# and Debian's libcni sources + Go for tests/clients/ercni.go. Idempotent and quiet; safe with CI=true
# and no stdin. Needs root (apt-get). Nothing here touches the machine's network configuration.
set -euo pipefail

APT_PACKAGES=(podman runc containerd containernetworking-plugins golang-go golang-github-appc-cni-dev)
PIP_PACKAGES=(container-runtime-interface-api)
PYTHON="${PYTHON:-python3}"

# Run a command with its output kept in a temp file, shown only if it fails.
quietly() {
    local out rc=0
    out=$(mktemp)
    "$@" </dev/null >"$out" 2>&1 || rc=$?
    if [ "$rc" -ne 0 ]; then
        cat "$out" >&2
        echo "install-runtimes: failed ($rc): $*" >&2
    fi
    rm -f "$out"
    return "$rc"
}

missing_apt() {
    local p
    for p in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || echo "$p"
    done
}

install_apt() {
    local missing
    mapfile -t missing < <(missing_apt)
    [ "${#missing[@]}" -eq 0 ] && return 0
    echo "install-runtimes: apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # --no-install-recommends would drop crun/conmon/catatonit that podman needs at run time; keep defaults.
    quietly apt-get update -qq
    quietly apt-get install -y -qq -o Dpkg::Options::=--force-confold "${missing[@]}"
}

install_pip() {
    "$PYTHON" -c 'import cri_api.v1.api_pb2' 2>/dev/null && return 0
    echo "install-runtimes: pip install ${PIP_PACKAGES[*]}"
    quietly "$PYTHON" -m pip install -q --disable-pip-version-check --root-user-action=ignore "${PIP_PACKAGES[@]}"
}

if [ "$(id -u)" -ne 0 ]; then
    echo "install-runtimes: must run as root (apt-get)" >&2
    exit 1
fi
install_apt
install_pip
echo "install-runtimes: ok ($(podman --version 2>/dev/null); containerd $(containerd --version 2>/dev/null | awk '{print $3}'); $(go version 2>/dev/null | awk '{print $3}'))"
