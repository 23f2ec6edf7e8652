"""Bad input: every refusal is one CNI error document on stdout, exit 1, and no change to the pod or node.

Each case runs the real executable in the node namespace against a fresh pod
and compares oracle snapshots of both namespaces taken before and after.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

import pytest

from tests import oracle
from tests.cni import IFNAME, Config, Plugin, router_config, with_ip
from tests.expect import assert_cni_error
from tests.topology import MASTER, Pod, Topology, ip

pytestmark = pytest.mark.netns

Stdin = Union[str, bytes, Callable[[Config], Config]]


def change(**changes: Any) -> Callable[[Config], Config]:
    """Replace top-level keys of the config (None deletes a key)."""

    def apply(conf: Config) -> Config:
        new = copy.deepcopy(conf)
        for key, value in changes.items():
            if value is None:
                new.pop(key, None)
            else:
                new[key] = value
        return new

    return apply


def change_ip(**changes: Any) -> Callable[[Config], Config]:
    """Replace keys of the "ip" object (None deletes a key)."""
    return lambda conf: with_ip(conf, **changes)


def destinations(*entries: Any) -> Callable[[Config], Config]:
    return change_ip(destinations=list(entries))


def master_args(**args: Any) -> Callable[[Config], Config]:
    return change(interfaceArgs=args)


def same(conf: Config) -> Config:
    return conf


def add_foreign_net1(_topology: Topology, pod: Pod) -> None:
    """Someone else's interface already called net1: ADD must fail and leave it alone."""
    ip(pod.ns, "link", "add", IFNAME, "type", "veth", "peer", "name", "foreign0")
    ip(pod.ns, "addr", "add", "198.51.100.7/24", "dev", IFNAME)
    ip(pod.ns, "link", "set", IFNAME, "up")


def add_foreign_nat_table(_topology: Topology, pod: Pod) -> None:
    """A table named like the router's: ADD must refuse rather than replace someone's rules."""
    oracle.netns_exec(pod.ns, "nft", "add", "table", "ip", "egress_cni")


@dataclass(frozen=True)
class Case:
    """One bad invocation: what goes in, the error code that must come out."""

    id: str
    code: int
    stdin: Stdin = same
    env: Dict[str, Optional[str]] = field(default_factory=dict)  # "{pod}", "{node}", "{file}" are filled in
    command: str = "ADD"
    version: str = "1.0.0"
    setup: Optional[Callable[[Topology, Pod], None]] = None


CASES = [
    # Decoding (6) and versions (1)
    Case("bad-json", 6, '{"cniVersion": "1.0.0", "name": '),
    Case("json-array", 6, '["egress-router"]'),
    Case("json-string", 6, '"egress-router"'),
    Case("empty-stdin", 6, ""),
    Case("not-utf8", 6, b"\xff\xfe{}"),
    Case("cniVersion-unknown", 1, change(cniVersion="0.5.0")),
    Case("cniVersion-number", 6, change(cniVersion=1.0)),
    Case("check-at-0.3.1", 1, command="CHECK", version="0.3.1"),
    Case("gc-at-1.0.0", 1, command="GC", version="1.0.0"),
    Case("status-at-0.4.0", 1, command="STATUS", version="0.4.0"),
    # Environment (4)
    Case("missing-CNI_CONTAINERID", 4, env={"CNI_CONTAINERID": None}),
    Case("missing-CNI_NETNS", 4, env={"CNI_NETNS": ""}),
    Case("missing-CNI_IFNAME", 4, env={"CNI_IFNAME": None}),
    Case("CNI_IFNAME-too-long", 4, env={"CNI_IFNAME": "net1-is-too-long"}),
    Case("CNI_IFNAME-slash", 4, env={"CNI_IFNAME": "net/1"}),
    Case("CNI_CONTAINERID-bad", 4, env={"CNI_CONTAINERID": "-not valid"}),
    Case("unknown-CNI_COMMAND", 4, command="FROB"),
    Case("CNI_ARGS-not-pairs", 4, env={"CNI_ARGS": "IgnoreUnknown"}),
    # Network configuration (7) and unsupported fields (2)
    Case("missing-name", 7, change(name=None)),
    Case("bad-name", 7, change(name="egress router!")),
    Case("wrong-type", 7, change(type="macvlan")),
    Case("missing-ip", 7, change(ip=None)),
    Case("no-addresses", 7, change_ip(addresses=[])),
    Case("address-bad-cidr", 7, change_ip(addresses=["192.168.12.300/24"])),
    Case("address-without-prefix", 7, change_ip(addresses=["192.168.12.99"])),
    Case("missing-gateway", 7, change_ip(gateway=None)),
    Case("gateway-not-an-ip", 7, change_ip(gateway="gw.example.com")),
    Case("destination-two-fields", 7, destinations("80 UDP")),
    Case("destination-five-fields", 7, destinations("80 TCP 203.0.113.26 80 81")),
    Case("destination-protocol", 7, destinations("80 ICMP 10.0.0.99")),
    Case("destination-port-name", 7, destinations("http TCP 203.0.113.26")),
    Case("destination-bad-ip", 7, destinations("80 TCP 203.0.113.300")),
    Case("destination-port-0", 7, destinations("0 TCP 203.0.113.26")),
    Case("destination-port-70000", 7, destinations("70000 TCP 203.0.113.26")),
    Case("destination-target-port-0", 7, destinations("8080 TCP 203.0.113.26 0")),
    Case("destination-not-a-string", 7, destinations(80)),
    Case("destination-duplicate-port", 7, destinations("8080 TCP 203.0.113.26 80", "8080 tcp 203.0.113.27 443")),
    Case("fallback-not-last", 7, destinations("203.0.113.26", "8080 TCP 203.0.113.27 80")),
    Case("destination-ipv6-without-ipv6-address", 7, destinations("80 TCP 2001:db8::1")),
    Case("fallbackIP-not-an-ip", 7, change_ip(fallbackIP="everything")),
    Case("interfaceType-ipvlan", 7, change(interfaceType="ipvlan")),
    Case("mode-unknown", 7, master_args(master=MASTER, mode="turbo")),
    Case("mtu-not-a-number", 7, master_args(master=MASTER, mtu="big")),
    Case("podIP-key", 2, change(podIP="10.128.10.18")),
    Case("check-without-prevResult", 7, command="CHECK"),
    # The node and the pod (7, 3, 8, 104)
    Case("master-does-not-exist", 7, master_args(master="nosuch0", mode="bridge")),
    # The node namespace has no default route, so the master cannot be guessed from it.
    Case("master-unset-no-default-route", 7, master_args(mode="bridge")),
    Case("mtu-above-master", 7, master_args(master=MASTER, mode="bridge", mtu=9000)),
    Case("netns-missing", 3, env={"CNI_NETNS": "/run/netns/ert-no-such-netns"}),
    Case("netns-not-a-netns", 3, env={"CNI_NETNS": "{file}"}),
    Case("netns-is-the-node", 8, env={"CNI_NETNS": "{node}"}),
    Case("net1-already-exists", 104, setup=add_foreign_net1),
    Case("nat-table-already-exists", 103, setup=add_foreign_nat_table),
]


