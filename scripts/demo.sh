#!/usr/bin/env bash
# Demo of the product manual's egress router, in throwaway network namespaces.
#
#   scripts/demo.sh            (as root)
#
# Builds the test topology (node, lan, ext with echo servers, cluster, a router
# pod and a client pod; see tests/topology.py), runs CNI ADD with the real
# executable inside the node namespace, shows the log file, the router pod's
# `ip route` and nft rules, sends TCP 8080, TCP 8443 and UDP 80 from the client
# pod through the router and prints the source address each server saw, then
# adds a second router and lists both with `egress-router inspect --all`, runs DEL and
# removes everything (also on error or Ctrl-C).
#
#   EGRESS_ROUTER_EXE=dist/egress-router/egress-router scripts/demo.sh   demo a frozen build
set -euo pipefail

ERT_PROG=demo.sh
# shellcheck source=scripts/lib/setup.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/setup.sh"

ert_is_root || ert_die "must run as root (it creates network namespaces)"

if [ "${1:-}" != "--inside" ]; then
    ert_setup ""
    # The demo proper runs in a fresh network namespace of its own: even a
    # mistake cannot reach this machine's interfaces.
    exec unshare --net -- bash "${BASH_SOURCE[0]}" --inside </dev/null
fi

cd "$ERT_ROOT"
PY=${ERT_PYTHON:-python3}
read -r -a EXE <<<"${EGRESS_ROUTER_EXE:-$ERT_BIN/egress-router}"
PREFIX="ert-d$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')"
NODE="$PREFIX-node"
POD="$PREFIX-pod"
WORK=$(mktemp -d /tmp/ert-demo.XXXXXX)
LOG="$WORK/egress-router-log"
CONF="$WORK/egress-router.json"
CONTAINER_ID=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
POD2="$PREFIX-pod2"
LOG2="$WORK/egress-router-second-log"
CONF2="$WORK/egress-router-second.json"
CONTAINER_ID2=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')

cleanup() {
    "$PY" -m tests.topology down --prefix "$PREFIX" || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

title() {
    if [ -t 1 ]; then
        printf '\n\033[1m== %s\033[0m\n' "$*"
    else
        printf '\n== %s\n' "$*"
    fi
}

cni() { # cni COMMAND [POD CONTAINER_ID CONFIG POD_NAME]: the first router unless told otherwise
    ip netns exec "$NODE" env CNI_COMMAND="$1" CNI_CONTAINERID="${3:-$CONTAINER_ID}" \
        CNI_NETNS="/run/netns/${2:-$POD}" CNI_IFNAME=net1 CNI_PATH=/opt/cni/bin \
        CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=openshift-egress-router;K8S_POD_NAME=${5:-egress-router-cni-deployment}" \
        "${EXE[@]}" <"${4:-$CONF}"
}

cat >"$CONF" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "egress-router-cni-nad",
  "type": "egress-router",
  "interfaceArgs": {"master": "ermaster0", "mode": "bridge"},
  "ip": {
    "addresses": ["192.168.12.99/24"],
    "gateway": "192.168.12.1",
    "destinations": ["80 UDP 10.0.0.99/30", "8080 TCP 203.0.113.26/30 80", "8443 TCP 203.0.113.27/30 443"]
  },
  "log_file": "$LOG",
  "log_level": "debug"
}
EOF

title "Topology (namespaces $PREFIX-*)"
"$PY" -m tests.topology up --prefix "$PREFIX" >/dev/null
ip netns list | grep "^$PREFIX-" | sed 's/^/  /'

title "Router pod before ADD: ip route"
ip -n "$POD" route

title "CNI ADD (${EXE[*]} in $NODE)"
cni ADD | "$PY" -m json.tool

title "cat $LOG"
cat "$LOG"

title "Router pod: ip route"
ip -n "$POD" route

title "Router pod: nft list table ip egress_cni"
ip netns exec "$POD" nft list table ip egress_cni

title "Requests from the client pod (10.128.10.19) to the router pod (10.128.10.18)"
for request in "tcp 8080" "tcp 8443" "udp 80"; do
    # shellcheck disable=SC2086  # "proto port" split on purpose
    answer=$("$PY" -m tests.topology request --prefix "$PREFIX" $request)
    printf '  %-9s -> %s\n' "$request" "$answer"
done

title "egress-router inspect --container-id ${CONTAINER_ID:0:12} --check (the manual's verification in one command)"
# No --log-file: ADD recorded its log path (not the default here) with the router.
ip netns exec "$NODE" env -u CNI_COMMAND "${EXE[@]}" inspect --container-id "${CONTAINER_ID:0:12}" \
    --check --config "$CONF" |
    awk '/^Log/ { inlog = 1; print; next }
         inlog && ++n > 3 { if (n == 4) print "  … (the rest as printed above)"; next }
         { print }'

title "A second router (pod $POD2, 192.168.12.98), then egress-router inspect --all"
ip netns add "$POD2"
ip link add eth0 netns "$POD2" type veth peer name "${PREFIX}p2"
ip -n "$POD2" link set lo up
ip -n "$POD2" link set eth0 up
ip -n "$POD2" addr add 10.128.10.28/23 dev eth0
ip -n "$POD2" route add default via 10.128.10.1
sed -e 's|192.168.12.99/24|192.168.12.98/24|' -e "s|$LOG|$LOG2|" "$CONF" >"$CONF2"
cni ADD "$POD2" "$CONTAINER_ID2" "$CONF2" egress-router-second >/dev/null
echo "  CNI ADD into $POD2: exit status 0"
# Every router on this machine, whichever namespace or process holds it (exit 1 if one is unhealthy).
rc=0
ip netns exec "$NODE" env -u CNI_COMMAND "${EXE[@]}" inspect --all || rc=$?
echo "  exit status $rc"

title "CNI DEL (both routers)"
cni DEL
cni DEL "$POD2" "$CONTAINER_ID2" "$CONF2"
echo "  exit status 0"

title "Router pod after DEL: ip route"
ip -n "$POD" route
if ip netns exec "$POD" nft list tables | grep -q egress_cni; then
    ert_die "DEL left the nft table egress_cni behind"
fi
echo "  (no egress_cni table)"
