#!/usr/bin/env bash
# Install what the checks need, then run ruff, mypy and pytest; exit non-zero if any fails.
#
#   scripts/test.sh [PYTEST_ARGS...]        e.g. scripts/test.sh -k e2e -x
#
# As root on a fresh Debian 12 / Ubuntu machine it installs iproute2, nftables
# (and python3-venv if needed) with apt-get and the project with its test
# extras into .venv (see scripts/lib/setup.sh for ERT_VENV / ERT_SKIP_INSTALL).
# pytest runs inside a fresh network namespace (unshare --net) so the
# end-to-end tests cannot reach the machine's own network; tests/conftest.py
# isolates itself again on import. Without root the netns tests are skipped.
#
#   EGRESS_ROUTER_EXE="dist/egress-router/egress-router" scripts/test.sh   tests a frozen build
set -euo pipefail

ERT_PROG=test.sh
# shellcheck source=scripts/lib/setup.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/setup.sh"

ert_setup test ruff mypy
cd "$ERT_ROOT"

failed=()

step() {
    local name=$1
    shift
    ert_log "== $name: $*"
    if ! "$@" </dev/null; then
        failed+=("$name")
    fi
}

step ruff "$(ert_tool ruff)" check .
if grep -q '^\[tool\.mypy\]' pyproject.toml; then
    step mypy "$(ert_tool mypy)"
fi
if ert_is_root; then
    step pytest unshare --net -- "$ERT_PYTHON" -m pytest "$@"
else
    ert_log "not root: the netns tests will be skipped"
    step pytest "$ERT_PYTHON" -m pytest "$@"
fi

if [ "${#failed[@]}" -gt 0 ]; then
    ert_log "FAILED: ${failed[*]}"
    exit 1
fi
ert_log "all checks passed"
