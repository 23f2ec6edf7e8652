"""End to end with `"natBackend": "iptables"`: the legacy xtables nat table through python-iptables (issue 7).

The independent oracle for the rules is `iptables-legacy-save -t nat` (and
ip6tables-legacy-save) run inside the pod; everything else is judged as in
test_e2e. The module is skipped, with the reason, when python-iptables (as the
executable under test sees it: STATUS says code 50) or the legacy tools are missing.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from tests import oracle
from tests.cni import CHECK_VERSIONS, IFNAME, Config, Plugin, router_config, with_prev_result
from tests.dualstack import (
    RESERVED_CIDR6,
    V4_REDIRECTS,
    V6_REDIRECTS,
    assert_log_in_order,
    assert_net1,
    assert_redirected,
    check_passes,
    dual_config,
    error_text,
    log_messages,
    v6_config,
    v6_router_routes,
)
from tests.expect import MANUAL_LOG, REDIRECTS, ROUTER_ROUTES, assert_result, fail_with, succeed
from tests.topology import RESERVED_IP, RESERVED_IP6, ROUTER_POD_IP, ROUTER_POD_IP6, Pod, Topology

pytestmark = pytest.mark.netns

LEGACY_TOOLS = ("iptables-legacy", "ip6tables-legacy", "iptables-legacy-save", "ip6tables-legacy-save")
OWNER_TAG = r'-m comment --comment "egress-router owner=(?P<owner>[0-9a-f]+)(?: [^"]*)?"'
# The product page's rules, as iptables-legacy-save prints them; each tagged with our comment.
V4_RULES = [
    ("PREROUTING", "-i eth0 -p udp -m udp --dport 80", "-j DNAT --to-destination 10.0.0.99"),
    ("PREROUTING", "-i eth0 -p tcp -m tcp --dport 8080", "-j DNAT --to-destination 203.0.113.26:80"),
    ("PREROUTING", "-i eth0 -p tcp -m tcp --dport 8443", "-j DNAT --to-destination 203.0.113.27:443"),
    ("POSTROUTING", f"-o {IFNAME}", f"-j SNAT --to-source {RESERVED_IP}"),
]
V6_RULES = [
    ("PREROUTING", "-i eth0 -p tcp -m tcp --dport 8080", "-j DNAT --to-destination [2001:db8:ff::26]:80"),
    ("PREROUTING", "-i eth0 -p tcp -m tcp --dport 8443", "-j DNAT --to-destination [2001:db8:ff::27]:443"),
    ("PREROUTING", "-i eth0", "-j DNAT --to-destination 2001:db8:ff::27"),
    ("POSTROUTING", f"-o {IFNAME}", f"-j SNAT --to-source {RESERVED_IP6}"),
]
# The product page's log lines, exactly.
IPTABLES_LOG = [
    "Added iptables rule: iptables -t nat PREROUTING -i eth0 -p UDP --dport 80 -j DNAT --to-destination 10.0.0.99",
    "Added iptables rule: iptables -t nat PREROUTING -i eth0 -p TCP --dport 8080 -j DNAT --to-destination 203.0.113.26:80",  # noqa: E501
    "Added iptables rule: iptables -t nat PREROUTING -i eth0 -p TCP --dport 8443 -j DNAT --to-destination 203.0.113.27:443",  # noqa: E501
    f"Added iptables rule: iptables -t nat -o {IFNAME} -j SNAT --to-source {RESERVED_IP}",
]
MISSING_SNAT = f"iptables -t nat -o {IFNAME} -j SNAT --to-source {RESERVED_IP}"
VERSIONS = ("0.2.0", "0.4.0", "1.0.0", "1.1.0")


# --- fixtures and helpers ------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def iptables_backend(topology: Topology) -> None:
    """Skip the module, saying why, unless the executable can load python-iptables and the legacy tools exist."""
    missing = [tool for tool in LEGACY_TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (apt-get install iptables)")
    conf = router_config("1.1.0", "/dev/null", natBackend="iptables")
    outcome = Plugin(topology.node).run("STATUS", conf, env={"CNI_CONTAINERID": "", "CNI_NETNS": "", "CNI_IFNAME": ""})
    if outcome.returncode == 0:
        return
    doc = outcome.document()
    if doc.get("code") != 50:  # anything but "not available" is a failure, not a reason to skip
        pytest.fail(f"STATUS with natBackend iptables failed unexpectedly:\n{outcome.describe()}")
    pytest.skip(f"the iptables NAT backend is not available (STATUS code 50: {doc.get('msg')}: {doc.get('details')})")


def iptables(pod: Pod, family: int, *args: str) -> None:
    """iptables-legacy (ip6tables-legacy) inside the pod, waiting for the xtables lock like the plugin."""
    oracle.netns_exec(pod.ns, "iptables-legacy" if family == 4 else "ip6tables-legacy", "-w", *args)


def assert_our_rules(pod: Pod, family: int, expected: List[Any], foreign: Optional[List[str]] = None) -> str:
    """The legacy nat table holds FOREIGN (untagged, untouched) and then exactly EXPECTED, tagged; return the owner."""
    rules = oracle.xtables_rules(pod.ns, family)
    ours = [r for r in rules if "egress-router owner=" in r]
    assert [r for r in rules if r not in ours] == (foreign or []), rules
    owners = set()
    assert len(ours) == len(expected), "\n".join(rules)
    for line, (chain, match, target) in zip(ours, expected):
        pattern = f"-A {chain} {re.escape(match)} {OWNER_TAG} {re.escape(target)}"
        found = re.fullmatch(pattern, line)
        assert found, f"{line!r} does not match {pattern!r}"
        owners.add(found.group("owner"))
    assert len(owners) <= 1, f"rules of one ADD name different owners: {owners}"
    return owners.pop() if owners else ""


def assert_no_nft_tables(pod: Pod) -> None:
    for family in ("ip", "ip6"):
        assert not oracle.nft_table_exists(pod.ns, family, "egress_cni"), oracle.nft_ruleset(pod.ns)


def assert_same(before: Dict[str, Any], ns: str, what: str) -> None:
    diff = oracle.snapshot_diff(before, oracle.snapshot(ns, xtables=True))
    assert not diff, f"{what}: {ns} differs from its state before:\n" + "\n".join(diff)


def iptables_config(version: str, log_file: Path, **changes: Any) -> Config:
    return router_config(version, str(log_file), natBackend="iptables", **changes)


# --- the product page's router with the iptables backend -----------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_iptables_roundtrip(version: str, topology: Topology, pod: Pod, plugin: Plugin, log_file: Path) -> None:
    """[version] ADD writes the product page's rules to the legacy nat table, traffic flows, CHECK, DEL restores."""
    before = oracle.snapshot(pod.ns, xtables=True)
    conf = iptables_config(version, log_file)

    result = succeed(plugin.add(conf, pod.path), expect_output=True)
    assert_result(result, version, pod)
    assert oracle.main_routes(pod.ns) == ROUTER_ROUTES, oracle.route_lines(pod.ns)
    assert oracle.sysctl(pod.ns, "net/ipv4/ip_forward") == "1"
    assert_our_rules(pod, 4, V4_RULES)
    assert oracle.xtables_rules(pod.ns, 6) == []
    assert_no_nft_tables(pod)

    assert_redirected(topology, ROUTER_POD_IP, RESERVED_IP, REDIRECTS)
    assert_log_in_order(log_file, [line for line in MANUAL_LOG if "nftables" not in line] + IPTABLES_LOG)
    assert not [msg for _level, msg in log_messages(log_file) if "nftables rule" in msg]
    cached = with_prev_result(conf, result) if version in CHECK_VERSIONS else conf
    if version in CHECK_VERSIONS:
        check_passes(plugin, cached, pod)

    succeed(plugin.delete(cached, pod.path), expect_output=False)
    assert_same(before, pod.ns, "after DEL")
    succeed(plugin.delete(conf, pod.path), expect_output=False)
    assert_same(before, pod.ns, "after a second DEL")


