"""End to end over IPv6: an IPv6-only router and a dual-stack router in the shared topology (issue 7).

The router pods here are made with add_pod(dad=True): the plugin's net1 runs
real duplicate address detection, so ADD takes a second or two, as on a node.
Everything is judged from outside, as in test_e2e: the CNI result, the kernel
state through tests/oracle.py, the source address the IPv6 servers saw.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest

from tests import oracle
from tests.cni import ALL_VERSIONS, CHECK_VERSIONS, IFNAME, Plugin, router_config, with_ip, with_prev_result
from tests.dualstack import (
    RESERVED_CIDR,
    RESERVED_CIDR6,
    V4_DNAT,
    V4_REDIRECTS,
    V4_SNAT,
    V6_DESTINATIONS,
    V6_DNAT,
    V6_REDIRECTS,
    V6_SNAT,
    assert_log_in_order,
    assert_nat_table,
    assert_net1,
    assert_redirected,
    assert_result,
    assert_saved_default,
    check_passes,
    dual_config,
    error_text,
    v4_router_routes,
    v6_config,
    v6_router_routes,
)
from tests.expect import assert_unchanged, fail_with, succeed
from tests.topology import (
    CLUSTER_GATEWAY6,
    GATEWAY,
    GATEWAY6,
    POD_ETH0_INDEX,
    RESERVED_IP,
    RESERVED_IP6,
    ROUTER_POD_IP,
    ROUTER_POD_IP6,
    Pod,
    Topology,
    TopologyError,
    ip6,
    write_sysctl,
)

pytestmark = pytest.mark.netns


# --- IPv6-only router ----------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["0.2.0", "0.4.0", "1.0.0"])
def test_ipv6_only_router(version: str, topology: Topology, dad_pod: Pod, plugin: Plugin, log_file: Path) -> None:
    """[version] IPv6-only: net1 gets the v6 address after DAD, v6 traffic is redirected, IPv4 is left alone."""
    pod = dad_pod
    before = oracle.snapshot(pod.ns)
    routes4_before = oracle.main_routes(pod.ns, "-4")
    conf = v6_config(version, log_file)

    started = time.monotonic()
    result = succeed(plugin.add(conf, pod.path), expect_output=True)
    add_seconds = time.monotonic() - started
    assert_result(result, version, pod, [RESERVED_CIDR6], [GATEWAY6])
    assert_net1(topology, pod, v4=[], v6=[RESERVED_CIDR6])
    # DAD really ran on net1 (the pod's default), and ADD returned only after it had finished.
    assert oracle.sysctl(pod.ns, f"net/ipv6/conf/{IFNAME}/accept_dad") == "1"
    assert oracle.main_routes(pod.ns, "-6") == v6_router_routes(), oracle.route_lines(pod.ns, "-6")
    assert_saved_default(pod, "-6", CLUSTER_GATEWAY6)
    # No IPv4 gateway: the pod keeps its IPv4 routes and forwarding, and gets no IPv4 NAT.
    assert oracle.main_routes(pod.ns, "-4") == routes4_before, oracle.route_lines(pod.ns)
    assert oracle.sysctl(pod.ns, "net/ipv4/ip_forward") == "0"
    assert oracle.sysctl(pod.ns, "net/ipv6/conf/all/forwarding") == "1"
    assert_nat_table(pod, "ip6", V6_DNAT, V6_SNAT)
    assert not oracle.nft_table_exists(pod.ns, "ip", "egress_cni")

    assert_redirected(topology, ROUTER_POD_IP6, RESERVED_IP6, V6_REDIRECTS)
    with pytest.raises(TopologyError):  # nothing listens on the pod's IPv4 address and nothing redirects it
        topology.request("tcp", 8080, host=ROUTER_POD_IP, timeout=2)
    assert_log_in_order(
        log_file,
        [
            "Called CNI ADD",
            f"Gateway: {GATEWAY6}",
            f"IP Source Addresses: [{RESERVED_CIDR6}]",
            f"IP Destinations: [{' '.join(V6_DESTINATIONS)}]",
            "Created macvlan interface",
            f'Renamed macvlan to "{IFNAME}"',
            f"Adding route to gateway {GATEWAY6} on macvlan interface",
            f"deleted default route {{Ifindex: {POD_ETH0_INDEX} Dst: <nil> Src: <nil> Gw: {CLUSTER_GATEWAY6} "
            "Flags: [] Table: 254}",
            f"Added new default route with gateway {GATEWAY6}",
            "Enabled IP forwarding (net.ipv6.conf.all.forwarding=1)",
            *(f"Added nftables rule: {rule}" for rule in V6_DNAT + V6_SNAT),
        ],
    )
    cached = with_prev_result(conf, result) if version in CHECK_VERSIONS else conf
    if version in CHECK_VERSIONS:
        check_passes(plugin, cached, pod)

    succeed(plugin.delete(cached, pod.path), expect_output=False)
    assert_unchanged(before, pod.ns)
    succeed(plugin.delete(conf, pod.path), expect_output=False)  # idempotent
    assert_unchanged(before, pod.ns)
    assert add_seconds < 15, f"ADD took {add_seconds:.1f}s"


def test_ipv6_check_reports_what_broke(topology: Topology, dad_pod: Pod, plugin: Plugin, log_file: Path) -> None:
    """CHECK passes on a fresh IPv6 router, then names IPv6 forwarding, the NAT rules, and a deleted net1."""
    pod = dad_pod
    before = oracle.snapshot(pod.ns)
    conf = v6_config("1.0.0", log_file)
    checked = with_prev_result(conf, succeed(plugin.add(conf, pod.path), expect_output=True))
    check_passes(plugin, checked, pod)

    write_sysctl(pod.ns, "net/ipv6/conf/all/forwarding", "0")
    doc = fail_with(plugin.check(checked, pod.path), 105)
    assert "net.ipv6.conf.all.forwarding is 0" in error_text(doc), doc
    write_sysctl(pod.ns, "net/ipv6/conf/all/forwarding", "1")
    check_passes(plugin, checked, pod)

    oracle.netns_exec(pod.ns, "nft", "flush", "chain", "ip6", "egress_cni", "prerouting")
    doc = fail_with(plugin.check(checked, pod.path), 105)
    assert "NAT rules differ" in error_text(doc) and "2001:db8:ff::26" in error_text(doc), doc

    ip6(pod.ns, "link", "del", IFNAME)
    doc = fail_with(plugin.check(checked, pod.path), 105)
    assert f"interface {IFNAME!r} not found" in error_text(doc), doc

    succeed(plugin.delete(checked, pod.path), expect_output=False)
    assert_unchanged(before, pod.ns)


def test_ipv6_address_is_announced(topology: Topology, dad_pod: Pod, plugin: Plugin, log_file: Path) -> None:
    """ndisc_notify: after DAD the pod sends an unsolicited NA, and the gateway learns net1's MAC without traffic."""
    key = "net/ipv6/conf/lan-node/accept_untracked_na"
    try:
        original = oracle.sysctl(topology.lan, key)
    except RuntimeError:
        pytest.skip("the kernel has no accept_untracked_na (Linux < 5.18): cannot watch unsolicited NAs")
    # Linux only creates a neighbour entry from an unsolicited NA when told to.
    write_sysctl(topology.lan, key, "1")
    conf = v6_config("1.0.0", log_file)
    try:
        mac = succeed(plugin.add(conf, dad_pod.path), expect_output=True)["interfaces"][0]["mac"]
        learned: List[Any] = []
        for _ in range(50):
            learned = oracle.ip_json(topology.lan, "-6", "neigh", "show", RESERVED_IP6)
            if learned and learned[0].get("lladdr"):
                break
            time.sleep(0.05)
        assert learned, f"the gateway never heard of {RESERVED_IP6}: no unsolicited NA arrived"
        assert learned[0]["lladdr"] == mac, f"the gateway maps {RESERVED_IP6} to {learned[0]}, not {mac}"
    finally:
        write_sysctl(topology.lan, key, original)
        plugin.delete(conf, dad_pod.path)


