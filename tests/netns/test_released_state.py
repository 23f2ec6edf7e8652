"""DEL cleans up a router whose kernel state the released version wrote (tests/fixtures/released_state.json).

The router is built by hand, step by step as the released ADD leaves it: the
macvlan with the released alias, the pod's default route moved to the
owner's private table, forwarding switched on, and the nftables table with
the released note. DEL by the code under test must put the pod back exactly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import pytest

from tests import oracle
from tests.cni import IFNAME, Plugin, router_config
from tests.topology import CLUSTER_GATEWAY, GATEWAY, MASTER, RESERVED_IP, Pod, Topology, ip, run, write_sysctl

pytestmark = pytest.mark.netns

RELEASED = json.loads((Path(__file__).parents[1] / "fixtures" / "released_state.json").read_text())
NFT_RECORD = RELEASED["records"][0]  # nftables, IPv4 forwarding was 0
NOTE_ONLY_RECORD = RELEASED["records"][2]  # nftables, IPv6 forwarding was 0


def nft(ns: str, batch: str, tmp_path: Path) -> None:
    path = tmp_path / "released.nft"
    path.write_text(batch)
    run(["ip", "netns", "exec", ns, "nft", "-f", str(path)])


def released_nat(ns: str, note: str, family: str, tmp_path: Path) -> None:
    """The table the released ADD installed: its note as the comment, an SNAT rule."""
    nft(
        ns,
        f'add table {family} egress_cni {{ comment "{note}"; }}\n'
        f"add chain {family} egress_cni postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}\n"
        f'add rule {family} egress_cni postrouting oifname "{IFNAME}" snat to '
        f"{RESERVED_IP if family == 'ip' else '2001:db8:12::99'}\n",
        tmp_path,
    )


def released_router(topology: Topology, pod: Pod, record: Dict[str, Any], tmp_path: Path) -> None:
    """net1 as the released ADD leaves it in the pod, with the record's alias."""
    ip(topology.node, "link", "add", "egrfixture", "link", MASTER, "type", "macvlan", "mode", "bridge")
    ip(topology.node, "link", "set", "egrfixture", "netns", pod.ns)
    ip(pod.ns, "link", "set", "egrfixture", "name", IFNAME, "alias", record["alias"])
    ip(pod.ns, "addr", "add", f"{RESERVED_IP}/24", "dev", IFNAME)
    ip(pod.ns, "link", "set", IFNAME, "up")
    table = str(RELEASED["saved_table"])
    ip(pod.ns, "route", "add", "default", "via", CLUSTER_GATEWAY, "dev", "eth0", "table", table)
    ip(pod.ns, "route", "del", "default", "table", "main")
    ip(pod.ns, "route", "add", f"{GATEWAY}/32", "dev", IFNAME)
    ip(pod.ns, "route", "add", "default", "via", GATEWAY, "dev", IFNAME)
    write_sysctl(pod.ns, "net/ipv4/ip_forward", "1")
    released_nat(pod.ns, record["note"], "ip", tmp_path)


def test_del_cleans_up_a_router_the_released_version_made(
    topology: Topology, pod: Pod, log_file: Path, tmp_path: Path
) -> None:
    assert oracle.sysctl(pod.ns, "net/ipv4/ip_forward") == "0"
    before = oracle.snapshot(pod.ns)
    released_router(topology, pod, NFT_RECORD, tmp_path)
    assert oracle.link(pod.ns, IFNAME) is not None
    plugin = Plugin(topology.node)
    plugin.container_id = RELEASED["container_id"]
    outcome = plugin.delete(router_config("1.0.0", str(log_file)), pod.path)
    assert outcome.returncode == 0 and outcome.stdout == "", outcome.describe()
    diff = oracle.snapshot_diff(before, oracle.snapshot(pod.ns))
    assert not diff, "DEL left the released router behind:\n" + "\n".join(diff)
    log = log_file.read_text()
    assert "Deleted nftables NAT rules" in log
    assert "Restored net.ipv4.ip_forward=0" in log


def test_del_restores_from_the_released_note_when_the_link_is_gone(
    topology: Topology, pod: Pod, log_file: Path, tmp_path: Path
) -> None:
    """The released NAT note alone (net1 deleted by hand) still says what forwarding to restore."""
    assert oracle.sysctl(pod.ns, "net/ipv6/conf/all/forwarding") == "0"
    before = oracle.snapshot(pod.ns)
    write_sysctl(pod.ns, "net/ipv6/conf/all/forwarding", "1")
    released_nat(pod.ns, NOTE_ONLY_RECORD["note"], "ip6", tmp_path)
    plugin = Plugin(topology.node)
    plugin.container_id = RELEASED["container_id"]
    outcome = plugin.delete(router_config("1.0.0", str(log_file)), pod.path)
    assert outcome.returncode == 0, outcome.describe()
    diff = oracle.snapshot_diff(before, oracle.snapshot(pod.ns))
    assert not diff, "DEL did not restore the pod from the released note:\n" + "\n".join(diff)
    assert "Restored net.ipv6.conf.all.forwarding=0" in log_file.read_text()


def test_del_leaves_another_owners_released_rules(topology: Topology, pod: Pod, log_file: Path, tmp_path: Path) -> None:
    released_nat(pod.ns, NFT_RECORD["note"], "ip", tmp_path)
    before = oracle.snapshot(pod.ns)
    outcome = Plugin(topology.node).delete(router_config("1.0.0", str(log_file)), pod.path)
    assert outcome.returncode == 0, outcome.describe()
    assert not oracle.snapshot_diff(before, oracle.snapshot(pod.ns))
    assert "NAT rules belong to another attachment: left in place" in log_file.read_text()
