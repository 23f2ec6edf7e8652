"""End to end: the real executable builds an egress router in a throwaway pod, traffic flows, DEL undoes it.

Everything is judged from outside: the CNI result on stdout, the kernel state
through tests/oracle.py (iproute2 and nft), the source address the destination
servers saw, and the log file.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Set

import pytest

from tests import oracle
from tests.cni import (
    ALL_VERSIONS,
    CHECK_VERSIONS,
    IFNAME,
    Outcome,
    Plugin,
    router_config,
    with_ip,
    with_prev_result,
)
from tests.topology import (
    CLUSTER_GATEWAY,
    GATEWAY,
    MASTER,
    POD_ETH0_INDEX,
    RESERVED_IP,
    Pod,
    Topology,
    ip,
    parse_reply,
    write_sysctl,
)

pytestmark = pytest.mark.netns

RESERVED_CIDR = f"{RESERVED_IP}/24"
ROUTER_ROUTES = sorted(
    [
        ("default", GATEWAY, IFNAME),
        ("10.128.10.0/23", "", "eth0"),
        ("192.168.12.0/24", "", IFNAME),
        (GATEWAY, "", IFNAME),
    ]
)
DNAT_RULES = [
    'iifname "eth0" udp dport 80 dnat to 10.0.0.99',
    'iifname "eth0" tcp dport 8080 dnat to 203.0.113.26:80',
    'iifname "eth0" tcp dport 8443 dnat to 203.0.113.27:443',
]
SNAT_RULES = [f'oifname "{IFNAME}" snat to {RESERVED_IP}']
# (proto, port on the router) -> where the destination server must see the request arrive.
REDIRECTS = {("tcp", 8080): "203.0.113.26:80", ("tcp", 8443): "203.0.113.27:443", ("udp", 80): "10.0.0.99:80"}
# The product manual's log, with the nftables spelling of the rules; the plugin may log more in between.
MANUAL_LOG = [
    "Called CNI ADD",
    f"Gateway: {GATEWAY}",
    f"IP Source Addresses: [{RESERVED_CIDR}]",
    "IP Destinations: [80 UDP 10.0.0.99/30 8080 TCP 203.0.113.26/30 80 8443 TCP 203.0.113.27/30 443]",
    "Created macvlan interface",
    f'Renamed macvlan to "{IFNAME}"',
    f"Adding route to gateway {GATEWAY} on macvlan interface",
    "deleted default route "
    f"{{Ifindex: {POD_ETH0_INDEX} Dst: <nil> Src: <nil> Gw: {CLUSTER_GATEWAY} Flags: [] Table: 254}}",
    f"Added new default route with gateway {GATEWAY}",
    *(f"Added nftables rule: {rule}" for rule in DNAT_RULES + SNAT_RULES),
]
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) \[(debug|verbose|error|panic)\] (.+)$")


# --- helpers -------------------------------------------------------------------------------------


def succeed(outcome: Outcome, expect_output: bool) -> Any:
    """Exit 0 and one JSON document (ADD, VERSION) or an empty stdout (DEL, CHECK, GC, STATUS)."""
    assert outcome.returncode == 0, outcome.describe()
    if expect_output:
        return outcome.document()
    assert outcome.stdout.strip() == "", outcome.describe()
    return None


def fail_with(outcome: Outcome, code: int) -> Dict[str, Any]:
    assert outcome.returncode == 1, outcome.describe()
    doc: Dict[str, Any] = outcome.document()
    assert doc.get("code") == code, outcome.describe()
    assert doc.get("msg"), outcome.describe()
    return doc


def assert_unchanged(before: Dict[str, Any], ns: str) -> None:
    diff = oracle.snapshot_diff(before, oracle.snapshot(ns))
    assert not diff, f"{ns} differs from its state before the test:\n" + "\n".join(diff)


def link_names(ns: str) -> Set[str]:
    return {str(x["ifname"]) for x in oracle.links(ns)}


def net1_mac(pod: Pod) -> str:
    link = oracle.link(pod.ns, IFNAME)
    assert link is not None, f"{IFNAME} missing in {pod.ns}"
    return str(link["address"])


def assert_result(doc: Dict[str, Any], version: str, pod: Pod) -> None:
    """The ADD result has exactly the shape of VERSION and describes net1."""
    assert doc["cniVersion"] == version
    default_route = {"dst": "0.0.0.0/0", "gw": GATEWAY}
    if version in ("0.1.0", "0.2.0"):
        assert set(doc) <= {"cniVersion", "ip4", "dns"}, doc
        assert doc["ip4"]["ip"] == RESERVED_CIDR
        assert doc["ip4"]["gateway"] == GATEWAY
        assert default_route in doc["ip4"].get("routes", []), doc
        return
    assert set(doc) <= {"cniVersion", "interfaces", "ips", "routes", "dns"}, doc
    assert doc["interfaces"] == [{"name": IFNAME, "mac": net1_mac(pod), "sandbox": pod.path}]
    expected_ip: Dict[str, Any] = {"address": RESERVED_CIDR, "gateway": GATEWAY, "interface": 0}
    if version in ("0.3.0", "0.3.1", "0.4.0"):
        expected_ip["version"] = "4"
    assert doc["ips"] == [expected_ip]
    assert default_route in doc["routes"], doc


def assert_router_state(topology: Topology, pod: Pod, dnat: Optional[List[str]] = None) -> None:
    """The kernel state the manual describes: macvlan net1, routes, forwarding, NAT table."""
    link = oracle.link(pod.ns, IFNAME)
    assert link is not None, f"{IFNAME} missing"
    assert link["linkinfo"]["info_kind"] == "macvlan"
    assert link["linkinfo"]["info_data"]["mode"] == "bridge"
    master = oracle.link(topology.node, MASTER)
    assert master is not None
    # The parent lives in the node namespace: ip shows its index there plus a netnsid.
    assert link.get("link_index") == master["ifindex"] and "link_netnsid" in link, link
    assert "UP" in link["flags"], link["flags"]
    assert oracle.ipv4_addresses(pod.ns, IFNAME) == [RESERVED_CIDR]
    assert oracle.main_routes(pod.ns) == ROUTER_ROUTES, oracle.route_lines(pod.ns)
    assert oracle.sysctl(pod.ns, "net/ipv4/ip_forward") == "1"
    chains = oracle.nft_chains(pod.ns, "ip", "egress_cni")
    assert {name: (c["type"], c["hook"], c["prio"]) for name, c in chains.items()} == {
        "prerouting": ("nat", "prerouting", -100),
        "postrouting": ("nat", "postrouting", 100),
    }
    assert oracle.nft_rule_lines(pod.ns, "ip", "egress_cni", "prerouting") == (dnat or DNAT_RULES)
    assert oracle.nft_rule_lines(pod.ns, "ip", "egress_cni", "postrouting") == SNAT_RULES


def assert_redirected(topology: Topology, redirects: Dict[Any, str]) -> None:
    """Each request to the router pod reaches its destination, which sees the reserved address."""
    for (proto, port), destination in redirects.items():
        reply = parse_reply(topology.request(proto, port))
        assert reply["peer_ip"] == RESERVED_IP, (proto, port, reply)
        assert reply["local"] == destination, (proto, port, reply)
        assert reply["proto"] == proto


def assert_manual_log(log_file: Path, started: float) -> None:
    """Every line is '<RFC3339 UTC> [level] msg'; the manual's lines appear in its order, at debug."""
    lines = log_file.read_text().splitlines()
    parsed = []
    for line in lines:
        match = LOG_LINE.match(line)
        assert match, f"malformed log line: {line!r}"
        stamp = datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        assert started - 2 <= stamp.timestamp() <= time.time() + 2, f"timestamp not now (UTC): {line!r}"
        parsed.append((match.group(2), match.group(3)))
    position = 0
    for expected in MANUAL_LOG:
        found = next((i for i in range(position, len(parsed)) if parsed[i][1] == expected), None)
        assert found is not None, f"log lacks {expected!r} (in order) after line {position}:\n" + "\n".join(lines)
        assert parsed[found][0] == "debug", lines[found]
        position = found + 1
    errors = [line for line, (level, _msg) in zip(lines, parsed) if level in ("error", "panic")]
    assert not errors, "a successful ADD logged errors:\n" + "\n".join(errors)


