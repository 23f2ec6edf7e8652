"""egress-router through libcni 1.1.2 (tests/clients/ercni.go), the library container runtimes use.

Deterministic tier: the router pod's eth0 is made by hand (tests.topology),
then libcni attaches egress-router as `net1`, as Multus would, with
kubelet-style CNI_ARGS. libcni validates the config, caches the result,
injects prevResult into CHECK and DEL and converts result versions.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from tests import oracle
from tests.topology import ROUTER_POD_IP, Pod, Topology

from .drivers import Ercni, node_path
from .harness import (
    GATEWAY,
    NAT_TABLE,
    PLUGIN_TYPE,
    RESERVED_IP,
    conflist,
    egress_conf,
    egress_plugin,
    k8s_args,
    plugin_calls,
    router_state_problems,
    sh,
    summaries,
    traffic_problems,
    write_json,
)

pytestmark = [pytest.mark.netns, pytest.mark.runtimes]

# Every result version libcni 1.1.2 can produce; CHECK exists from 0.4.0 on.
VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0")
CHECK_VERSIONS = ("0.4.0", "1.0.0")
# conf: a single-plugin .conf through libcni's *Network calls. conflist: egress-router
# followed by upstream `tuning`, which must accept egress-router's result as its prevResult.
FORMS = ("conf", "conflist")
IFNAME = "net1"


@dataclass
class Libcni:
    """The driver plus where its configs and the plugin's log go."""

    ercni: Ercni
    work: Path
    topo: Topology

    @property
    def log(self) -> Path:
        return self.work / "egress-router-plugin.log"

    def config(self, version: str, form: str) -> Path:
        if form == "conf":
            return write_json(self.work / f"egress-{version}.conf", egress_conf(version, self.log))
        plugins = [egress_plugin(self.log), {"type": "tuning"}]
        return write_json(self.work / f"egress-{version}.conflist", conflist(version, "egress", plugins))


@dataclass
class Attachment:
    """One (config, container, pod) triple, and the libcni calls on it."""

    libcni: Libcni
    config: Path
    pod: Pod
    container_id: str

    @property
    def args(self) -> str:
        return k8s_args(self.container_id)

    def add(self) -> Dict[str, Any]:
        return self.libcni.ercni.add(self.config, self.pod.path, self.container_id, IFNAME, self.args)

    def call(self, verb: str, netns: str, check: bool = True) -> Any:
        return self.libcni.ercni.run(verb, self.config, netns, self.container_id, IFNAME, self.args, check=check)

    def check(self) -> Any:
        return self.call("check", self.pod.path, check=False)

    def delete(self, netns: str) -> None:
        self.call("del", netns)

    def calls(self) -> List[str]:
        return summaries(plugin_calls(self.libcni.log, self.container_id))


@pytest.fixture(scope="module")
def libcni(ercni: Ercni, topo: Topology, tmp_path_factory: pytest.TempPathFactory) -> Libcni:
    return Libcni(ercni=ercni, work=tmp_path_factory.mktemp("libcni"), topo=topo)


@pytest.fixture
def router_pod(topo: Topology) -> Iterator[Pod]:
    """A fresh pod netns with eth0 on the cluster bridge and a default route via it."""
    pod = topo.add_pod()
    try:
        yield pod
    finally:
        topo.remove_pod(pod)


def attach(libcni: Libcni, pod: Pod, version: str, form: str) -> Attachment:
    return Attachment(libcni, libcni.config(version, form), pod, uuid.uuid4().hex * 2)


def expected_result(version: str, netns: str, mac: str) -> Dict[str, Any]:
    """What libcni hands the runtime: egress-router's result in the config's version."""
    ip: Dict[str, Any] = {"interface": 0, "address": f"{RESERVED_IP}/24", "gateway": GATEWAY}
    if version != "1.0.0":
        ip["version"] = "4"  # dropped in 1.0.0
    return {
        "cniVersion": version,
        "interfaces": [{"name": IFNAME, "mac": mac, "sandbox": netns}],
        "ips": [ip],
        "routes": [{"dst": "0.0.0.0/0", "gw": GATEWAY}],
    }


