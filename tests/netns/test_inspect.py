"""`egress-router inspect`: the product page's eight verification steps in one read-only command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from tests import oracle
from tests.cni import IFNAME, Plugin, plugin_command, router_config
from tests.topology import Pod, Topology

pytestmark = pytest.mark.netns

SEED_RULES = [
    'iifname "eth0" udp dport 80 dnat to 10.0.0.99',
    'iifname "eth0" tcp dport 8080 dnat to 203.0.113.26:80',
    'iifname "eth0" tcp dport 8443 dnat to 203.0.113.27:443',
    'oifname "net1" snat to 192.168.12.99',
]


def inspect(topology: Topology, *args: str) -> Tuple[int, str, str]:
    """Run the real executable's `inspect` in the node namespace (CLI mode: no CNI_COMMAND)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    proc = subprocess.run(
        ["ip", "netns", "exec", topology.node, *plugin_command(), "inspect", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture
def router(topology: Topology, pod: Pod, log_file: Path) -> Iterator[Tuple[Plugin, Dict[str, Any], Dict[str, Any]]]:
    """A router set up by ADD; yields (plugin, config, ADD result); DEL afterwards."""
    plugin = Plugin(topology.node)
    conf = router_config("1.0.0", str(log_file))
    outcome = plugin.add(conf, pod.path)
    assert outcome.returncode == 0, outcome.describe()
    try:
        yield plugin, conf, outcome.document()
    finally:
        plugin.delete(conf, pod.path)


def test_inspect_shows_interface_routes_rules_forwarding_and_log(
    topology: Topology, pod: Pod, log_file: Path, router: Tuple[Plugin, Dict[str, Any], Dict[str, Any]]
) -> None:
    _, _, result = router
    before = oracle.snapshot(pod.ns)
    status, out, err = inspect(topology, "--netns", pod.path, "--log-file", str(log_file), "-o", "json")
    assert status == 0, err
    view = json.loads(out)
    iface = view["interfaces"][0]
    assert (iface["name"], iface["type"], iface["master"], iface["mode"], iface["state"]) == (
        IFNAME,
        "macvlan",
        "ermaster0",
        "bridge",
        "up",
    )
    assert iface["mac"] == result["interfaces"][0]["mac"]
    assert "192.168.12.99/24" in iface["addresses"]
    assert "default via 192.168.12.1 dev net1" in view["routes"]
    assert "192.168.12.1/32 dev net1" in view["routes"]
    assert "default via 10.128.10.1 dev eth0" in view["saved_routes"]
    assert view["forwarding"]["net.ipv4.ip_forward"] == "1"
    assert view["nat"] == {"nftables": SEED_RULES}
    assert view["log_lines"][0].endswith("[debug] Called CNI ADD")
    assert any("IP Destinations: [80 UDP 10.0.0.99/30" in line for line in view["log_lines"])
    assert oracle.snapshot(pod.ns) == before, "inspect changed the pod"


def test_inspect_text_output_reads_like_the_manual_steps(
    topology: Topology, pod: Pod, log_file: Path, router: Tuple[Plugin, Dict[str, Any], Dict[str, Any]]
) -> None:
    status, out, err = inspect(topology, "--netns", pod.path, "--log-file", str(log_file))
    assert status == 0, err
    assert "Interface net1: macvlan mode bridge on master ermaster0" in out
    assert "  default via 192.168.12.1 dev net1" in out
    assert "NAT rules (nftables):" in out
    for rule in SEED_RULES:
        assert f"  {rule}" in out


def test_inspect_finds_the_router_by_container_id_prefix(
    topology: Topology, pod: Pod, log_file: Path, router: Tuple[Plugin, Dict[str, Any], Dict[str, Any]]
) -> None:
    plugin, _, _ = router
    status, out, err = inspect(
        topology, "--container-id", plugin.container_id[:12], "--log-file", str(log_file), "-o", "json"
    )
    assert status == 0, err
    assert json.loads(out)["netns"] == pod.path


def test_inspect_finds_the_router_by_pid(
    topology: Topology, pod: Pod, log_file: Path, router: Tuple[Plugin, Dict[str, Any], Dict[str, Any]]
) -> None:
    # `ip netns exec` execs sleep, so this PID lives in the pod namespace.
    sleeper = subprocess.Popen(["ip", "netns", "exec", pod.ns, "sleep", "60"])
    try:
        status, out, err = inspect(topology, "--pid", str(sleeper.pid), "--log-file", str(log_file), "-o", "json")
        assert status == 0, err
        assert json.loads(out)["interfaces"][0]["name"] == IFNAME
    finally:
        os.kill(sleeper.pid, signal.SIGKILL)
        sleeper.wait(timeout=10)


def test_inspect_check_passes_then_names_what_is_wrong(
    topology: Topology, pod: Pod, log_file: Path, tmp_path: Path, router: Tuple[Plugin, Dict[str, Any], Dict[str, Any]]
) -> None:
    _, conf, _ = router
    conf_file = tmp_path / "router.conf"
    conf_file.write_text(json.dumps(conf))
    args: List[str] = ["--netns", pod.path, "--log-file", str(log_file), "--check", "--config", str(conf_file)]
    status, out, err = inspect(topology, *args)
    assert status == 0, out + err
    assert "CHECK: passed" in out
    oracle.netns_exec(pod.ns, "nft", "flush", "chain", "ip", "egress_cni", "postrouting")
    status, out, err = inspect(topology, *args)
    assert status == 1
    assert "CHECK: FAILED" in out
    assert 'NAT rules differ: missing oifname "net1" snat to 192.168.12.99' in out


def test_inspect_of_a_missing_namespace_fails_cleanly(topology: Topology, log_file: Path) -> None:
    status, out, err = inspect(topology, "--netns", "/run/netns/ert-no-such-pod", "--log-file", str(log_file))
    assert status == 1
    assert out == ""
    assert "network namespace not found" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "args",
    [[], ["--netns", "/x", "--pid", "1"]],
    ids=["no-target", "two-targets"],
)
def test_inspect_target_is_a_usage_error(args: List[str]) -> None:
    from click.testing import CliRunner

    from egress_router_cni.cli import cli

    result = CliRunner().invoke(cli, ["inspect", *args])
    assert result.exit_code == 2
    assert "exactly one of --netns, --pid, --container-id or --all" in result.output