def add_router(plugin: Plugin, conf: Dict[str, Any], pod: Pod) -> Dict[str, Any]:
    doc: Dict[str, Any] = succeed(plugin.add(conf, pod.path), expect_output=True)
    return doc


# --- ADD / CHECK / DEL for every spec version -----------------------------------------------------


@pytest.mark.parametrize("version", ALL_VERSIONS)
def test_add_check_del_roundtrip(version: str, topology: Topology, pod: Pod, plugin: Plugin, log_file: Path) -> None:
    """[version] ADD builds the manual's router, traffic is redirected, CHECK passes, DEL restores the pod."""
    pod_before, node_before = oracle.snapshot(pod.ns), oracle.snapshot(topology.node)
    conf = router_config(version, str(log_file))
    started = time.time()

    result = add_router(plugin, conf, pod)
    assert_result(result, version, pod)
    assert_router_state(topology, pod)
    assert_redirected(topology, REDIRECTS)
    assert_manual_log(log_file, started)
    assert link_names(topology.node) == {x["ifname"] for x in node_before["links"]}, "ADD left a link in the node"
    cached = with_prev_result(conf, result) if version in CHECK_VERSIONS else conf  # libcni: prevResult from 0.4.0
    if version in CHECK_VERSIONS:
        succeed(plugin.check(cached, pod.path), expect_output=False)

    succeed(plugin.delete(cached, pod.path), expect_output=False)
    assert_unchanged(pod_before, pod.ns)
    assert_unchanged(node_before, topology.node)
    succeed(plugin.delete(conf, pod.path), expect_output=False)  # DEL is idempotent
    assert_unchanged(pod_before, pod.ns)


