#!/usr/bin/env bash
# Install what the checks need, then run ruff, mypy and pytest; exit non-zero if any fails.
#
#   scripts/test.sh                  everything: ruff, mypy, pytest (unit, netns, real runtimes),
#                                    the fuzzer for 60 s, the e2e suite against the frozen build, and
#                                    the portable (glibc 2.31) build with its checks (ERT_SKIP_PORTABLE=1 skips it),
#                                    and all but the portable build again in a pristine root filesystem
#                                    of the other Debian release, 13 on a Debian 12 machine and 12 on a
#                                    Debian 13 one (scripts/test-distro.sh; ERT_SKIP_DISTRO=1 skips it)
#   scripts/test.sh [PYTEST_ARGS...] only pytest with these arguments, e.g. scripts/test.sh -k e2e -x
#
# As root on a fresh Debian 12 or 13 / Ubuntu machine it installs iproute2, nftables
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

ert_setup test ruff mypy 'atheris>=2; python_version < "3.13"'
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

in_netns() {
    # pytest and the fuzzer run in a fresh network namespace; without root, as they are.
    if ert_is_root; then
        unshare --net -- "$@"
    else
        "$@"
    fi
}

if [ $# -gt 0 ]; then
    step pytest in_netns "$ERT_PYTHON" -m pytest "$@"
else
    step ruff "$(ert_tool ruff)" check .
    step mypy "$(ert_tool mypy)"
    if ert_is_root && [ "${ERT_SKIP_INSTALL:-0}" != 1 ]; then
        step install-runtimes env PYTHON="$ERT_PYTHON" bash "$ERT_ROOT/scripts/install-runtimes.sh"
        export ERT_REQUIRE_RUNTIMES=1  # a runtime that failed to install must fail, not skip
    fi
    step pytest in_netns "$ERT_PYTHON" -m pytest tests
    step fuzz env PYTHON="$ERT_PYTHON" bash "$ERT_ROOT/scripts/fuzz.sh" --seconds "${ERT_FUZZ_SECONDS:-60}"
    if ert_is_root && [ -f "$ERT_ROOT/scripts/build.sh" ]; then
        # The installed form is the frozen onedir build: the end-to-end suite runs against it too.
        step build env PYTHON="$ERT_PYTHON" bash "$ERT_ROOT/scripts/build.sh"
        if [[ " ${failed[*]} " != *" build "* ]] && [ -x "$ERT_ROOT/dist/egress-router/egress-router" ]; then
            step pytest-frozen env EGRESS_ROUTER_EXE="$ERT_ROOT/dist/egress-router/egress-router" \
                unshare --net -- "$ERT_PYTHON" -m pytest tests/netns tests/runtimes -q
        fi
        # The build for older nodes (glibc 2.31: RHEL/RHCOS 9, Ubuntu 20.04+, Debian 11+), its glibc
        # floor and an ADD/CHECK/DEL inside a Debian 11 root filesystem. Needs the Debian mirror.
        if [ "${ERT_SKIP_PORTABLE:-0}" != 1 ]; then
            ert_log "== portable: scripts/build-portable.sh --e2e"
            rc=0
            bash "$ERT_ROOT/scripts/build-portable.sh" --e2e </dev/null || rc=$?
            if [ "$rc" -eq 75 ]; then
                ert_log "== portable: SKIPPED: no Debian mirror serves bullseye from this machine"
            elif [ "$rc" -ne 0 ]; then
                failed+=(portable)
            fi
        fi
        # All of the above but the portable build, again on the other supported Debian release,
        # in a pristine root filesystem: Debian 13 (Python 3.13, iptables 1.8.11, podman 5) from a
        # Debian 12 machine, Debian 12 from a Debian 13 one, so both are tested wherever CI runs
        # (ERT_SKIP_DISTRO=1 skips it; no Debian mirror is a printed skip). See scripts/test-distro.sh.
        if [ "${ERT_SKIP_DISTRO:-0}" != 1 ]; then
            case "$(cat /etc/debian_version 2>/dev/null)" in
                13* | trixie*) other=bookworm ;;
                *) other=trixie ;;
            esac
            step "distro-$other" bash "$ERT_ROOT/scripts/test-distro.sh" "$other"
            # The install paths on a stock Debian 12 cloud image before demo.sh or test.sh ran:
            # `pip install .` (YAML render, NAT without libnftables or python-iptables) and
            # build.sh with the iptables package removed (it installs its own prerequisites).
            step fresh-install bash "$ERT_ROOT/scripts/test-distro.sh" bookworm \
                "bash scripts/fresh-install-check.sh --throwaway-machine"
        fi
    fi
fi

if [ "${#failed[@]}" -gt 0 ]; then
    ert_log "FAILED: ${failed[*]}"
    exit 1
fi
ert_log "all checks passed"
