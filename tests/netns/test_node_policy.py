"""Issue 13: the node policy, end to end (the real executable, EGRESS_ROUTER_POLICY pointing at a file).

Every refusal is code 106 naming the policy file, the key and the value, with
the pod and the node exactly as before; DEL is never refused; CHECK reports a
violation as a difference (code 105).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import pytest

from tests import oracle
from tests.cni import Config, Outcome, Plugin, router_config, with_ip, with_prev_result
from tests.expect import assert_cni_error
from tests.scratch import temp_dir
from tests.topology import MASTER, RESERVED_IP, Pod, Topology

pytestmark = pytest.mark.netns

PERMISSIVE = {
    "allowedMasters": [MASTER],
    "allowedModes": ["bridge"],
    "allowedAddressRanges": ["192.168.12.64/26"],
    "allowedDestinationRanges": ["10.0.0.96/30", "203.0.113.0/24"],
}


class Node:
    """Runs the plugin with EGRESS_ROUTER_POLICY set to a policy file of the test's choosing."""

    def __init__(self, plugin: Plugin, directory: Path) -> None:
        self.plugin = plugin
        self.path = directory / "policy.json"

    def write(self, policy: Optional[Dict[str, Any]], mode: int = 0o644) -> None:
        if policy is None:
            self.path.unlink(missing_ok=True)
            return
        self.path.write_text(json.dumps(policy))
        self.path.chmod(mode)

    def run(self, command: str, conf: Config, pod: Pod) -> Outcome:
        return self.plugin.run(command, conf, pod.path, env={"EGRESS_ROUTER_POLICY": str(self.path)})


@pytest.fixture
def node(plugin: Plugin, tmp_path: Path) -> Node:
    return Node(plugin, tmp_path)


def refused(node: Node, topology: Topology, pod: Pod, conf: Config, *named: str) -> Dict[str, Any]:
    pod_before, node_before = oracle.snapshot(pod.ns), oracle.snapshot(topology.node)
    outcome = node.run("ADD", conf, pod)
    assert_cni_error(outcome, 106)
    doc: Dict[str, Any] = outcome.document()
    text = f"{doc['msg']}: {doc.get('details', '')}"
    assert str(node.path) in text and all(n in text for n in named), outcome.describe()
    assert not oracle.snapshot_diff(pod_before, oracle.snapshot(pod.ns)), "the pod changed"
    assert not oracle.snapshot_diff(node_before, oracle.snapshot(topology.node)), "the node changed"
    return doc


def works(node: Node, pod: Pod, conf: Config) -> None:
    before = oracle.snapshot(pod.ns)
    outcome = node.run("ADD", conf, pod)
    assert outcome.returncode == 0, outcome.describe()
    assert node.run("CHECK", with_prev_result(conf, outcome.document()), pod).returncode == 0
    assert node.run("DEL", conf, pod).returncode == 0
    assert not oracle.snapshot_diff(before, oracle.snapshot(pod.ns))


# --- passthru (finding 2) -----------------------------------------------------------------------


def passthru(log_file: Path) -> Config:
    return router_config("1.0.0", str(log_file), interfaceArgs={"master": MASTER, "mode": "passthru"})


def test_passthru_is_refused_without_a_policy(topology: Topology, pod: Pod, node: Node, log_file: Path) -> None:
    """No policy file: the default allows every mode but passthru; the master keeps its flags and MAC."""
    node.write(None)
    refused(node, topology, pod, passthru(log_file), "allowedModes", "'passthru'")


def test_passthru_works_when_the_node_allows_it(topology: Topology, pod: Pod, node: Node, log_file: Path) -> None:
    node.write({"allowedModes": ["bridge", "passthru"]})
    master_before = oracle.link(topology.node, MASTER)
    conf = passthru(log_file)
    outcome = node.run("ADD", conf, pod)
    assert outcome.returncode == 0, outcome.describe()
    net1 = oracle.link(pod.ns, "net1")
    assert net1 is not None and net1["linkinfo"]["info_data"]["mode"] == "passthru"
    # What passthru does to the master (README): promiscuous, and net1 carries the master's MAC.
    master = oracle.link(topology.node, MASTER)
    assert master is not None and master_before is not None
    assert master["promiscuity"] == master_before["promiscuity"] + 1
    assert net1["address"] == master["address"]
    assert node.run("DEL", conf, pod).returncode == 0
    master_after = oracle.link(topology.node, MASTER)
    assert master_before is not None and master_after is not None
    assert (master_after["flags"], master_after["promiscuity"]) == (
        master_before["flags"],
        master_before["promiscuity"],
    )