@pytest.mark.parametrize("version", CHECK_VERSIONS)
def test_check_fails_after_net1_is_deleted(
    version: str, topology: Topology, pod: Pod, plugin: Plugin, log_file: Path
) -> None:
    """[version] CHECK reports a missing router interface (code 105); DEL still restores the pod."""
    before = oracle.snapshot(pod.ns)
    conf = router_config(version, str(log_file))
    checked = with_prev_result(conf, add_router(plugin, conf, pod))
    succeed(plugin.check(checked, pod.path), expect_output=False)

    ip(pod.ns, "link", "del", IFNAME)
    fail_with(plugin.check(checked, pod.path), 105)

    succeed(plugin.delete(checked, pod.path), expect_output=False)
    assert_unchanged(before, pod.ns)


def test_check_fails_when_a_nat_rule_is_removed(pod: Pod, plugin: Plugin, log_file: Path) -> None:
    """CHECK looks at untracked state too: a flushed NAT chain is reported."""
    conf = router_config("1.1.0", str(log_file))
    checked = with_prev_result(conf, add_router(plugin, conf, pod))
    oracle.netns_exec(pod.ns, "nft", "flush", "chain", "ip", "egress_cni", "prerouting")
    fail_with(plugin.check(checked, pod.path), 105)
    succeed(plugin.delete(checked, pod.path), expect_output=False)


def test_add_again_after_del(topology: Topology, pod: Pod, plugin: Plugin, log_file: Path) -> None:
    """ADD, DEL, ADD on the same pod: the second router works like the first."""
    before = oracle.snapshot(pod.ns)
    conf = router_config("1.0.0", str(log_file))
    for _ in range(2):
        add_router(plugin, conf, pod)
        assert_router_state(topology, pod)
        assert_redirected(topology, {("tcp", 8080): REDIRECTS[("tcp", 8080)]})
        succeed(plugin.delete(conf, pod.path), expect_output=False)
        assert_unchanged(before, pod.ns)


