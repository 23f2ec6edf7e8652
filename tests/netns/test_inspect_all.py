"""`egress-router inspect --all`: every router on the node, one row each, with a health verdict.

The real executable runs in the test topology's node namespace. The machine's
/run/netns and /proc are shared with whatever else runs here (other test
sessions' routers included), so the test that scans them asserts about its
own routers only; the tests that count run in a private mount and PID
namespace (unshare --mount --pid --mount-proc) where only the namespaces they
pin in a directory of their own (--netns-dir) and the processes they start
exist.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from tests import oracle
from tests.cni import IFNAME, Plugin, plugin_command, router_config, with_ip
from tests.topology import Pod, Topology

pytestmark = pytest.mark.netns

Router = Tuple[Pod, Plugin, Dict[str, Any]]


def _cli_env() -> Dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}


def _run(argv: List[str]) -> Tuple[int, str, str]:
    proc = subprocess.run(argv, capture_output=True, text=True, env=_cli_env(), timeout=120, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def inspect_all(topology: Topology, *args: str) -> Tuple[int, str, str]:
    """`inspect --all ARGS` in the node namespace, on the machine's real /run/netns and /proc."""
    return _run(["ip", "netns", "exec", topology.node, *plugin_command(), "inspect", "--all", *args])


def inspect_all_alone(
    topology: Topology, tmp_path: Path, pinned: List[Pod], sleepers: List[Pod], *args: str
) -> Tuple[int, str, str]:
    """`inspect --all` on a node whose only namespaces are PINNED (in a directory of their own) and
    the namespaces of processes sleeping in SLEEPERS, in a private mount and PID namespace."""
    pins = tmp_path / "netns"
    pins.mkdir(exist_ok=True)
    script = ["set -e"]
    for pod in pinned:
        (pins / pod.ns).touch()
        script.append(f"mount --bind {shlex.quote(pod.path)} {shlex.quote(str(pins / pod.ns))}")
    for pod in sleepers:
        script.append(f"ip netns exec {shlex.quote(pod.ns)} sleep 600 &")
        # Wait until it has entered the pod's namespace (ip netns exec setns()es, then execs sleep).
        inode = f"$(stat -L -c %i {shlex.quote(pod.path)})"
        script.append(f'while [ "$(stat -L -c %i /proc/$!/ns/net)" != "{inode}" ]; do sleep 0.05; done')
    command = shlex.join(
        ["ip", "netns", "exec", topology.node, *plugin_command(), "inspect", "--all", "--netns-dir", str(pins), *args]
    )
    script.append(command)  # not exec: the sleepers must outlive it; the PID namespace ends them all
    private = ["unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--mount-proc"]
    return _run([*private, "sh", "-c", "\n".join(script)])


@pytest.fixture
def routers(topology: Topology, tmp_path: Path) -> Iterator[List[Router]]:
    """Four routers in four pods, each with its own reserved address; the second logs to its own file.

    All are DELeted and their pods removed afterwards.
    """
    made: List[Router] = []
    try:
        for n in range(4):
            pod = topology.add_pod(f"all{n}")
            plugin = Plugin(topology.node)
            log = tmp_path / ("egress-router-second.log" if n == 1 else "egress-router-log")
            conf = with_ip(router_config("1.0.0", str(log)), addresses=[f"192.168.12.{110 + n}/24"])
            made.append((pod, plugin, conf))
            outcome = plugin.add(conf, pod.path)
            assert outcome.returncode == 0, outcome.describe()
        yield made
    finally:
        for pod, plugin, conf in made:
            plugin.delete(conf, pod.path)
            topology.remove_pod(pod)


def _rows(out: str, pods: List[Pod]) -> Dict[str, Dict[str, Any]]:
    """The JSON rows of PODS, by pod name (other routers on the machine are left out)."""
    paths = {p.path: p.ns for p in pods}
    return {paths[r["netns"]]: r for r in json.loads(out)["routers"] if r["netns"] in paths}


