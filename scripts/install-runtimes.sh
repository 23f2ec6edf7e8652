#!/usr/bin/env bash
# Install the real CNI clients that tests/runtimes/ drives, from Debian and PyPI only:
#   podman (CNI backend), runc, containerd (CRI), the upstream CNI plugins, Go + Debian's libcni
#   sources (for tests/clients/ercni.go), and the CRI gRPC stubs (PyPI container-runtime-interface-api)
#   in a venv of their own, tests/clients/bin/cri-venv (git-ignored), whatever python runs pytest.
# Then builds tests/clients/bin/ercni. Idempotent and quiet: prints one line when all is there.
# Safe with CI=true and no stdin. Needs root (apt-get). Starts no service, and touches no network config.
#
# Environment: PYTHON  the interpreter that creates the CRI venv (default: python3 on PATH)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
APT_PACKAGES=(podman runc containerd containernetworking-plugins golang-go golang-github-appc-cni-dev)
PIP_PACKAGES=(container-runtime-interface-api)
CRI_VENV="$ROOT/tests/clients/bin/cri-venv"
PYTHON="${PYTHON:-python3}"
ERT_PROG=install-runtimes
# shellcheck source=scripts/lib/setup.sh
. "$ROOT/scripts/lib/setup.sh"  # ert_log, ert_quietly

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    if [ "$ERT_APT_UPDATED" -eq 0 ]; then
        ert_quietly apt-get update -qq
        ERT_APT_UPDATED=1
    fi
    ert_log "apt-get install $*"
    # Recommends stay on: podman needs crun/conmon/catatonit from them.
    ert_quietly apt-get install -y -qq -o Dpkg::Options::=--force-confold "$@"
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
    [ "${#missing[@]}" -eq 0 ] || apt_install "${missing[@]}"
}

make_venv() {
    if ert_quietly "$PYTHON" -m venv "$CRI_VENV"; then
        return 0
    fi
    rm -rf "$CRI_VENV"
    apt_install python3-venv
    PYTHON=/usr/bin/python3
    ert_quietly "$PYTHON" -m venv "$CRI_VENV"
}

install_cri_venv() {
    if "$CRI_VENV/bin/python" -c 'import grpc, cri_api.v1.api_pb2' >/dev/null 2>&1; then
        return 0
    fi
    rm -rf "$CRI_VENV"
    make_venv
    ert_log "pip install ${PIP_PACKAGES[*]} into tests/clients/bin/cri-venv"
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
        ert_quietly "$CRI_VENV/bin/python" -m pip install -q "${PIP_PACKAGES[@]}"
}

if [ "$(id -u)" -ne 0 ]; then
    ert_log "must run as root (apt-get)"
    exit 1
fi
install_apt
install_cri_venv
ert_quietly bash "$ROOT/tests/clients/build.sh"
ert_log "ok: $(podman --version), containerd $(containerd --version | awk '{print $3}'), $(go version | awk '{print $3}')"