# --- each key violated and satisfied ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("allowedMasters", ["ens4"], f"master '{MASTER}'"),
        ("allowedModes", ["vepa"], "interfaceArgs.mode 'bridge'"),
        ("allowedAddressRanges", ["192.168.12.0/26"], f"reserved address {RESERVED_IP}/24"),
        ("allowedDestinationRanges", ["203.0.113.0/24"], "destination '80 UDP 10.0.0.99/30'"),
    ],
)
def test_each_policy_key_violated(
    key: str, value: Any, named: str, topology: Topology, pod: Pod, node: Node, log_file: Path
) -> None:
    node.write({**PERMISSIVE, key: value})
    refused(node, topology, pod, router_config("1.0.0", str(log_file)), key, named)


def test_the_master_of_the_default_route_is_checked_too(
    topology: Topology, pod: Pod, node: Node, log_file: Path
) -> None:
    """Without interfaceArgs.master, ADD resolves the node's default-route interface, then asks the policy."""
    oracle.netns_exec(topology.node, "ip", "route", "add", "default", "dev", MASTER)
    try:
        node.write({"allowedMasters": ["ens4"]})
        refused(node, topology, pod, router_config("1.0.0", str(log_file), interfaceArgs={}), f"master '{MASTER}'")
    finally:
        oracle.netns_exec(topology.node, "ip", "route", "del", "default")


def test_fallback_destination_must_be_in_range(topology: Topology, pod: Pod, node: Node, log_file: Path) -> None:
    node.write(PERMISSIVE)
    conf = with_ip(router_config("1.0.0", str(log_file)), fallbackIP="198.51.100.1")
    refused(node, topology, pod, conf, "allowedDestinationRanges", "fallback '198.51.100.1'")


def test_a_policy_with_every_key_satisfied(pod: Pod, node: Node, log_file: Path) -> None:
    node.write({**PERMISSIVE, "logDirectories": [str(log_file.parent)], "addressConflictDetection": False})
    works(node, pod, router_config("1.0.0", str(log_file)))


# --- the file itself --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o664, 0o666])
def test_a_group_or_world_writable_policy_is_refused(
    mode: int, topology: Topology, pod: Pod, node: Node, log_file: Path
) -> None:
    """Fail closed: the file cannot be trusted, so nothing is allowed (not even the defaults)."""
    node.write({"allowedModes": ["bridge", "passthru"]}, mode)
    refused(node, topology, pod, router_config("1.0.0", str(log_file)), "writable by group or others")
    status = node.run("STATUS", router_config("1.1.0", str(log_file)), pod)
    assert_cni_error(status, 50)


def test_del_is_never_refused_and_check_reports_the_violation(
    topology: Topology, pod: Pod, node: Node, log_file: Path
) -> None:
    """The node's root tightens the policy after ADD: CHECK names the key (105), DEL still cleans up."""
    before = oracle.snapshot(pod.ns)
    node.write(PERMISSIVE)
    conf = router_config("1.0.0", str(log_file))
    outcome = node.run("ADD", conf, pod)
    assert outcome.returncode == 0, outcome.describe()
    node.write({**PERMISSIVE, "allowedAddressRanges": ["10.0.0.0/8"]})
    check = node.run("CHECK", with_prev_result(conf, outcome.document()), pod)
    assert_cni_error(check, 105)
    assert "allowedAddressRanges does not allow reserved address" in check.document()["details"]
    node.write({"allowedModes": []}, 0o666)  # even a refused policy file does not stop DEL
    assert node.run("DEL", conf, pod).returncode == 0
    assert not oracle.snapshot_diff(before, oracle.snapshot(pod.ns))


# --- logDirectories ---------------------------------------------------------------------------------


@pytest.fixture
def var_tmp_dir() -> Iterator[Path]:
    yield from temp_dir("ert-logs-", "/var/tmp")


def test_log_directories_replace_the_default_list(pod: Pod, node: Node, log_file: Path, var_tmp_dir: Path) -> None:
    node.write({"logDirectories": [str(var_tmp_dir)]})
    elsewhere = var_tmp_dir / "egress-router-log"
    outcome = node.run("DEL", router_config("1.0.0", str(elsewhere)), pod)
    assert outcome.returncode == 0 and "refusing" not in outcome.stderr, outcome.describe()
    assert "Called CNI DEL" in elsewhere.read_text()
    outcome = node.run("DEL", router_config("1.0.0", str(log_file)), pod)  # /tmp is no longer in the list
    assert "refusing log_file" in outcome.stderr and not log_file.exists()