def test_check_names_the_missing_snat_rule(topology: Topology, pod: Pod, plugin: Plugin, log_file: Path) -> None:
    """A rule deleted by hand (`iptables -t nat -D POSTROUTING 1`) is named by CHECK (105); DEL still cleans up."""
    before = oracle.snapshot(pod.ns, xtables=True)
    conf = iptables_config("1.0.0", log_file)
    checked = with_prev_result(conf, succeed(plugin.add(conf, pod.path), expect_output=True))
    check_passes(plugin, checked, pod)

    iptables(pod, 4, "-t", "nat", "-D", "POSTROUTING", "1")
    doc = fail_with(plugin.check(checked, pod.path), 105)
    assert f"missing {MISSING_SNAT}" in error_text(doc), doc

    succeed(plugin.delete(checked, pod.path), expect_output=False)
    assert_same(before, pod.ns, "after DEL")


def test_del_removes_exactly_our_rules(topology: Topology, pod: Pod, plugin: Plugin, log_file: Path) -> None:
    """Foreign rules in the pod's nat table (before and beside ours) survive ADD and DEL, in place."""
    iptables(pod, 4, "-t", "nat", "-A", "POSTROUTING", "-o", "eth0", "-j", "MASQUERADE")
    iptables(
        pod, 4, "-t", "nat", "-A", "PREROUTING", "-i", "eth0", "-p", "tcp", "--dport", "9999",
        "-m", "comment", "--comment", "someone else", "-j", "DNAT", "--to-destination", "10.0.0.99:80",
    )  # fmt: skip
    foreign = oracle.xtables_rules(pod.ns, 4)
    assert len(foreign) == 2, foreign
    before = oracle.snapshot(pod.ns, xtables=True)
    conf = iptables_config("1.0.0", log_file)

    checked = with_prev_result(conf, succeed(plugin.add(conf, pod.path), expect_output=True))
    # Ours are appended; the foreign rules keep their places (by chain order in iptables-save).
    rules = oracle.xtables_rules(pod.ns, 4)
    assert [r for r in rules if "egress-router" not in r] == foreign, rules
    assert_our_rules(pod, 4, V4_RULES, foreign=foreign)
    check_passes(plugin, checked, pod)
    assert_redirected(topology, ROUTER_POD_IP, RESERVED_IP, {("tcp", 8080): "203.0.113.26:80"})

    succeed(plugin.delete(checked, pod.path), expect_output=False)
    assert oracle.xtables_rules(pod.ns, 4) == foreign
    assert_same(before, pod.ns, "after DEL")