# --- dual-stack router ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_dual_stack_router(version: str, topology: Topology, dad_pod: Pod, plugin: Plugin, log_file: Path) -> None:
    """[version] Both families: addresses, gateways, default routes, NAT tables, traffic; DEL restores both."""
    pod = dad_pod
    before = oracle.snapshot(pod.ns)
    conf = dual_config(version, log_file)

    result = succeed(plugin.add(conf, pod.path), expect_output=True)
    assert_result(result, version, pod, [RESERVED_CIDR, RESERVED_CIDR6], [GATEWAY, GATEWAY6])
    assert_net1(topology, pod, v4=[RESERVED_CIDR], v6=[RESERVED_CIDR6])
    assert oracle.main_routes(pod.ns, "-4") == v4_router_routes(), oracle.route_lines(pod.ns)
    assert oracle.main_routes(pod.ns, "-6") == v6_router_routes(), oracle.route_lines(pod.ns, "-6")
    assert_saved_default(pod, "-4", "10.128.10.1")
    assert_saved_default(pod, "-6", CLUSTER_GATEWAY6)
    assert oracle.sysctl(pod.ns, "net/ipv4/ip_forward") == "1"
    assert oracle.sysctl(pod.ns, "net/ipv6/conf/all/forwarding") == "1"
    assert_nat_table(pod, "ip", V4_DNAT, V4_SNAT)
    assert_nat_table(pod, "ip6", V6_DNAT, V6_SNAT)

    assert_redirected(topology, ROUTER_POD_IP, RESERVED_IP, V4_REDIRECTS)
    assert_redirected(topology, ROUTER_POD_IP6, RESERVED_IP6, V6_REDIRECTS)
    assert_log_in_order(
        log_file,
        [
            f"Gateway: {GATEWAY}, {GATEWAY6}",
            f"IP Source Addresses: [{RESERVED_CIDR} {RESERVED_CIDR6}]",
            "Enabled IP forwarding (net.ipv4.ip_forward=1)",
            "Enabled IP forwarding (net.ipv6.conf.all.forwarding=1)",
        ],
    )
    cached = with_prev_result(conf, result) if version in CHECK_VERSIONS else conf
    if version in CHECK_VERSIONS:
        check_passes(plugin, cached, pod)

    succeed(plugin.delete(cached, pod.path), expect_output=False)
    assert_unchanged(before, pod.ns)
    succeed(plugin.delete(conf, pod.path), expect_output=False)
    assert_unchanged(before, pod.ns)


