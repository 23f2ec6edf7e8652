"""What a router built from the product manual's config looks like, and how a plugin run must end.

Shared by the netns suites: the expected routes, rules, log and result, and
assertions that read the kernel through tests/oracle.py.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Set

from tests import oracle
from tests.cni import (
    IFNAME,
    Outcome,
    Plugin,
)
from tests.topology import (
    CLUSTER_GATEWAY,
    GATEWAY,
    MASTER,
    POD_ETH0_INDEX,
    RESERVED_IP,
    Pod,
    Topology,
    parse_reply,
)

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


def assert_cni_error(outcome: Outcome, code: int) -> None:
    """Exit 1, one error document (cniVersion, code, non-empty msg) and nothing else on stdout."""
    assert outcome.returncode == 1, outcome.describe()
    assert "Traceback" not in outcome.stdout, outcome.describe()
    doc = outcome.document()
    assert isinstance(doc, dict), outcome.describe()
    assert doc.get("code") == code, outcome.describe()
    assert isinstance(doc.get("msg"), str) and doc["msg"].strip(), outcome.describe()
    assert isinstance(doc.get("cniVersion"), str), outcome.describe()
    assert set(doc) <= {"cniVersion", "code", "msg", "details"}, outcome.describe()