def test_ipv6_only_router_with_iptables(topology: Topology, dad_pod: Pod, plugin: Plugin, log_file: Path) -> None:
    """An IPv6 router on ip6tables: [addr]:port DNAT targets, v6 SNAT, traffic, CHECK, DEL."""
    pod = dad_pod
    before = oracle.snapshot(pod.ns, xtables=True)
    conf = {**v6_config("1.0.0", log_file), "natBackend": "iptables"}

    checked = with_prev_result(conf, succeed(plugin.add(conf, pod.path), expect_output=True))
    assert_net1(topology, pod, v4=[], v6=[RESERVED_CIDR6])
    assert oracle.main_routes(pod.ns, "-6") == v6_router_routes(), oracle.route_lines(pod.ns, "-6")
    assert_our_rules(pod, 6, V6_RULES)
    assert oracle.xtables_rules(pod.ns, 4) == []
    assert_no_nft_tables(pod)
    assert_redirected(topology, ROUTER_POD_IP6, RESERVED_IP6, V6_REDIRECTS)
    assert_log_in_order(
        log_file,
        [
            "Added iptables rule: ip6tables -t nat PREROUTING -i eth0 -p TCP --dport 8080 -j DNAT "
            "--to-destination [2001:db8:ff::26]:80",
            "Added iptables rule: ip6tables -t nat PREROUTING -i eth0 -p TCP --dport 8443 -j DNAT "
            "--to-destination [2001:db8:ff::27]:443",
            "Added iptables rule: ip6tables -t nat PREROUTING -i eth0 -j DNAT --to-destination 2001:db8:ff::27",
        ],
    )
    assert any(msg.endswith(f"-o {IFNAME} -j SNAT --to-source {RESERVED_IP6}") for _lvl, msg in log_messages(log_file))
    check_passes(plugin, checked, pod)

    succeed(plugin.delete(checked, pod.path), expect_output=False)
    assert_same(before, pod.ns, "after DEL")


def test_dual_stack_router_with_iptables(topology: Topology, dad_pod: Pod, plugin: Plugin, log_file: Path) -> None:
    """Both families on iptables and ip6tables in one ADD: rules, traffic, CHECK, DEL."""
    pod = dad_pod
    before = oracle.snapshot(pod.ns, xtables=True)
    conf = {**dual_config("1.0.0", log_file), "natBackend": "iptables"}

    outcome = plugin.add(conf, pod.path)
    try:
        checked = with_prev_result(conf, succeed(outcome, expect_output=True))
        assert_our_rules(
            pod,
            4,
            [
                ("PREROUTING", "-i eth0 -p tcp -m tcp --dport 8080", "-j DNAT --to-destination 203.0.113.26:80"),
                ("PREROUTING", "-i eth0 -p tcp -m tcp --dport 8443", "-j DNAT --to-destination 203.0.113.27:443"),
                ("PREROUTING", "-i eth0 -p udp -m udp --dport 80", "-j DNAT --to-destination 10.0.0.99"),
                ("POSTROUTING", f"-o {IFNAME}", f"-j SNAT --to-source {RESERVED_IP}"),
            ],
        )
        assert_our_rules(pod, 6, V6_RULES)
        assert_no_nft_tables(pod)
        assert_redirected(topology, ROUTER_POD_IP, RESERVED_IP, V4_REDIRECTS)
        assert_redirected(topology, ROUTER_POD_IP6, RESERVED_IP6, V6_REDIRECTS)
        check_passes(plugin, checked, pod)
        succeed(plugin.delete(checked, pod.path), expect_output=False)
    finally:
        # Whatever happened, the pod must be as before once DEL has run (xfail or not).
        plugin.delete(conf, pod.path)
        assert_same(before, pod.ns, "after DEL")