# --- DEL must succeed whatever is left ---------------------------------------------------------


def test_del_without_add(topology: Topology, pod: Pod, plugin: Plugin, log_file: Path) -> None:
    """DEL of an attachment that was never added succeeds and changes nothing."""
    before, node_before = oracle.snapshot(pod.ns), oracle.snapshot(topology.node)
    succeed(plugin.delete(router_config("1.0.0", str(log_file)), pod.path), expect_output=False)
    assert_unchanged(before, pod.ns)
    assert_unchanged(node_before, topology.node)


def test_del_with_empty_netns(topology: Topology, pod: Pod, plugin: Plugin, log_file: Path) -> None:
    """libcni sends CNI_NETNS= when the sandbox is gone: DEL succeeds and touches nothing."""
    conf = router_config("1.0.0", str(log_file))
    add_router(plugin, conf, pod)
    during = oracle.snapshot(pod.ns)
    succeed(plugin.run("DEL", conf, netns=""), expect_output=False)
    assert_unchanged(during, pod.ns)
    succeed(plugin.delete(conf, pod.path), expect_output=False)


def test_del_after_pod_netns_is_deleted(topology: Topology, pod: Pod, plugin: Plugin, log_file: Path) -> None:
    """The pod's namespace is gone before DEL: DEL succeeds and the node keeps nothing of the router."""
    node_before = oracle.snapshot(topology.node)
    conf = router_config("1.0.0", str(log_file))
    add_router(plugin, conf, pod)
    topology.remove_pod(pod)
    succeed(plugin.delete(conf, pod.path), expect_output=False)
    succeed(plugin.delete(conf, pod.path), expect_output=False)
    assert_unchanged(node_before, topology.node)


# --- fallback destinations -----------------------------------------------------------------------


def test_fallback_ip_catches_other_ports(topology: Topology, pod: Pod, plugin: Plugin, log_file: Path) -> None:
    """ip.fallbackIP: ports without a rule go to the fallback address, the port kept."""
    before = oracle.snapshot(pod.ns)
    conf = with_ip(
        router_config("1.0.0", str(log_file)),
        destinations=["8443 TCP 203.0.113.27/30 443"],
        fallbackIP="203.0.113.26",
    )
    add_router(plugin, conf, pod)
    assert_router_state(
        topology,
        pod,
        dnat=['iifname "eth0" tcp dport 8443 dnat to 203.0.113.27:443', 'iifname "eth0" dnat to 203.0.113.26'],
    )
    assert_redirected(
        topology,
        {
            ("tcp", 8443): "203.0.113.27:443",
            ("tcp", 80): "203.0.113.26:80",
            ("tcp", 443): "203.0.113.26:443",
            ("udp", 80): "203.0.113.26:80",
        },
    )
    succeed(plugin.delete(conf, pod.path), expect_output=False)
    assert_unchanged(before, pod.ns)


def test_bare_ip_destination_is_a_fallback(topology: Topology, pod: Pod, plugin: Plugin, log_file: Path) -> None:
    """A destination without port and protocol, last in the list, redirects everything else."""
    conf = with_ip(router_config("0.4.0", str(log_file)), destinations=["8080 TCP 203.0.113.26/30 80", "203.0.113.27"])
    add_router(plugin, conf, pod)
    assert_router_state(
        topology,
        pod,
        dnat=['iifname "eth0" tcp dport 8080 dnat to 203.0.113.26:80', 'iifname "eth0" dnat to 203.0.113.27'],
    )
    assert_redirected(
        topology, {("tcp", 8080): "203.0.113.26:80", ("tcp", 443): "203.0.113.27:443", ("udp", 80): "203.0.113.27:80"}
    )
    succeed(plugin.delete(conf, pod.path), expect_output=False)


