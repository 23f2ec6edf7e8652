"""The reserved address is announced on the external network when the router comes up."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests import oracle
from tests.cni import IFNAME, Plugin, router_config
from tests.topology import RESERVED_IP, Pod, Topology, write_sysctl

pytestmark = pytest.mark.netns
LAN_IFACE = "lan-node"


def test_add_announces_the_reserved_address_without_any_traffic(topology: Topology, pod: Pod, log_file: Path) -> None:
    # arp_accept=1: the gateway learns addresses from gratuitous ARP (Linux ignores them by default).
    write_sysctl(topology.lan, f"net/ipv4/conf/{LAN_IFACE}/arp_accept", "1")
    plugin = Plugin(topology.node)
    conf = router_config("1.0.0", str(log_file))
    try:
        outcome = plugin.add(conf, pod.path)
        assert outcome.returncode == 0, outcome.describe()
        mac = outcome.document()["interfaces"][0]["mac"]
        learned = []
        for _ in range(50):  # the announcement is sent as the link comes up; allow it to arrive
            learned = json.loads(oracle.netns_exec(topology.lan, "ip", "-j", "neigh", "show", RESERVED_IP) or "[]")
            if learned and learned[0].get("lladdr"):
                break
            time.sleep(0.05)
        assert learned, f"the gateway never heard of {RESERVED_IP}: no gratuitous ARP arrived"
        assert learned[0]["lladdr"] == mac, f"the gateway maps {RESERVED_IP} to {learned[0]}, not {IFNAME}'s {mac}"
    finally:
        write_sysctl(topology.lan, f"net/ipv4/conf/{LAN_IFACE}/arp_accept", "0")
        plugin.delete(conf, pod.path)