def without_empty_dns(result: Dict[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in result.items() if not (k == "dns" and not v)}


def call_log(netns: str, *steps: str) -> List[str]:
    """Expected plugin log summaries: 'ADD', 'DEL-' (empty CNI_NETNS), 'CHECK!' (failed)."""
    out = []
    for step in steps:
        failed = step.endswith("!")
        empty = step.rstrip("!").endswith("-")
        command = step.rstrip("!-")
        shown = "''" if empty else netns
        out.append(f"{command}({IFNAME}, netns={shown}) {'FAILED' if failed else 'ok'}")
    return out


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("version", VERSIONS)
def test_add_check_del(libcni: Libcni, router_pod: Pod, version: str, form: str) -> None:
    """ADD -> result, router state, traffic -> CHECK -> DEL restores the pod exactly -> DEL without netns."""
    a = attach(libcni, router_pod, version, form)
    before = oracle.snapshot(router_pod.ns)

    result = a.add()
    link = oracle.link(router_pod.ns, IFNAME)
    assert link is not None, f"no {IFNAME} after ADD"
    assert without_empty_dns(result) == expected_result(version, router_pod.path, link["address"])
    assert libcni.ercni.cached(a.config, a.container_id, IFNAME) == result
    assert router_state_problems(router_pod.ns, IFNAME) == []
    assert traffic_problems(node_path(libcni.topo.client), ROUTER_POD_IP) == []

    check = a.check()
    if version in CHECK_VERSIONS:
        assert check.returncode == 0, check.stderr
    else:
        # libcni refuses CHECK below 0.4.0 without calling the plugin.
        assert check.returncode == 1
        assert "does not support the CHECK command" in check.stderr

    a.delete(router_pod.path)
    assert oracle.snapshot_diff(before, oracle.snapshot(router_pod.ns)) == []
    assert libcni.ercni.cached(a.config, a.container_id, IFNAME) is None
    # The runtime's second DEL (CRI RemovePodSandbox): no netns, and no prevResult (cache gone).
    a.delete("")

    checks = ["CHECK"] if version in CHECK_VERSIONS else []
    assert a.calls() == call_log(router_pod.path, "ADD", *checks, "DEL", "DEL-")


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("version", CHECK_VERSIONS)
def test_check_fails_when_link_deleted(libcni: Libcni, router_pod: Pod, version: str, form: str) -> None:
    """CHECK passes, then fails once net1 is gone; DEL still restores the pod and is idempotent."""
    a = attach(libcni, router_pod, version, form)
    before = oracle.snapshot(router_pod.ns)
    a.add()
    first = a.check()
    assert first.returncode == 0, first.stderr

    sh(["ip", "-n", router_pod.ns, "link", "del", IFNAME])
    second = a.check()
    assert second.returncode == 1
    # libcni parsed the plugin's error JSON: its msg and details reach the runtime.
    assert "egress router check failed" in second.stderr
    assert f"interface '{IFNAME}' not found" in second.stderr

    a.delete(router_pod.path)
    a.delete(router_pod.path)
    a.delete("")
    assert oracle.snapshot_diff(before, oracle.snapshot(router_pod.ns)) == []
    assert a.calls() == call_log(router_pod.path, "ADD", "CHECK", "CHECK!", "DEL", "DEL", "DEL-")


@pytest.mark.parametrize("form", FORMS)
def test_version_and_validate(libcni: Libcni, form: str) -> None:
    """libcni's VERSION exchange and ValidateNetwork(List) accept the plugin at every result version."""
    for version in VERSIONS:
        config = libcni.config(version, form)
        supported = json.loads(libcni.ercni.run("version", config).stdout)[PLUGIN_TYPE]
        assert set(VERSIONS) <= set(supported), supported
        validated = libcni.ercni.run("validate", config, check=False)
        assert validated.returncode == 0, f"{version}: {validated.stderr}"


def test_existing_interface_is_refused_and_kept(libcni: Libcni, router_pod: Pod) -> None:
    """ADD must not adopt a net1 it did not create; the error reaches libcni; DEL leaves net1 alone."""
    sh(["ip", "-n", router_pod.ns, "link", "add", IFNAME, "type", "veth", "peer", "name", "ert-other"])
    before = oracle.snapshot(router_pod.ns)
    a = attach(libcni, router_pod, "1.0.0", "conflist")

    failed = a.call("add", router_pod.path, check=False)
    assert failed.returncode == 1
    assert f'plugin type="{PLUGIN_TYPE}" failed (add)' in failed.stderr
    assert f"interface '{IFNAME}' already exists" in failed.stderr
    assert oracle.snapshot_diff(before, oracle.snapshot(router_pod.ns)) == []

    # A runtime answers a failed ADD with DEL (no cached result, so no prevResult).
    a.delete(router_pod.path)
    assert oracle.snapshot_diff(before, oracle.snapshot(router_pod.ns)) == []
    assert a.calls() == call_log(router_pod.path, "ADD!", "DEL")


def test_del_after_cluster_interface_went_first(libcni: Libcni, router_pod: Pod) -> None:
    """Runtimes may DEL the cluster network (eth0) before egress-router: DEL must still succeed."""
    a = attach(libcni, router_pod, "1.0.0", "conflist")
    a.add()
    sh(["ip", "-n", router_pod.ns, "link", "del", "eth0"])
    a.delete(router_pod.path)
    assert oracle.link(router_pod.ns, IFNAME) is None
    assert not oracle.nft_table_exists(router_pod.ns, "ip", NAT_TABLE)
    assert [r for r in oracle.main_routes(router_pod.ns) if r[0] == "default"] == []
    assert a.calls() == call_log(router_pod.path, "ADD", "DEL")