def test_mtu_is_applied(topology: Topology, pod: Pod, plugin: Plugin, log_file: Path) -> None:
    """interfaceArgs.mtu below the master's becomes net1's MTU."""
    conf = router_config("1.0.0", str(log_file), interfaceArgs={"master": MASTER, "mode": "bridge", "mtu": 1400})
    add_router(plugin, conf, pod)
    link = oracle.link(pod.ns, IFNAME)
    assert link is not None and link["mtu"] == 1400
    assert_redirected(topology, {("tcp", 8080): REDIRECTS[("tcp", 8080)]})
    succeed(plugin.delete(conf, pod.path), expect_output=False)


# --- VERSION, GC, STATUS -------------------------------------------------------------------------


@pytest.mark.parametrize("stdin", ['{"cniVersion":"1.1.0"}', ""], ids=["libcni-stdin", "empty-stdin"])
def test_version(plugin: Plugin, stdin: str) -> None:
    """VERSION lists every spec version, with libcni's dummy environment."""
    env = {"CNI_CONTAINERID": None, "CNI_NETNS": "dummy", "CNI_IFNAME": "dummy", "CNI_PATH": "dummy", "CNI_ARGS": None}
    doc = succeed(plugin.run("VERSION", stdin, env=env), expect_output=True)
    assert set(doc) == {"cniVersion", "supportedVersions"}
    assert doc["cniVersion"] in ALL_VERSIONS
    assert sorted(doc["supportedVersions"]) == sorted(ALL_VERSIONS)


def test_status_and_gc(topology: Topology, pod: Pod, plugin: Plugin, log_file: Path) -> None:
    """STATUS is ready; GC with and without valid attachments leaves a running router alone."""
    conf = router_config("1.1.0", str(log_file))
    libcni_env = {"CNI_CONTAINERID": "", "CNI_NETNS": "", "CNI_IFNAME": ""}
    succeed(plugin.run("STATUS", conf, env=libcni_env), expect_output=False)
    result = add_router(plugin, conf, pod)
    valid = [{"containerID": plugin.container_id, "ifname": IFNAME}]
    gc_conf = {**conf, "cni.dev/valid-attachments": valid, "cni.dev/attachments": valid}
    succeed(plugin.run("GC", gc_conf, env=libcni_env), expect_output=False)
    succeed(plugin.run("GC", conf, env=libcni_env), expect_output=False)  # what `cnitool gc` sends
    succeed(plugin.check(with_prev_result(conf, result), pod.path), expect_output=False)
    assert_redirected(topology, {("udp", 80): REDIRECTS[("udp", 80)]})
    succeed(plugin.delete(conf, pod.path), expect_output=False)


# --- the pod's starting state varies ---------------------------------------------------------------


def test_pod_without_default_route(topology: Topology, pod: Pod, plugin: Plugin, log_file: Path) -> None:
    """No default route to replace: ADD still routes through net1, DEL leaves the pod without one again."""
    ip(pod.ns, "route", "del", "default")
    before = oracle.snapshot(pod.ns)
    conf = router_config("1.0.0", str(log_file))
    add_router(plugin, conf, pod)
    assert_router_state(topology, pod)
    assert_redirected(topology, {("tcp", 8443): REDIRECTS[("tcp", 8443)]})
    succeed(plugin.delete(conf, pod.path), expect_output=False)
    assert_unchanged(before, pod.ns)


def test_every_default_route_is_replaced_and_restored(
    topology: Topology, pod: Pod, plugin: Plugin, log_file: Path
) -> None:
    """A second (higher metric) default route must not bypass the router, and comes back on DEL."""
    ip(pod.ns, "route", "add", "default", "via", "10.128.10.2", "dev", "eth0", "metric", "100")
    before = oracle.snapshot(pod.ns)
    conf = router_config("1.0.0", str(log_file))
    add_router(plugin, conf, pod)
    assert_router_state(topology, pod)
    assert_redirected(topology, {("tcp", 8080): REDIRECTS[("tcp", 8080)]})
    succeed(plugin.delete(conf, pod.path), expect_output=False)
    assert_unchanged(before, pod.ns)