def test_family_without_gateway_keeps_its_routes(
    topology: Topology, dad_pod: Pod, plugin: Plugin, log_file: Path
) -> None:
    """An IPv6 address but no IPv6 gateway: net1 gets it, IPv6 keeps the pod's default route, no IPv6 NAT."""
    pod = dad_pod
    before = oracle.snapshot(pod.ns)
    routes6_before = oracle.main_routes(pod.ns, "-6")
    conf = dual_config(
        "1.0.0", log_file, gateway=GATEWAY, destinations=["8080 tcp 203.0.113.26 80", "8443 TCP 203.0.113.27/30 443"]
    )
    result = succeed(plugin.add(conf, pod.path), expect_output=True)
    assert result["ips"] == [
        {"address": RESERVED_CIDR, "gateway": GATEWAY, "interface": 0},
        {"address": RESERVED_CIDR6, "interface": 0},
    ], result
    assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": GATEWAY}], result
    assert_net1(topology, pod, v4=[RESERVED_CIDR], v6=[RESERVED_CIDR6])
    assert oracle.main_routes(pod.ns, "-4") == v4_router_routes(), oracle.route_lines(pod.ns)
    # The IPv6 table only gains net1's connected routes; the default stays on eth0.
    extra6 = sorted([("2001:db8:12::/64", "", IFNAME), ("fe80::/64", "", IFNAME)])
    assert oracle.main_routes(pod.ns, "-6") == sorted(routes6_before + extra6), oracle.route_lines(pod.ns, "-6")
    assert oracle.sysctl(pod.ns, "net/ipv6/conf/all/forwarding") == "0"
    assert not oracle.nft_table_exists(pod.ns, "ip6", "egress_cni")
    assert_nat_table(pod, "ip", V4_DNAT[:2], V4_SNAT)
    assert_redirected(topology, ROUTER_POD_IP, RESERVED_IP, {("tcp", 8080): "203.0.113.26:80"})
    with pytest.raises(TopologyError):
        topology.request("tcp", 8080, host=ROUTER_POD_IP6, timeout=2)
    assert_log_in_order(log_file, ["No IPv6 gateway: the pod keeps its IPv6 default route; no IPv6 NAT"])
    check_passes(plugin, with_prev_result(conf, result), pod)
    succeed(plugin.delete(conf, pod.path), expect_output=False)
    assert_unchanged(before, pod.ns)


