# shellcheck shell=bash
# Shared by scripts/test.sh and scripts/demo.sh (source it; it defines functions only).
#
# On a fresh Debian 12 / Ubuntu machine, as root, ert_setup installs what the
# tests and the demo need: iproute2, nftables and util-linux (unshare, nsenter)
# with apt-get, then a virtualenv at .venv made with the first python3 on PATH
# (python3-venv comes from apt only when `python3 -m venv` fails), holding the
# project (editable) with its test extras. Safe with CI=true and no stdin.
#
# Environment:
#   ERT_VENV=0        use the first python3 on PATH as it is, no .venv (pip installs into it)
#   ERT_SKIP_INSTALL=1  install nothing; use what is there
#   PYTHON            the interpreter that creates .venv (default: python3 on PATH)

ERT_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ERT_PROG=${ERT_PROG:-$(basename "$0")}
ERT_VENV_DIR="$ERT_ROOT/.venv"
ERT_APT_UPDATED=0

ert_log() {
    echo "$ERT_PROG: $*" >&2
}

ert_die() {
    ert_log "$*"
    exit 1
}

# Run a command with its output kept aside, shown only when it fails.
ert_quietly() {
    local out rc=0
    out=$(mktemp)
    "$@" </dev/null >"$out" 2>&1 || rc=$?
    if [ "$rc" -ne 0 ]; then
        cat "$out" >&2
        ert_log "failed ($rc): $*"
    fi
    rm -f "$out"
    return "$rc"
}

ert_is_root() {
    [ "$(id -u)" -eq 0 ]
}

ert_apt_install() {
    command -v apt-get >/dev/null 2>&1 || ert_die "missing $*; install them (no apt-get here)"
    ert_is_root || ert_die "missing $*; run as root so that apt-get can install them"
    export DEBIAN_FRONTEND=noninteractive
    if [ "$ERT_APT_UPDATED" -eq 0 ]; then
        ert_quietly apt-get update -qq
        ERT_APT_UPDATED=1
    fi
    ert_log "apt-get install $*"
    ert_quietly apt-get install -y -qq --no-install-recommends "$@"
}

# The kernel-facing tools: ip (iproute2), nft + libnftables (nftables), iptables-legacy and
# libxtables (iptables, for the second NAT backend), unshare and nsenter (util-linux);
# gcc, libc and Python headers to build python-iptables' small C helper (an sdist).
ert_system_tools() {
    local missing=()
    command -v ip >/dev/null 2>&1 || missing+=(iproute2)
    command -v nft >/dev/null 2>&1 || missing+=(nftables)
    [ -e /usr/lib/x86_64-linux-gnu/libnftables.so.1 ] || [ -e /usr/lib64/libnftables.so.1 ] \
        || ldconfig -p 2>/dev/null | grep -q libnftables.so.1 || missing+=(libnftables1)
    command -v iptables-legacy-save >/dev/null 2>&1 || missing+=(iptables)
    { command -v unshare && command -v nsenter; } >/dev/null 2>&1 || missing+=(util-linux)
    command -v gcc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
    local py=${PYTHON:-python3} inc
    inc=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])' 2>/dev/null || true)
    [ -n "$inc" ] && [ -f "$inc/Python.h" ] || missing+=(python3-dev)
    command -v strace >/dev/null 2>&1 || missing+=(strace)
    if [ "${#missing[@]}" -gt 0 ]; then
        ert_apt_install "${missing[@]}"
    fi
}

ert_base_python() {
    local py=${PYTHON:-python3}
    command -v "$py" >/dev/null 2>&1 || ert_apt_install python3 python3-pip python3-venv
    command -v "$py"
}

# Create .venv with the base python; on Debian without ensurepip, install python3-venv and retry.
ert_make_venv() {
    local py=$1
    if [ -x "$ERT_VENV_DIR/bin/python" ] && "$ERT_VENV_DIR/bin/python" -c 'import sys' >/dev/null 2>&1; then
        return 0
    fi
    rm -rf "$ERT_VENV_DIR"
    if ! "$py" -m venv "$ERT_VENV_DIR" </dev/null >/dev/null 2>&1; then
        rm -rf "$ERT_VENV_DIR"
        local minor
        minor=$("$py" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
        ert_apt_install python3-venv "python${minor}-venv" || ert_apt_install python3-venv
        ert_quietly "$py" -m venv "$ERT_VENV_DIR" || ert_die "cannot create $ERT_VENV_DIR with $py"
    fi
    ert_log "created $ERT_VENV_DIR with $("$ERT_VENV_DIR/bin/python" --version 2>&1)"
}

# pip install the project (editable) with EXTRAS, plus extra packages; skipped when nothing changed.
ert_pip_install() {
    local py=$1 extras=$2
    shift 2
    # One stamp per request (pyproject.toml content, extras, packages): test.sh and demo.sh
    # ask for different sets and must not undo each other's "already installed".
    local want stamp
    want="$(sha256sum "$ERT_ROOT/pyproject.toml" | cut -d' ' -f1) $extras $*"
    stamp="$ERT_VENV_DIR/.ert-installed-$(echo "$want" | sha256sum | cut -c1-16)"
    if [ "$ERT_USE_VENV" = 1 ] && [ -f "$stamp" ] && "$py" -c 'import egress_router_cni' >/dev/null 2>&1; then
        return 0
    fi
    local project=$ERT_ROOT
    [ -z "$extras" ] || project="${ERT_ROOT}[${extras}]"
    ert_log "pip install -e .${extras:+[$extras]} $*"
    "$py" -m pip --version >/dev/null 2>&1 || ert_apt_install python3-pip
    # Environment, not flags: older pips reject --root-user-action but ignore unknown variables.
    PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
        ert_quietly "$py" -m pip install -q -e "$project" "$@"
    if [ "$ERT_USE_VENV" = 1 ]; then
        echo "$want" >"$stamp"
    fi
}

# ert_setup EXTRAS [PACKAGE...]: system tools, python environment, project. Sets ERT_PYTHON and ERT_BIN.
ert_setup() {
    local extras=${1-test}
    shift || true
    ERT_USE_VENV=${ERT_VENV:-1}
    if [ "${ERT_SKIP_INSTALL:-0}" = 1 ]; then
        ert_log "ERT_SKIP_INSTALL=1: installing nothing"
    else
        ert_system_tools
    fi
    local base
    base=$(ert_base_python)
    if [ "$ERT_USE_VENV" = 1 ]; then
        [ "${ERT_SKIP_INSTALL:-0}" = 1 ] || ert_make_venv "$base"
        ERT_PYTHON="$ERT_VENV_DIR/bin/python"
        ERT_BIN="$ERT_VENV_DIR/bin"
    else
        ERT_PYTHON=$base
        ERT_BIN=$(dirname "$(command -v "$base")")
    fi
    if [ "${ERT_SKIP_INSTALL:-0}" != 1 ]; then
        ert_pip_install "$ERT_PYTHON" "$extras" "$@"
    fi
    export ERT_PYTHON ERT_BIN
}

# The python tool NAME from the chosen environment (e.g. ruff), or from PATH.
ert_tool() {
    if [ -x "$ERT_BIN/$1" ]; then
        echo "$ERT_BIN/$1"
    else
        command -v "$1"
    fi
}