def test_ip_forward_already_on_stays_on(topology: Topology, pod: Pod, plugin: Plugin, log_file: Path) -> None:
    """DEL restores ip_forward to its value before ADD, here 1, not to the kernel default."""
    write_sysctl(pod.ns, "net/ipv4/ip_forward", "1")
    before = oracle.snapshot(pod.ns)
    conf = router_config("1.0.0", str(log_file))
    add_router(plugin, conf, pod)
    succeed(plugin.delete(conf, pod.path), expect_output=False)
    assert oracle.sysctl(pod.ns, "net/ipv4/ip_forward") == "1"
    assert_unchanged(before, pod.ns)


def test_second_add_is_refused_and_the_router_survives(
    topology: Topology, pod: Pod, plugin: Plugin, log_file: Path
) -> None:
    """ADD on a configured pod fails (104), from the same or another container, and changes nothing."""
    conf = router_config("1.0.0", str(log_file))
    result = add_router(plugin, conf, pod)
    during = oracle.snapshot(pod.ns)
    fail_with(plugin.add(conf, pod.path), 104)
    fail_with(Plugin(topology.node).add(conf, pod.path), 104)
    assert_unchanged(during, pod.ns)
    succeed(plugin.check(with_prev_result(conf, result), pod.path), expect_output=False)
    assert_redirected(topology, REDIRECTS)
    succeed(plugin.delete(conf, pod.path), expect_output=False)


def test_del_of_another_container_leaves_the_router_alone(
    topology: Topology, pod: Pod, plugin: Plugin, log_file: Path
) -> None:
    """DEL for a container id that owns nothing in the pod must not touch the router's saved state.

    (The runtime sends DEL after every failed ADD, e.g. the one refused above.)
    Otherwise the router's own DEL can no longer restore the pod's default route.
    """
    before = oracle.snapshot(pod.ns)
    conf = router_config("1.0.0", str(log_file))
    add_router(plugin, conf, pod)
    during = oracle.snapshot(pod.ns)
    succeed(Plugin(topology.node).delete(conf, pod.path), expect_output=False)
    assert_unchanged(during, pod.ns)
    succeed(plugin.delete(conf, pod.path), expect_output=False)
    assert_unchanged(before, pod.ns)


def test_check_rejects_a_prev_result_for_another_sandbox(pod: Pod, plugin: Plugin, log_file: Path) -> None:
    """CHECK compares prevResult's sandbox with CNI_NETNS (nomad#25510): a mismatch is code 105."""
    conf = router_config("1.1.0", str(log_file))
    result = add_router(plugin, conf, pod)
    result["interfaces"][0]["sandbox"] = "/run/netns/some-other-pod"
    fail_with(plugin.check(with_prev_result(conf, result), pod.path), 105)
    succeed(plugin.delete(conf, pod.path), expect_output=False)


def test_gateway_route_conflict_is_not_hidden(topology: Topology, pod: Pod, plugin: Plugin, log_file: Path) -> None:
    """The pod already routes the gateway address via eth0: ADD either fails cleanly or routes it via net1.

    What it must not do is report success with a router that its own CHECK rejects.
    """
    ip(pod.ns, "route", "add", GATEWAY, "via", CLUSTER_GATEWAY, "dev", "eth0")
    before = oracle.snapshot(pod.ns)
    conf = router_config("1.0.0", str(log_file))
    outcome = plugin.add(conf, pod.path)
    if outcome.returncode != 0:
        fail_with(outcome, outcome.document().get("code"))
        assert_unchanged(before, pod.ns)
        return
    succeed(plugin.check(with_prev_result(conf, outcome.document()), pod.path), expect_output=False)
    succeed(plugin.delete(conf, pod.path), expect_output=False)
    assert_unchanged(before, pod.ns)