@pytest.mark.parametrize("version", ["0.2.0", "1.0.0"])
def test_every_address_is_configured_and_the_first_of_each_family_is_the_source(
    version: str, topology: Topology, dad_pod: Pod, plugin: Plugin, log_file: Path
) -> None:
    """[version] Two addresses per family: all on net1 and in a 1.0 result; the first per family in 0.2 and SNAT."""
    pod = dad_pod
    before = oracle.snapshot(pod.ns)
    addresses = [RESERVED_CIDR6, RESERVED_CIDR, "2001:db8:12::98/64", "192.168.12.98/24"]
    conf = dual_config(version, log_file, addresses=addresses)
    result = succeed(plugin.add(conf, pod.path), expect_output=True)
    assert_result(result, version, pod, addresses, [GATEWAY, GATEWAY6])
    assert_net1(topology, pod, v4=[RESERVED_CIDR, "192.168.12.98/24"], v6=[RESERVED_CIDR6, "2001:db8:12::98/64"])
    assert_nat_table(pod, "ip", V4_DNAT, V4_SNAT)
    assert_nat_table(pod, "ip6", V6_DNAT, V6_SNAT)
    assert_redirected(topology, ROUTER_POD_IP, RESERVED_IP, {("tcp", 8080): "203.0.113.26:80"})
    assert_redirected(topology, ROUTER_POD_IP6, RESERVED_IP6, {("udp", 80): "[2001:db8:ff::27]:80"})
    succeed(plugin.delete(conf, pod.path), expect_output=False)
    assert_unchanged(before, pod.ns)


# --- configuration errors: code 7, nothing touched -------------------------------------------------

V4_ONLY = {"addresses": [RESERVED_CIDR], "gateway": GATEWAY}
DUAL_V4_GATEWAY = {"addresses": [RESERVED_CIDR, RESERVED_CIDR6], "gateway": GATEWAY}
V6_ONLY = {"addresses": [RESERVED_CIDR6], "gateway": GATEWAY6}
CONFIG_ERRORS: List[Tuple[str, Dict[str, Any], Optional[str]]] = [
    # (id, ip object changes, text the error must contain)
    (
        "v6-destination-without-v6-address",
        {**V4_ONLY, "destinations": ["8080 tcp 203.0.113.26 80", "8080 tcp 2001:db8:ff::26 80"]},
        "'8080 tcp 2001:db8:ff::26 80'",
    ),
    (
        "v6-fallback-without-v6-address",
        {**V4_ONLY, "destinations": ["8080 tcp 203.0.113.26 80", "2001:db8:ff::27"]},
        "'2001:db8:ff::27'",
    ),
    ("v6-fallbackIP-without-v6-address", {**V4_ONLY, "destinations": [], "fallbackIP": "2001:db8:ff::27"}, None),
    (
        "v6-destination-without-v6-gateway",
        {**DUAL_V4_GATEWAY, "destinations": ["8080 tcp 203.0.113.26 80", "8080 tcp 2001:db8:ff::26 80"]},
        "'8080 tcp 2001:db8:ff::26 80'",
    ),
    (
        "v4-destination-without-v4-address",
        {**V6_ONLY, "destinations": ["8080 tcp 2001:db8:ff::26 80", "8443 tcp 203.0.113.27 443"]},
        "'8443 tcp 203.0.113.27 443'",
    ),
    ("two-v6-gateways", {**V6_ONLY, "gateway": [GATEWAY6, "2001:db8:12::2"]}, "more than one IPv6 gateway"),
    ("v6-gateway-without-v6-address", {**V4_ONLY, "gateway": [GATEWAY, GATEWAY6]}, "no IPv6 address"),
    ("v6-gateway-is-the-reserved-address", {**V6_ONLY, "gateway": RESERVED_IP6}, "reserved address itself"),
    ("zone-id-in-gateway", {**V6_ONLY, "gateway": "fe80::1%eth0"}, "fe80::1%eth0"),
    ("zone-id-in-gateway-list", {**DUAL_V4_GATEWAY, "gateway": [GATEWAY, "fe80::1%net1"]}, "fe80::1%net1"),
    ("zone-id-in-address", {**V6_ONLY, "addresses": ["2001:db8:12::99%net1/64"]}, "2001:db8:12::99%net1/64"),
    (
        "zone-id-in-destination",
        {**V6_ONLY, "destinations": ["8080 tcp fe80::26%eth0 80"]},
        "'8080 tcp fe80::26%eth0 80'",
    ),
    ("zone-id-in-fallbackIP", {**V6_ONLY, "destinations": [], "fallbackIP": "fe80::27%eth0"}, "fe80::27%eth0"),
    (
        "v6-fallback-not-last-in-v6",
        {**V6_ONLY, "destinations": ["2001:db8:ff::27", "8080 tcp 2001:db8:ff::26 80"]},
        "'8080 tcp 2001:db8:ff::26 80'",
    ),
    (
        "duplicate-v6-port",
        {**V6_ONLY, "destinations": ["8080 tcp 2001:db8:ff::26 80", "8080 TCP 2001:db8:ff::27 443"]},
        "'8080 TCP 2001:db8:ff::27 443'",
    ),
    (
        "two-v6-fallbacks",
        {**V6_ONLY, "destinations": ["2001:db8:ff::26"], "fallbackIP": "2001:db8:ff::27"},
        "fallbackIP",
    ),
]