FOREIGN_SNAT6 = ("-t", "nat", "-A", "POSTROUTING", "-o", "eth0", "-j", "SNAT", "--to-source", "fd00:10::18")


def test_a_foreign_ipv6_nat_rule_does_not_break_add(pod: Pod, plugin: Plugin, log_file: Path) -> None:
    """An IPv4 router in a pod whose ip6tables nat table holds someone's SNAT rule: ADD, CHECK, DEL work.

    Today ADD fails (103, "can't find target DNAT"): reading the IPv6 table
    first (preflight) loads SNAT/DNAT for IPv6 only.
    """
    iptables(pod, 6, *FOREIGN_SNAT6)
    foreign6 = oracle.xtables_rules(pod.ns, 6)
    before = oracle.snapshot(pod.ns, xtables=True)
    conf = iptables_config("1.0.0", log_file)
    try:
        checked = with_prev_result(conf, succeed(plugin.add(conf, pod.path), expect_output=True))
        assert_our_rules(pod, 4, V4_RULES)
        check_passes(plugin, checked, pod)
        succeed(plugin.delete(checked, pod.path), expect_output=False)
        assert oracle.xtables_rules(pod.ns, 6) == foreign6
        assert_same(before, pod.ns, "after DEL")
    finally:
        plugin.delete(conf, pod.path)  # leave nothing behind, whatever the plugin did


def test_a_foreign_ipv6_nat_rule_does_not_break_del(pod: Pod, plugin: Plugin, log_file: Path) -> None:
    """Someone adds an ip6tables SNAT rule while an IPv4 router runs: DEL still removes everything of ours.

    Today DEL fails (999, "internal error: XTablesError: can't find target SNAT")
    and leaves net1, the routes and all four rules: every retried DEL fails the same way.
    """
    before = oracle.snapshot(pod.ns, xtables=True)
    conf = iptables_config("1.0.0", log_file)
    succeed(plugin.add(conf, pod.path), expect_output=True)
    iptables(pod, 6, *FOREIGN_SNAT6)
    try:
        succeed(plugin.delete(conf, pod.path), expect_output=False)
        iptables(pod, 6, "-t", "nat", "-D", "POSTROUTING", "1")
        assert_same(before, pod.ns, "after DEL")
    finally:
        # Without the foreign rule the plugin can clean up (so the next test starts clean).
        oracle.netns_exec(pod.ns, "ip6tables-legacy", "-w", "-t", "nat", "-F", "POSTROUTING")
        plugin.delete(conf, pod.path)


def test_auto_picks_nftables_here(topology: Topology, pod: Pod, plugin: Plugin, log_file: Path) -> None:
    """natBackend "auto" (the default) uses nftables where the kernel has nf_tables: no legacy rules at all."""
    before = oracle.snapshot(pod.ns, xtables=True)
    conf = router_config("1.0.0", str(log_file), natBackend="auto")
    checked = with_prev_result(conf, succeed(plugin.add(conf, pod.path), expect_output=True))
    assert oracle.nft_table_exists(pod.ns, "ip", "egress_cni")
    assert not oracle.nft_table_exists(pod.ns, "ip6", "egress_cni")
    assert oracle.xtables_rules(pod.ns, 4) == [] and oracle.xtables_rules(pod.ns, 6) == []
    assert any(msg.startswith("Added nftables rule: ") for _lvl, msg in log_messages(log_file))
    assert_redirected(topology, ROUTER_POD_IP, RESERVED_IP, {("udp", 80): "10.0.0.99:80"})
    check_passes(plugin, checked, pod)
    succeed(plugin.delete(checked, pod.path), expect_output=False)
    assert_same(before, pod.ns, "after DEL")