def test_all_lists_every_router_and_names_what_is_broken(topology: Topology, routers: List[Router]) -> None:
    (ok_pod, ok_plugin, _), (own_log_pod, own_log_plugin, own_log_conf) = routers[0], routers[1]
    nat_pod, route_pod = routers[2][0], routers[3][0]
    # Break two of them behind the plugin's back: a NAT rule deleted, the default route changed.
    oracle.netns_exec(nat_pod.ns, "nft", "flush", "chain", "ip", "egress_cni", "postrouting")
    oracle.netns_exec(route_pod.ns, "ip", "route", "replace", "default", "via", "10.128.10.1", "dev", "eth0")
    before = {p.ns: oracle.snapshot(p.ns) for p, _, _ in routers}

    status, out, err = inspect_all(topology, "-o", "json")
    assert status == 1, out + err
    rows = _rows(out, [p for p, _, _ in routers])
    assert set(rows) == {p.ns for p, _, _ in routers}, out

    ok = rows[ok_pod.ns]
    assert ok["healthy"] is True and ok["problems"] == [], ok
    assert ok["container_id"] == ok_plugin.container_id
    assert ok["pod"] == f"openshift-egress-router/egress-router-cni-deployment-{ok_plugin.container_id[:5]}"
    assert (ok["interface"], ok["master"]) == (IFNAME, "ermaster0")
    assert ok["addresses"] == ["192.168.12.110/24"]
    assert ok["gateways"] == ["192.168.12.1"]
    assert (ok["nat_backend"], ok["nat_rules"]) == ("nftables", 4)

    # Its log is not the default one and was not named: ADD recorded it with the router.
    own = rows[own_log_pod.ns]
    assert own["healthy"] is True, own
    assert own["log_file"] == own_log_conf["log_file"]
    assert own["container_id"] == own_log_plugin.container_id

    broken_nat = rows[nat_pod.ns]
    assert broken_nat["healthy"] is False
    assert broken_nat["nat_rules"] == 3
    assert broken_nat["problems"] == ['NAT rule missing: oifname "net1" snat to 192.168.12.112']

    broken_route = rows[route_pod.ns]
    assert broken_route["healthy"] is False
    assert broken_route["problems"] == [
        "the IPv4 default route is not via 192.168.12.1 on net1 (it is: default via 10.128.10.1 dev eth0)"
    ]
    after = {p.ns: oracle.snapshot(p.ns) for p, _, _ in routers}
    assert after == before, "inspect --all changed a router"

    status, text, err = inspect_all(topology)
    assert status == 1, err
    lines = text.splitlines()
    assert lines[0].split() == ["NETNS", "CONTAINER", "POD", "INTERFACE", "ADDRESSES", "GATEWAY", "NAT", "HEALTH"]
    ok_line = next(line for line in lines if line.startswith(ok_pod.path + " "))
    assert ok_line.split() == [
        ok_pod.path,
        ok_plugin.container_id[:12],
        ok["pod"],
        "net1@ermaster0",
        "192.168.12.110/24",
        "192.168.12.1",
        "nftables/4",
        "healthy",
    ]
    nat_line = lines.index(next(line for line in lines if line.startswith(nat_pod.path + " ")))
    assert lines[nat_line].endswith("UNHEALTHY")
    assert lines[nat_line + 1] == '    - NAT rule missing: oifname "net1" snat to 192.168.12.112'


def test_all_alone_healthy_routers_exit_0_and_processes_count(
    topology: Topology, tmp_path: Path, routers: List[Router]
) -> None:
    """Two pinned routers, a third found only through a process in it, one pinned AND with a process."""
    (a, _, _), (b, _, _), (c, plugin_c, _) = routers[:3]
    status, out, err = inspect_all_alone(topology, tmp_path, [a, b], [c, a], "-o", "json")
    assert status == 0, out + err
    found = json.loads(out)
    assert found["unhealthy"] == 0
    paths = [r["netns"] for r in found["routers"]]
    assert paths[:2] == [str(tmp_path / "netns" / a.ns), str(tmp_path / "netns" / b.ns)]  # pinned first, by name
    assert len(paths) == 3, paths  # a's sleeper is the same namespace: one row
    assert paths[2].startswith("/proc/") and paths[2].endswith("/ns/net")
    assert found["routers"][2]["container_id"] == plugin_c.container_id


def test_all_on_a_node_without_routers_says_so(topology: Topology, tmp_path: Path, pod: Pod) -> None:
    status, out, err = inspect_all_alone(topology, tmp_path, [pod], [pod])
    assert (status, out, err) == (0, "No egress routers on this node.\n", "")


def test_all_json_on_a_node_without_routers(topology: Topology, tmp_path: Path) -> None:
    status, out, err = inspect_all_alone(topology, tmp_path, [], [], "-o", "json")
    assert status == 0, err
    assert json.loads(out) == {"routers": [], "unhealthy": 0}


