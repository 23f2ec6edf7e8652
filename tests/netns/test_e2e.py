"""End to end: the real executable builds an egress router in a throwaway pod, traffic flows, DEL undoes it.

Everything is judged from outside: the CNI result on stdout, the kernel state
through tests/oracle.py (iproute2 and nft), the source address the destination
servers saw, and the log file.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests import oracle
from tests.cni import (
    ALL_VERSIONS,
    CHECK_VERSIONS,
    IFNAME,
    Plugin,
    router_config,
    with_ip,
    with_prev_result,
)
from tests.expect import (
    REDIRECTS,
    add_router,
    assert_manual_log,
    assert_redirected,
    assert_result,
    assert_router_state,
    assert_unchanged,
    fail_with,
    link_names,
    succeed,
)
from tests.topology import (
    CLUSTER_GATEWAY,
    GATEWAY,
    MASTER,
    Pod,
    Topology,
    ip,
    write_sysctl,
)

pytestmark = pytest.mark.netns


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


def test_del_logs_its_undo_list_in_order(topology: Topology, pod: Pod, plugin: Plugin, log_file: Path) -> None:
    """The link is deleted in the background while the NAT table goes (unlink.py): the lines keep the undo order."""
    before = oracle.snapshot(pod.ns)
    eth0 = oracle.link(pod.ns, "eth0")
    assert eth0 is not None
    conf = router_config("1.0.0", str(log_file))
    add_router(plugin, conf, pod)
    added = len(log_file.read_text().splitlines())
    succeed(plugin.delete(conf, pod.path), expect_output=False)
    assert_unchanged(before, pod.ns)
    lines = log_file.read_text().splitlines()[added:]
    messages = [line.split("] ", 1)[1] for line in lines]
    expected = [
        "Called CNI DEL",
        f"Container ID: {plugin.container_id} Netns: {pod.path} Interface: {IFNAME}",
        "Deleted nftables NAT rules",
        "Deleted interface 'net1'",
        f"Restored default route {{Ifindex: {eth0['ifindex']} Dst: <nil> Src: <nil> Gw: {CLUSTER_GATEWAY}",
        "Restored net.ipv4.ip_forward=0",
        "CNI DEL done",
    ]
    assert len(messages) == len(expected), "\n".join(lines)
    for message, start in zip(messages, expected):
        assert message.startswith(start), "\n".join(lines)


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
