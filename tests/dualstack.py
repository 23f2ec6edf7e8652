"""What IPv6-only and dual-stack routers look like: configs, routes, rules, log and result checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Tuple

from tests import oracle
from tests.cni import IFNAME, Config, Plugin, router_config, with_ip
from tests.expect import LOG_LINE, REDIRECTS, RESERVED_CIDR, SNAT_RULES, net1_mac
from tests.topology import (
    GATEWAY,
    GATEWAY6,
    MASTER,
    RESERVED_IP6,
    Pod,
    Topology,
    parse_reply,
)

RESERVED_CIDR6 = f"{RESERVED_IP6}/64"
V6_DESTINATIONS = ["8080 tcp 2001:db8:ff::26 80", "8443 tcp 2001:db8:ff::27 443", "2001:db8:ff::27"]
V6_DNAT = [
    'iifname "eth0" tcp dport 8080 dnat to [2001:db8:ff::26]:80',
    'iifname "eth0" tcp dport 8443 dnat to [2001:db8:ff::27]:443',
    'iifname "eth0" dnat to 2001:db8:ff::27',
]
V6_SNAT = [f'oifname "{IFNAME}" snat to {RESERVED_IP6}']
# (proto, port on the router) -> where the IPv6 server must see the request arrive.
V6_REDIRECTS = {
    ("tcp", 8080): "[2001:db8:ff::26]:80",
    ("tcp", 8443): "[2001:db8:ff::27]:443",
    ("tcp", 80): "[2001:db8:ff::27]:80",  # the bare-address fallback keeps the port
    ("udp", 80): "[2001:db8:ff::27]:80",
}
# Dual stack: 8080/tcp is mapped in both families; the IPv6 fallback is last among the
# IPv6 entries, with IPv4 entries after it (the grammar holds per family).
DUAL_DESTINATIONS = [
    "8080 tcp 203.0.113.26 80",
    "8080 tcp 2001:db8:ff::26 80",
    "8443 tcp 2001:db8:ff::27 443",
    "2001:db8:ff::27",
    "8443 TCP 203.0.113.27/30 443",
    "80 UDP 10.0.0.99/30",
]
V4_DNAT = [
    'iifname "eth0" tcp dport 8080 dnat to 203.0.113.26:80',
    'iifname "eth0" tcp dport 8443 dnat to 203.0.113.27:443',
    'iifname "eth0" udp dport 80 dnat to 10.0.0.99',
]
V4_SNAT = SNAT_RULES
V4_REDIRECTS = REDIRECTS
NAT_CHAINS = {"prerouting": ("nat", "prerouting", -100), "postrouting": ("nat", "postrouting", 100)}


def v6_config(version: str, log_file: Path, **ip_changes: Any) -> Config:
    conf = with_ip(
        router_config(version, str(log_file)),
        addresses=[RESERVED_CIDR6],
        gateway=GATEWAY6,
        destinations=list(V6_DESTINATIONS),
    )
    return with_ip(conf, **ip_changes) if ip_changes else conf


def dual_config(version: str, log_file: Path, **ip_changes: Any) -> Config:
    conf = with_ip(
        router_config(version, str(log_file)),
        addresses=[RESERVED_CIDR, RESERVED_CIDR6],
        gateway=[GATEWAY, GATEWAY6],
        destinations=list(DUAL_DESTINATIONS),
    )
    return with_ip(conf, **ip_changes) if ip_changes else conf


def family(address: str) -> int:
    return 6 if ":" in address else 4


def assert_result(doc: Dict[str, Any], version: str, pod: Pod, ips: List[str], gateways: List[str]) -> None:
    """The ADD result in exactly VERSION's shape: IPS (CIDRs) and GATEWAYS in config order."""
    assert doc["cniVersion"] == version, doc
    default = {4: "0.0.0.0/0", 6: "::/0"}
    gateway_of = {family(gw): gw for gw in gateways}
    routes = [{"dst": default[family(gw)], "gw": gw} for gw in gateways]
    if version in ("0.1.0", "0.2.0"):
        # One block per family, with its first address (types020 conversion).
        assert set(doc) <= {"cniVersion", "ip4", "ip6", "dns"}, doc
        for key, version_ in (("ip4", 4), ("ip6", 6)):
            first = next((cidr for cidr in ips if family(cidr) == version_), None)
            if first is None:
                assert key not in doc, doc
                continue
            family_routes = [r for r in routes if family(r["dst"]) == version_]
            assert doc[key] == {"ip": first, "gateway": gateway_of[version_], "routes": family_routes}, doc
        return
    assert set(doc) <= {"cniVersion", "interfaces", "ips", "routes", "dns"}, doc
    assert doc["interfaces"] == [{"name": IFNAME, "mac": net1_mac(pod), "sandbox": pod.path}]
    expected = []
    for cidr in ips:
        entry: Dict[str, Any] = {"address": cidr, "gateway": gateway_of[family(cidr)], "interface": 0}
        if version in ("0.3.0", "0.3.1", "0.4.0"):
            entry = {"version": str(family(cidr)), **entry}
        expected.append(entry)
    assert doc["ips"] == expected, doc
    assert doc["routes"] == routes, doc