def test_inspect_reads_the_log_recorded_at_add_unless_told_otherwise(
    topology: Topology, pod: Pod, tmp_path: Path
) -> None:
    own_log = tmp_path / "egress-router-own.log"
    plugin = Plugin(topology.node)
    conf = router_config("1.0.0", str(own_log))
    assert plugin.add(conf, pod.path).returncode == 0
    try:
        # The kernel holds the path: the link alias ADD set (independent oracle: ip -d link).
        alias = (oracle.link(pod.ns, IFNAME) or {}).get("ifalias", "")
        assert json.loads(alias.split(" ", 1)[1])["log"] == str(own_log)

        argv = ["ip", "netns", "exec", topology.node, *plugin_command(), "inspect", "--netns", pod.path, "-o", "json"]
        view = json.loads(subprocess.run(argv, capture_output=True, text=True, env=_cli_env(), check=True).stdout)
        assert view["log_file"] == str(own_log)
        assert view["log_lines"][1].endswith(f"Container ID: {plugin.container_id} Netns: {pod.path} Interface: net1")

        other = tmp_path / "egress-router-other.log"
        other.write_text("")
        argv += ["--log-file", str(other)]
        view = json.loads(subprocess.run(argv, capture_output=True, text=True, env=_cli_env(), check=True).stdout)
        assert (view["log_file"], view["log_lines"]) == (str(other), [])
    finally:
        plugin.delete(conf, pod.path)


def test_all_escapes_control_characters(topology: Topology, pod: Pod, tmp_path: Path) -> None:
    """A pod name is the runtime's to choose; a terminal escape in it is shown, not obeyed."""
    plugin = Plugin(topology.node)
    conf = router_config("1.0.0", str(tmp_path / "egress-router-log"))
    env = {"CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=evil\x1b[2Jpod"}
    assert plugin.run("ADD", conf, pod.path, env=env).returncode == 0
    try:
        status, out, err = inspect_all_alone(topology, tmp_path, [pod], [])
        assert status == 0, out + err
        assert "\x1b" not in out
        assert "ns/evil\\x1b[2Jpod" in out.splitlines()[1]
    finally:
        plugin.delete(conf, pod.path)


def test_del_with_an_unreadable_config_logs_where_add_logged(topology: Topology, pod: Pod, tmp_path: Path) -> None:
    own_log = tmp_path / "egress-router-own.log"
    plugin = Plugin(topology.node)
    conf = router_config("1.0.0", str(own_log))
    assert plugin.add(conf, pod.path).returncode == 0
    broken = with_ip(conf, destinations=["8080 TCP 203.0.113.26 80 extra"])
    deleted = plugin.delete(broken, pod.path)
    assert deleted.returncode == 0, deleted.describe()
    assert oracle.link(pod.ns, IFNAME) is None
    lines = own_log.read_text().splitlines()
    called = [i for i, line in enumerate(lines) if line.endswith("[debug] Called CNI DEL")]
    assert called, lines
    tail = lines[called[-1] :]
    assert any("config is invalid" in line for line in tail), tail
    assert tail[-1].endswith("[verbose] CNI DEL done"), tail


def test_all_judges_an_iptables_router_by_its_logged_rules(topology: Topology, pod: Pod, tmp_path: Path) -> None:
    plugin = Plugin(topology.node)
    conf = router_config("1.1.0", str(tmp_path / "egress-router-log"), natBackend="iptables")
    status = plugin.run("STATUS", conf, env={"CNI_CONTAINERID": "", "CNI_NETNS": "", "CNI_IFNAME": ""})
    if status.returncode != 0 or not oracle.xtables_available():
        pytest.skip(f"the iptables backend is not available here: {status.stdout.strip()}")
    assert plugin.add(conf, pod.path).returncode == 0
    try:
        status_code, out, err = inspect_all_alone(topology, tmp_path, [pod], [], "-o", "json")
        assert status_code == 0, out + err
        (row,) = json.loads(out)["routers"]
        assert (row["nat_backend"], row["nat_rules"], row["healthy"]) == ("iptables", 4, True), row
        oracle.netns_exec(pod.ns, "iptables-legacy", "-w", "-t", "nat", "-F", "POSTROUTING")
        status_code, out, err = inspect_all_alone(topology, tmp_path, [pod], [], "-o", "json")
        assert status_code == 1, out + err
        (row,) = json.loads(out)["routers"]
        assert row["problems"] == ["NAT rule missing: iptables -t nat -o net1 -j SNAT --to-source 192.168.12.99"]
    finally:
        plugin.delete(conf, pod.path)