@pytest.mark.parametrize(("changes", "named"), [c[1:] for c in CONFIG_ERRORS], ids=[c[0] for c in CONFIG_ERRORS])
def test_ipv6_config_errors(
    changes: Dict[str, Any], named: Optional[str], topology: Topology, pod: Pod, plugin: Plugin, log_file: Path
) -> None:
    """ADD refuses with code 7 (naming the culprit) and leaves pod and node as they were; DEL after it too."""
    pod_before, node_before = oracle.snapshot(pod.ns), oracle.snapshot(topology.node)
    conf = with_ip(router_config("1.0.0", str(log_file)), **changes)
    doc = fail_with(plugin.add(conf, pod.path), 7)
    if named:
        assert named in error_text(doc), doc
    assert_unchanged(pod_before, pod.ns)
    assert_unchanged(node_before, topology.node)
    succeed(plugin.delete(conf, pod.path), expect_output=False)  # the runtime follows a failed ADD with DEL
    assert_unchanged(pod_before, pod.ns)


def test_dual_stack_grammar_holds_per_family(plugin: Plugin, log_file: Path) -> None:
    """The counterpart of the table: one PORT/PROTO in both families and a fallback per family is valid."""
    conf = dual_config(
        "1.1.0",
        log_file,
        destinations=["8080 tcp 203.0.113.26 80", "8080 tcp 2001:db8:ff::26 80", "2001:db8:ff::27", "203.0.113.27"],
    )
    env = {"CNI_CONTAINERID": "", "CNI_NETNS": "", "CNI_IFNAME": ""}
    succeed(plugin.run("STATUS", conf, env=env), expect_output=False)  # STATUS validates the whole config


# --- duplicate address detection ------------------------------------------------------------------


def test_duplicate_ipv6_address_fails_add(topology: Topology, dad_pod: Pod, plugin: Plugin, log_file: Path) -> None:
    """The reserved address is already in use on the LAN: DAD fails, ADD says so (101) and undoes everything."""
    pod = dad_pod
    before, node_before = oracle.snapshot(pod.ns), oracle.snapshot(topology.node)
    conf = v6_config("1.0.0", log_file)
    ip6(topology.lan, "addr", "add", RESERVED_CIDR6, "dev", "lan-node", "nodad")
    try:
        doc = fail_with(plugin.add(conf, pod.path), 101)
        assert "duplicate address detected" in doc["msg"], doc
        assert RESERVED_IP6 in error_text(doc), doc
        assert_unchanged(before, pod.ns)
        assert_unchanged(node_before, topology.node)
        succeed(plugin.delete(conf, pod.path), expect_output=False)
        assert_unchanged(before, pod.ns)
        assert "ADD failed: rolling back" in log_file.read_text()
    finally:
        ip6(topology.lan, "addr", "del", RESERVED_CIDR6, "dev", "lan-node")
        ip6(topology.lan, "neigh", "flush", "all")
