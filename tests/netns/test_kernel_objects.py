"""link.py, route.py, sysctl.py, netlink.py and the iptables backend driven directly, one module at a time.

The end-to-end suites cover these through the executable; here each module's
functions are called from the test process inside a router pod's namespace,
and what they did is read back through the oracle (ip -j, sysctl files,
iptables-legacy-save). The nftables backend has its own suite (test_nft_netlink.py).
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import socket
import subprocess
from typing import Any, Iterator, List, Tuple

import pytest

from egress_router_cni import link, netlink, route, sysctl
from egress_router_cni.errors import InterfaceExists, LinkError, SysctlError
from egress_router_cni.ipaddr import ip_address
from egress_router_cni.nat.rules import DnatRule, SnatRule
from egress_router_cni.netlink import RTM_GETADDR, RTM_NEWADDR, RTM_NEWLINK, Netlink, NetlinkError
from egress_router_cni.netns import NetNS
from egress_router_cni.state import Backend, RouterState, decode_note, encode_alias, encode_note
from egress_router_cni.unlink import LinkDeletion
from tests import oracle
from tests.topology import CLUSTER_GATEWAY, GATEWAY, MASTER, NETNS_DIR, RESERVED_IP, Pod, Topology, ip

pytestmark = pytest.mark.netns

OWNER = "0123456789abcdef"
TABLE = route.saved_table(OWNER)


@contextlib.contextmanager
def in_ns(path: str) -> Iterator[Tuple[NetNS, Netlink]]:
    """This process inside the namespace at path, with a NETLINK_ROUTE socket there; back home afterwards."""
    with NetNS(path) as ns:
        ns.enter()
        with Netlink() as nl:
            yield ns, nl


def veth(pod: Pod, name: str = "vt0", cidr: str = f"{RESERVED_IP}/24") -> int:
    """A veth in the pod with cidr, up (the kernel has no dummy links); return its ifindex."""
    ip(pod.ns, "link", "add", name, "type", "veth", "peer", "name", f"{name}p")
    ip(pod.ns, "addr", "add", cidr, "dev", name)
    ip(pod.ns, "link", "set", name, "up")
    ip(pod.ns, "link", "set", f"{name}p", "up")
    found = oracle.link(pod.ns, name)
    assert found is not None
    return int(found["ifindex"])


# --- link.py ----------------------------------------------------------------------------------


def test_link_macvlan_is_created_in_the_pod_renamed_up_found_and_deleted(topology: Topology, pod: Pod) -> None:
    state = RouterState(owner=OWNER, forwarding={4: "0"}, nat=Backend.NFTABLES)
    with in_ns(f"{NETNS_DIR}/{topology.node}") as (_, host), NetNS(pod.path) as pod_ns:
        master = link.get_link(host, MASTER)
        assert master is not None and master.name == MASTER
        pod_ns.enter()
        with Netlink() as nl:
            created = link.create_macvlan(host, nl, master, pod_ns.fd, "private", 1400)
            seen = oracle.link(pod.ns, created.name)
            assert seen is not None and link.is_temp_name(created.name), created
            assert seen["linkinfo"]["info_kind"] == "macvlan"
            assert seen["linkinfo"]["info_data"]["mode"] == "private"
            assert seen["mtu"] == 1400
            assert oracle.link(topology.node, created.name) is None  # never in the node's namespace

            renamed = link.rename_link(nl, created, "net1", encode_alias(state))
            seen = oracle.link(pod.ns, "net1")
            assert seen is not None and seen["ifindex"] == created.index
            assert seen.get("ifalias") == encode_alias(state)
            assert "UP" not in seen["flags"]
            link.set_up(nl, renamed)
            seen = oracle.link(pod.ns, "net1")
            assert seen is not None and "UP" in seen["flags"]

            owned = link.find_owned_links(nl, OWNER)
            assert [(x.name, x.state()) for x in owned] == [("net1", state)]
            assert link.find_owned_links(nl, "fedcba9876543210") == []
            assert link.delete_link(nl, renamed.index) is True
            assert oracle.link(pod.ns, "net1") is None
            assert link.delete_link(nl, renamed.index) is False
            assert link.get_link(nl, "net1") is None


def test_link_rename_onto_a_taken_name_is_interface_exists(topology: Topology, pod: Pod) -> None:
    with in_ns(f"{NETNS_DIR}/{topology.node}") as (_, host), NetNS(pod.path) as pod_ns:
        master = link.get_link(host, MASTER)
        assert master is not None
        pod_ns.enter()
        with Netlink() as nl:
            created = link.create_macvlan(host, nl, master, pod_ns.fd, "bridge", 0)
            with pytest.raises(InterfaceExists):
                link.rename_link(nl, created, "eth0", "egress-router {}")
            assert oracle.link(pod.ns, created.name) is not None  # left as it was, for the rollback
            seen = oracle.link(pod.ns, "eth0")
            assert seen is not None and seen["linkinfo"]["info_kind"] == "veth"
            link.delete_link(nl, created.index)


def test_unlink_answers_like_delete_link_once_each_link_is_gone(pod: Pod) -> None:
    """A child sends the requests: True once a link is gone, False if gone before, a refusal raised by outcome()."""
    veth(pod, "vt0")
    veth(pod, "vt1", "10.99.0.1/24")
    with in_ns(pod.path) as (_, nl):
        links = {x.name: x for x in link.list_links(nl)}
        ip(pod.ns, "link", "del", "vt1")
        # In order: vt0 goes (its peer with it), vt1 was gone already, lo cannot be deleted (EOPNOTSUPP).
        deleting = LinkDeletion(nl, [links["vt0"], links["vt1"], links["lo"]])
        assert deleting.outcome(links["vt0"]) is True
        assert oracle.link(pod.ns, "vt0") is None and oracle.link(pod.ns, "vt0p") is None
        assert deleting.outcome(links["vt1"]) is False
        with pytest.raises(LinkError, match="failed to delete link"):
            deleting.outcome(links["lo"])
        deleting.close()
        assert link.get_link(nl, "lo") is not None  # the caller's socket never saw the child's replies
        LinkDeletion(nl, []).close()  # nothing to delete: no child


# --- route.py ---------------------------------------------------------------------------------


def test_route_default_routes_move_to_the_saved_table_and_back(pod: Pod) -> None:
    before = oracle.snapshot(pod.ns)
    with in_ns(pod.path) as (_, nl):
        moved = route.save_and_remove_default_routes(nl, 4, TABLE)
        assert [(r.gateway, r.dst) for r in moved] == [(CLUSTER_GATEWAY, None)]
        assert not any(r["dst"] == "default" for r in oracle.routes(pod.ns, "-4", "main"))
        saved = oracle.routes(pod.ns, "-4", str(TABLE))
        assert [(r["dst"], r["gateway"], r["dev"]) for r in saved] == [("default", CLUSTER_GATEWAY, "eth0")]
        assert route.save_and_remove_default_routes(nl, 4, TABLE) == []  # nothing left to move

        restored = route.restore_default_routes(nl, 4, TABLE)
        assert [r.gateway for r in restored] == [CLUSTER_GATEWAY]
        assert route.restore_default_routes(nl, 4, TABLE) == []
    diff = oracle.snapshot_diff(before, oracle.snapshot(pod.ns))
    assert not diff, "\n".join(diff)


def test_route_host_and_default_route_through_a_link(pod: Pod) -> None:
    index = veth(pod)
    gateway = ip_address(GATEWAY)
    with in_ns(pod.path) as (_, nl):
        route.add_host_route(nl, gateway, index)
        route.save_and_remove_default_routes(nl, 4, TABLE)
        route.add_default_route(nl, gateway, index)
        assert route.default_routes(nl, 4)[0].oif == index
        assert sorted(route.addresses_of(nl, index)) == sorted(
            [f"{RESERVED_IP}/24"] + [f"{a['local']}/{a['prefixlen']}" for a in _ipv6_link_local(pod, "vt0")]
        )
    assert ("default", GATEWAY, "vt0") in oracle.main_routes(pod.ns)
    assert (GATEWAY, "", "vt0") in oracle.main_routes(pod.ns)


def _ipv6_link_local(pod: Pod, name: str) -> List[Any]:
    for entry in oracle.addresses(pod.ns):
        if entry.get("ifname") == name:
            return [a for a in entry.get("addr_info", []) if a.get("family") == "inet6"]
    return []


# --- sysctl.py --------------------------------------------------------------------------------


def test_sysctl_reads_and_writes_the_pods_own_values(topology: Topology, pod: Pod) -> None:
    node_value = oracle.sysctl(topology.node, "net/ipv4/ip_forward")
    veth(pod)
    with in_ns(pod.path):
        assert sysctl.read(sysctl.FORWARDING[4]) == oracle.sysctl(pod.ns, "net/ipv4/ip_forward") == "0"
        sysctl.write(sysctl.FORWARDING[4], "1")
        assert oracle.sysctl(pod.ns, "net/ipv4/ip_forward") == "1"
        sysctl.write(sysctl.link_key(4, "vt0", "proxy_arp"), "1")
        assert oracle.sysctl(pod.ns, "net/ipv4/conf/vt0/proxy_arp") == "1"
        sysctl.write(sysctl.FORWARDING[4], "0")
    assert oracle.sysctl(pod.ns, "net/ipv4/ip_forward") == "0"
    assert oracle.sysctl(topology.node, "net/ipv4/ip_forward") == node_value  # per namespace


def test_sysctl_errors_name_the_key(pod: Pod) -> None:
    with in_ns(pod.path):
        with pytest.raises(SysctlError) as missing:
            sysctl.read(sysctl.link_key(4, "nosuchlink", "proxy_arp"))
        assert "net.ipv4.conf.nosuchlink.proxy_arp" in missing.value.msg
        with pytest.raises(SysctlError) as escaping:
            sysctl.write("net/../../etc/hostname", "x")
        assert escaping.value.msg == "invalid sysctl"


# --- netlink.py -------------------------------------------------------------------------------


def test_netlink_error_carries_the_kernels_extended_message(pod: Pod) -> None:
    with in_ns(pod.path) as (_, nl):
        msg = nl.message(
            RTM_NEWLINK,
            {"index": 0},
            [("IFLA_IFNAME", "x0"), ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "no-such-kind")]})],
        )
        with pytest.raises(NetlinkError) as refused:
            nl.request(RTM_NEWLINK, msg, netlink.NLM_F_CREATE | netlink.NLM_F_EXCL)
    assert refused.value.errno == errno.EOPNOTSUPP
    assert refused.value.extack == "Unknown device type"
    assert "Unknown device type" in str(refused.value)
    assert oracle.link(pod.ns, "x0") is None


def test_netlink_interrupted_dump_is_retried_then_reported(pod: Pod, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dump the kernel flags NLM_F_DUMP_INTR is run again; a complete one is returned, or EINTR after the last try.

    3000 addresses make the dump span many messages; a shell loop adding and
    removing one more address changes the address generation under it.
    """
    veth(pod)
    static = {f"10.{i // 250}.{i % 250}.1" for i in range(3000)}
    batch = "".join(f"address add {a}/32 dev vt0\n" for a in sorted(static))
    subprocess.run(["ip", "-n", pod.ns, "-batch", "-"], input=batch, text=True, check=True, timeout=120)
    attempts: List[bool] = []
    collect = netlink.Socket.collect

    def spy(self: netlink.Socket, *args: Any, **kwargs: Any) -> Tuple[List[Any], bool]:
        replies, interrupted = collect(self, *args, **kwargs)
        attempts.append(interrupted)
        return replies, interrupted

    monkeypatch.setattr(netlink.Socket, "collect", spy)
    loop = "while :; do ip addr add 10.99.0.1/32 dev vt0; ip addr del 10.99.0.1/32 dev vt0; done"
    churn = subprocess.Popen(["ip", "netns", "exec", pod.ns, "sh", "-c", loop])
    outcomes = []
    try:
        with in_ns(pod.path) as (_, nl):
            for _ in range(20):
                del attempts[:]
                try:
                    got = nl.dump(RTM_GETADDR, nl.message(RTM_NEWADDR, {"family": socket.AF_INET}))
                except NetlinkError as e:
                    assert e.errno == errno.EINTR, e
                    assert attempts == [True] * netlink._DUMP_RETRIES
                    outcomes.append("gave up")
                    continue
                assert attempts[-1] is False and all(attempts[:-1]), attempts
                assert len(attempts) <= netlink._DUMP_RETRIES
                local = {str(m.get_attr("IFA_LOCAL")) for m in got}
                assert static <= local, f"a returned dump misses {len(static - local)} addresses"
                outcomes.append("retried" if len(attempts) > 1 else "clean")
    finally:
        churn.kill()
        churn.wait()
    assert "retried" in outcomes or "gave up" in outcomes, f"no dump was interrupted: {outcomes}"


