"""egress-router under containerd 1.6's CRI plugin, driven over its socket the way kubelet does.

The CRI attaches every network in its conf_dir (max_conf_num=2): 10-bridge as
eth0 and 20-egress as eth1, in parallel, so eth0 may not exist yet when
egress-router's ADD runs (its DNAT matches eth0 by name). A pod's teardown is
two DELs: StopPodSandbox (netns and prevResult), then RemovePodSandbox (empty
netns, no prevResult); a failed DEL would leave the pod stuck in Terminating.
"""

from __future__ import annotations

import os
import uuid

import pytest

from tests import oracle
from tests.topology import Topology

from .drivers import Containerd, node_path
from .harness import HostTraces, hold_netns, leftovers, plugin_calls, router_state_problems, summaries, traffic_problems

pytestmark = [pytest.mark.netns, pytest.mark.runtimes]
ROUTER_IF = "eth1"  # go-cni names the second network's interface eth1


def test_sandbox_gets_router_and_both_dels_succeed(
    containerd: Containerd, topo: Topology, host_traces: HostTraces
) -> None:
    cri = containerd.cri
    uid = str(uuid.uuid4())
    sandbox = cri.run_pod("egress-router", "egress", uid, containerd.log_dir)
    status = cri.status(sandbox)
    assert status.ready, status
    assert status.netns, status
    pod_ns = os.path.basename(status.netns)  # /var/run/netns/cni-UUID
    assert router_state_problems(pod_ns, ROUTER_IF) == []
    assert oracle.ipv4_addresses(pod_ns, "eth0") == [f"{status.ip}/24"]
    # The node (the bridge's gateway) as the client of the router pod's cluster address.
    assert traffic_problems(node_path(topo.node), status.ip) == []

    held = hold_netns(status.netns, f"{topo.prefix}-held-pod")
    cri.stop_pod(sandbox)
    assert leftovers(held) == [], "StopPodSandbox's DELs must leave only lo"
    cri.remove_pod(sandbox)
    assert cri.list_pods() == []

    calls = summaries(plugin_calls(containerd.work / "egress-router-plugin.log", sandbox))
    assert calls == [
        f"ADD({ROUTER_IF}, netns={status.netns}) ok",
        f"DEL({ROUTER_IF}, netns={status.netns}) ok",
        f"DEL({ROUTER_IF}, netns='') ok",
    ]
    assert not [r for r in host_traces.new_results() if sandbox in r], "libcni kept a result: a DEL failed"