def stdin_for(case: Case, log_file: Path) -> Union[str, bytes, Config]:
    if callable(case.stdin):
        return case.stdin(router_config(case.version, str(log_file)))
    return case.stdin


def env_for(case: Case, topology: Topology, pod: Pod, tmp_path: Path) -> Dict[str, Optional[str]]:
    not_a_netns = tmp_path / "not-a-netns"
    not_a_netns.write_text("")
    places = {"pod": pod.path, "node": f"/run/netns/{topology.node}", "file": str(not_a_netns)}
    return {k: v.format(**places) if v is not None else None for k, v in case.env.items()}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_cleanly(
    case: Case, topology: Topology, pod: Pod, plugin: Plugin, log_file: Path, tmp_path: Path
) -> None:
    """One CNI error document with the expected code; the pod and the node are exactly as before."""
    if case.setup:
        case.setup(topology, pod)
    pod_before, node_before = oracle.snapshot(pod.ns), oracle.snapshot(topology.node)
    outcome = plugin.run(
        case.command, stdin_for(case, log_file), netns=pod.path, env=env_for(case, topology, pod, tmp_path)
    )
    assert_cni_error(outcome, case.code)
    assert not oracle.snapshot_diff(pod_before, oracle.snapshot(pod.ns)), "the pod changed"
    assert not oracle.snapshot_diff(node_before, oracle.snapshot(topology.node)), "the node changed"


def test_foreign_net1_survives_failed_add_and_del(topology: Topology, pod: Pod, plugin: Plugin, log_file: Path) -> None:
    """The runtime follows a failed ADD with DEL: that DEL must not delete an interface ADD did not create."""
    add_foreign_net1(topology, pod)
    before = oracle.snapshot(pod.ns)
    conf = router_config("1.0.0", str(log_file))
    assert_cni_error(plugin.add(conf, pod.path), 104)
    outcome = plugin.delete(conf, pod.path)
    assert outcome.returncode == 0 and not outcome.stdout.strip(), outcome.describe()
    assert not oracle.snapshot_diff(before, oracle.snapshot(pod.ns)), "DEL touched the foreign net1"


def test_missing_cni_version_means_0_1_0(pod: Pod, plugin: Plugin, log_file: Path) -> None:
    """Not an error: like libcni, a config without cniVersion is read as 0.1.0 (and answered in 0.1.0)."""
    conf = change(cniVersion=None)(router_config("1.0.0", str(log_file)))
    outcome = plugin.add(conf, pod.path)
    assert outcome.returncode == 0, outcome.describe()
    assert outcome.document()["cniVersion"] == "0.1.0"
    assert "ip4" in outcome.document()
    assert plugin.delete(conf, pod.path).returncode == 0