# --- the iptables backend ---------------------------------------------------------------------


@pytest.mark.skipif(
    importlib.util.find_spec("iptc") is None or not oracle.xtables_available(),
    reason="python-iptables or iptables-legacy is not installed",
)
def test_iptables_backend_install_list_note_remove(pod: Pod) -> None:
    from egress_router_cni.nat import get_backend, spell

    rules = [
        DnatRule(4, "eth0", ip_address("203.0.113.26"), "tcp", 8080, 80),
        DnatRule(4, "eth0", ip_address("10.0.0.99")),
        SnatRule(4, "net1", ip_address(RESERVED_IP)),
    ]
    state = RouterState(owner=OWNER, forwarding={4: "0"}, nat=Backend.IPTABLES)
    before = oracle.xtables_save(pod.ns)
    with in_ns(pod.path), get_backend("iptables") as backend:
        assert backend.name is Backend.IPTABLES
        assert backend.installed([4, 6]) is None
        assert backend.note([4, 6]) is None
        backend.install(rules, [4], encode_note(state))
        saved = oracle.xtables_rules(pod.ns)
        assert len(saved) == 3 and all(f'--comment "{encode_note(state)}"' in line for line in saved), saved
        assert "-A PREROUTING -i eth0 -p tcp -m tcp --dport 8080" in saved[0]
        assert backend.installed([4, 6]) == rules
        assert decode_note(backend.note([4, 6])) == state
        expected = "iptables -t nat PREROUTING -i eth0 -p TCP --dport 8080 -j DNAT --to-destination 203.0.113.26:80"
        assert spell(backend.name, rules[0]) == expected
        backend.install(rules[1:], [4], encode_note(state))  # replaces, never adds
        assert backend.installed([4]) == rules[1:]
        backend.remove([4, 6])
        assert backend.installed([4, 6]) is None
        backend.remove([4, 6])  # nothing there is not an error
    assert oracle.xtables_save(pod.ns) == before
