#!/usr/bin/env bash
# The README's install paths on a stock Debian 12 machine, as a newcomer meets them, before
# demo.sh or test.sh have installed anything:
#
#   1. `pip install .` into a virtualenv (python3-venv from apt, nothing else): `egress-router
#      render` reads the product page's YAML, and a CNI ADD with natBackend auto, in throwaway
#      namespaces, either sets up NAT or fails with one error naming both NAT backends and what
#      to install for each (a stock image has neither libnftables/nft nor python-iptables);
#   2. `apt-get remove iptables`, then `bash scripts/build.sh`: it installs its own
#      prerequisites (gcc, python3-venv, libnftables1, iptables...) and builds and smoke-tests
#      the executable with both NAT backends.
#
# It removes packages and installs others: run it only on a throwaway machine, e.g. in a
# pristine Debian 12 root filesystem with the shared fresh-run tool (~3 min with a ready rootfs):
#
#   fresh-run.sh . 'bash scripts/fresh-install-check.sh --throwaway-machine'
#
# Exit status 0 when every check passed.
set -euo pipefail

[ "${1:-}" = --throwaway-machine ] || {
    sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
[ "$(id -u)" = 0 ] || { echo "fresh-install-check.sh: run as root" >&2; exit 1; }
say() { printf '\n== %s\n' "$*"; }
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

say "1. pip install . into a virtualenv"
apt-get update -qq
apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
VENV=$(mktemp -d /tmp/ert-venv.XXXXXX)
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q .
for what in "libnftables.so.1" "nft" "python-iptables"; do
    case $what in
        *.so.1) ! ldconfig -p | grep -q "$what" ;;
        nft) ! command -v nft >/dev/null ;;
        *) ! "$VENV/bin/python" -c 'import iptc' 2>/dev/null ;;
    esac || { echo "not a stock machine: $what is present" >&2; exit 1; }
done
echo "  (no libnftables.so.1, no nft, no python-iptables)"

say "egress-router render conf/egressrouter-example.yaml"
"$VENV/bin/egress-router" render conf/egressrouter-example.yaml | grep '^kind:'

say "CNI ADD with natBackend auto, in throwaway namespaces"
# The node is a fresh network namespace (unshare --net), the pod a named one inside it.
RESULT=$(mktemp /tmp/ert-add.XXXXXX)
unshare --net -- bash -euo pipefail -c '
    ip link set lo up
    ip link add ermaster0 type veth peer name ermaster0p
    ip link set ermaster0 up
    ip link set ermaster0p up
    ip netns add ert-fresh-pod
    trap "ip netns del ert-fresh-pod" EXIT
    ip link add eth0 netns ert-fresh-pod type veth peer name ert-fresh-c
    ip -n ert-fresh-pod link set lo up
    ip -n ert-fresh-pod link set eth0 up
    ip -n ert-fresh-pod addr add 10.128.10.18/23 dev eth0
    ip -n ert-fresh-pod route add default via 10.128.10.1
    cni() {
        CNI_COMMAND=$1 CNI_CONTAINERID=fresh-install-check CNI_NETNS=/run/netns/ert-fresh-pod \
            CNI_IFNAME=net1 CNI_PATH=/opt/cni/bin "$0/bin/egress-router" <<EOF
{"cniVersion": "1.0.0", "name": "egress-router-cni-nad", "type": "egress-router",
 "interfaceArgs": {"master": "ermaster0"}, "natBackend": "auto", "log_file": "/tmp/egress-router-log",
 "ip": {"addresses": ["192.168.12.99/24"], "gateway": "192.168.12.1",
        "destinations": ["8080 TCP 203.0.113.26/30 80"]}}
EOF
    }
    rc=0
    cni ADD >"$1" 2>/dev/null || rc=$?
    echo "  ADD exit status $rc"
    if [ "$rc" = 0 ]; then
        "$0/bin/egress-router" inspect --netns /run/netns/ert-fresh-pod \
            --log-file /tmp/egress-router-log | sed -n "/^NAT rules/,/^Log/p"
    fi
    cni DEL >/dev/null
    echo "  DEL exit status 0"
' "$VENV" "$RESULT"
"$VENV/bin/python" - "$RESULT" <<'EOF'
import json, sys
text = open(sys.argv[1]).read()
doc = json.loads(text)
print("  " + json.dumps(doc, indent=2).replace("\n", "\n  "))
if "code" in doc:
    details = doc["details"]
    assert doc["code"] == 50 and doc["msg"].startswith("no NAT backend is available"), doc
    for needle in ("nftables:", "iptables:", "pip install python-iptables",
                   "apt-get install iptables"):
        assert needle in details, f"the error does not say {needle!r}"
    print("  -> one error naming both backends and what to install for each")
else:
    print("  -> NAT set up without libnftables, nft or python-iptables")
EOF

say "2. apt-get remove iptables, then bash scripts/build.sh"
apt-get remove -y -qq iptables >/dev/null
! command -v iptables >/dev/null || { echo "iptables is still installed" >&2; exit 1; }
start=$(date +%s)
bash scripts/build.sh
echo "  build.sh took $(($(date +%s) - start)) s"
dist/egress-router/egress-router version

say "all checks passed"