def assert_net1(topology: Topology, pod: Pod, v4: List[str], v6: List[str]) -> None:
    """net1 is our macvlan on the node's master, up, with exactly these addresses, none tentative or duplicate."""
    link = oracle.link(pod.ns, IFNAME)
    assert link is not None, f"{IFNAME} missing"
    assert link["linkinfo"]["info_kind"] == "macvlan"
    master = oracle.link(topology.node, MASTER)
    assert master is not None and link.get("link_index") == master["ifindex"], link
    assert "UP" in link["flags"], link["flags"]
    assert oracle.ipv4_addresses(pod.ns, IFNAME) == v4
    assert sorted(oracle.ipv6_addresses(pod.ns, IFNAME)) == sorted(v6)
    flags = oracle.ipv6_address_flags(pod.ns, IFNAME)
    assert not any(flags.values()), f"ADD returned before DAD finished or failed: {flags}"
    assert oracle.sysctl(pod.ns, f"net/ipv6/conf/{IFNAME}/disable_ipv6") == "0"
    assert oracle.sysctl(pod.ns, f"net/ipv6/conf/{IFNAME}/ndisc_notify") == "1"


def v6_router_routes() -> List[Tuple[str, str, str]]:
    """The pod's IPv6 main table while it routes through net1."""
    return sorted(
        [
            ("default", GATEWAY6, IFNAME),
            (GATEWAY6, "", IFNAME),
            ("2001:db8:12::/64", "", IFNAME),
            ("fe80::/64", "", IFNAME),
            ("fd00:10::/64", "", "eth0"),
            ("fe80::/64", "", "eth0"),
        ]
    )


def v4_router_routes() -> List[Tuple[str, str, str]]:
    return sorted(
        [
            ("default", GATEWAY, IFNAME),
            (GATEWAY, "", IFNAME),
            ("192.168.12.0/24", "", IFNAME),
            ("10.128.10.0/23", "", "eth0"),
        ]
    )


def assert_saved_default(pod: Pod, family: str, gateway: str) -> None:
    """The pod's original default route waits in a private table (DEL puts it back)."""
    saved = [
        r
        for r in oracle.routes(pod.ns, family, "all")
        if r.get("dst") == "default" and r.get("gateway") == gateway and r.get("table", "main") != "main"
    ]
    assert len(saved) == 1, oracle.routes(pod.ns, family, "all")


def assert_nat_table(pod: Pod, family: str, dnat: List[str], snat: List[str]) -> None:
    chains = oracle.nft_chains(pod.ns, family, "egress_cni")
    assert {name: (c["type"], c["hook"], c["prio"]) for name, c in chains.items()} == NAT_CHAINS
    assert oracle.nft_rule_lines(pod.ns, family, "egress_cni", "prerouting") == dnat
    assert oracle.nft_rule_lines(pod.ns, family, "egress_cni", "postrouting") == snat


def assert_redirected(topology: Topology, host: str, source: str, redirects: Dict[Tuple[str, int], str]) -> None:
    """Each request to the router pod at HOST reaches its destination, which sees SOURCE."""
    for (proto, port), destination in redirects.items():
        reply = parse_reply(topology.request(proto, port, host=host))
        assert reply["peer_ip"] == source, (host, proto, port, reply)
        assert reply["local"] == destination, (host, proto, port, reply)
        assert reply["proto"] == proto


def log_messages(log_file: Path) -> List[Tuple[str, str]]:
    """(level, message) of every line; each line must be '<RFC3339 UTC> [level] msg'."""
    parsed = []
    for line in log_file.read_text().splitlines():
        match = LOG_LINE.match(line)
        assert match, f"malformed log line: {line!r}"
        parsed.append((match.group(2), match.group(3)))
    return parsed


def assert_log_in_order(log_file: Path, expected: List[str]) -> None:
    """EXPECTED messages appear in this order (others may come in between); a successful ADD logs no error."""
    parsed = log_messages(log_file)
    messages = [msg for _level, msg in parsed]
    position = 0
    for line in expected:
        found = next((i for i in range(position, len(messages)) if messages[i] == line), None)
        assert found is not None, f"log lacks {line!r} (in order) after line {position}:\n" + "\n".join(messages)
        position = found + 1
    errors = [msg for level, msg in parsed if level in ("error", "panic")]
    assert not errors, "the log has errors:\n" + "\n".join(errors)


def check_passes(plugin: Plugin, conf: Config, pod: Pod) -> None:
    """CHECK succeeds; on failure the message also shows net1 as ip sees it."""
    outcome = plugin.check(conf, pod.path)
    assert outcome.returncode == 0 and not outcome.stdout.strip(), (
        outcome.describe() + f"\n--- {IFNAME} ---\n{oracle.link(pod.ns, IFNAME)}"
    )


def error_text(doc: Dict[str, Any]) -> str:
    return f"{doc.get('msg', '')}: {doc.get('details', '')}"
