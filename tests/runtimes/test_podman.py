"""egress-router under podman 4.3 (CNI backend), the way a user adds an egress router to a container.

A container on a cluster bridge network gets the egress network with
`podman network connect` (so the plugin sees CNI_IFNAME=eth1, after eth0
exists); a second container's traffic to the router's eth0 must leave with
the reserved address. podman hides DEL failures (`rm -f` exits 0 anyway), so
teardown is judged by the plugin's log and by the namespace itself, held
open past podman's own removal.
"""

from __future__ import annotations

import os
from typing import List

import pytest

from tests import oracle
from tests.topology import Topology

from .drivers import Podman
from .harness import (
    EGRESS_NETWORK,
    HostTraces,
    hold_netns,
    leftovers,
    plugin_calls,
    router_state_problems,
    summaries,
    traffic_problems,
)

pytestmark = [pytest.mark.netns, pytest.mark.runtimes]
ROUTER_IF = "eth1"  # podman 4.3 `network connect` has no interface-name option


def eth0_address(ns: str) -> str:
    return oracle.ipv4_addresses(ns, "eth0")[0].split("/")[0]


def expected_calls(netns: str, *commands: str) -> List[str]:
    return [f"{c}({ROUTER_IF}, netns={netns}) ok" for c in commands]


def test_network_connect_routes_traffic_and_rm_cleans_up(
    podman: Podman, topo: Topology, host_traces: HostTraces
) -> None:
    router_path = podman.run_sleeper("router")
    router_ns = os.path.basename(router_path)
    router_id = podman.container_id("router")
    before = oracle.snapshot(router_ns)

    podman("network", "connect", EGRESS_NETWORK, "router")
    assert router_state_problems(router_ns, ROUTER_IF) == []
    client_path = podman.run_sleeper("client")
    assert traffic_problems(client_path, eth0_address(router_ns)) == []

    # DEL with the container alive: the namespace must be exactly as before ADD.
    podman("network", "disconnect", EGRESS_NETWORK, "router")
    assert oracle.snapshot_diff(before, oracle.snapshot(router_ns)) == []

    podman("network", "connect", EGRESS_NETWORK, "router")
    assert router_state_problems(router_ns, ROUTER_IF) == []
    held = hold_netns(router_path, f"{topo.prefix}-held-router")
    podman("rm", "-f", "-t", "0", "router", "client")

    assert not os.path.exists(router_path), "podman left the container's netns file"
    assert leftovers(held) == [], "the DELs of both networks must leave only lo"
    log = podman.work / "egress-router-plugin.log"
    assert summaries(plugin_calls(log, router_id)) == expected_calls(router_path, "ADD", "DEL", "ADD", "DEL")
    assert not [r for r in host_traces.new_results() if router_id in r], "libcni kept a result: a DEL failed"
