"""Reliability guarantees (issue 4): atomic ADD, crash recovery, idempotent DEL, concurrency.

Each test compares full snapshots of the pod namespace taken by an
independent oracle (ip -j, nft -j, iptables-legacy-save), never the plugin's
own view.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import random
import re
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from egress_router_cni.add import STEPS
from egress_router_cni.state import BACKENDS as BACKEND_NAMES
from tests import oracle
from tests.cni import IFNAME, Plugin, plugin_command, router_config, with_ip
from tests.inprocess import InjectedFault, assert_same, cmd_args, full_snapshot, inside
from tests.topology import Pod, Topology, delete_netns

pytestmark = pytest.mark.netns

ADD_STEPS = [step.name for step in STEPS]
BACKENDS = list(BACKEND_NAMES)
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \[(debug|verbose|error|panic)\] \S.*$")


def backend_config(backend: str, log_file: Path) -> Dict[str, Any]:
    return router_config("1.0.0", str(log_file), natBackend=backend)


# --- 1. Atomic ADD: a failure at any step leaves the pod exactly as before -----------------------


@pytest.mark.parametrize("phase", ["before", "after"])
@pytest.mark.parametrize("step", ADD_STEPS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_add_failure_at_any_step_leaves_pod_unchanged(
    topology: Topology, pod: Pod, log_file: Path, backend: str, step: str, phase: str
) -> None:
    from egress_router_cni import add

    if backend == "iptables" and importlib.util.find_spec("iptc") is None:
        pytest.skip("python-iptables is not installed in this interpreter")
    conf = backend_config(backend, log_file)
    container_id = uuid.uuid4().hex
    before = full_snapshot(pod.ns)
    seen: List[str] = []

    def hook(at: str, name: str) -> None:
        seen.append(f"{at}:{name}")
        if (at, name) == (phase, step):
            raise InjectedFault(f"{phase} {step}")

    with inside(f"/run/netns/{topology.node}"), pytest.raises(InjectedFault):
        add.cmd_add(cmd_args("ADD", conf, pod, container_id), hook=hook)
    assert f"{phase}:{step}" in seen, f"the hook never reached {phase}:{step}; steps seen: {seen}"
    assert_same(before, full_snapshot(pod.ns), f"ADD failing {phase} step {step!r} ({backend})")
    assert "ADD failed: rolling back" in log_file.read_text()
    # The node's master is never moved or modified by a failed ADD.
    assert oracle.link(topology.node, "ermaster0") is not None


def test_add_failure_never_touches_an_existing_interface(topology: Topology, pod: Pod, log_file: Path) -> None:
    oracle.netns_exec(pod.ns, "ip", "link", "add", IFNAME, "type", "veth", "peer", "name", "squatter")
    before = full_snapshot(pod.ns)
    plugin = Plugin(topology.node)
    outcome = plugin.add(router_config("1.0.0", str(log_file)), pod.path)
    assert outcome.returncode == 1, outcome.describe()
    assert outcome.document()["code"] == 104
    assert_same(before, full_snapshot(pod.ns), "ADD onto an existing net1")
    # The runtime follows a failed ADD with DEL: it must leave the foreign net1 alone too.
    assert plugin.delete(router_config("1.0.0", str(log_file)), pod.path).returncode == 0
    assert_same(before, full_snapshot(pod.ns), "DEL after the refused ADD")


# --- 2. Crash recovery: SIGKILL anywhere in ADD, then DEL restores, then ADD works -------------


def _config_file(conf: Dict[str, Any]) -> Any:
    """The config as an unlinked temporary file, to hand to a child as its stdin."""
    f = tempfile.TemporaryFile()  # noqa: SIM115 - the child reads it; closed when the test ends
    f.write(json.dumps(conf).encode())
    f.seek(0)
    return f


def _spawn_add(plugin: Plugin, conf: Dict[str, Any], pod: Pod) -> subprocess.Popen[bytes]:
    return _start(plugin, "ADD", conf, pod.path, quiet=True)


def _kill_window(topology: Topology, log_file: Path) -> Tuple[float, float]:
    """(start-up time, whole ADD time) of the plugin here: kills are aimed between the two.

    Most of an ADD's wall time is interpreter start-up, before any change; a
    uniform delay over the whole run would mostly kill a process that has not
    touched the pod yet.
    """
    pod = topology.add_pod("timing")
    try:
        plugin = Plugin(topology.node)
        conf = router_config("1.0.0", str(log_file))
        start = time.monotonic()
        assert plugin.run("VERSION", None).returncode == 0
        startup = time.monotonic() - start
        start = time.monotonic()
        assert plugin.add(conf, pod.path).returncode == 0
        whole = time.monotonic() - start
        assert plugin.delete(conf, pod.path).returncode == 0
        return startup, whole
    finally:
        topology.remove_pod(pod)


def _usable_backends(topology: Topology, log_file: Path) -> Tuple[str, ...]:
    """The NAT backends the executable under test can use (STATUS says; a build may leave iptables out)."""
    usable = []
    for backend in BACKENDS:
        conf = router_config("1.1.0", str(log_file), natBackend=backend)
        if Plugin(topology.node).run("STATUS", conf).returncode == 0:
            usable.append(backend)
    assert "nftables" in usable, "nftables must always be usable here"
    return tuple(usable)


def _crash_loop(topology: Topology, log_file: Path, iterations: int, seed: int) -> Dict[str, int]:
    rng = random.Random(seed)
    backends = _usable_backends(topology, log_file)
    startup, whole = _kill_window(topology, log_file)
    tally = {"untouched": 0, "partial": 0, "complete": 0}
    for i in range(iterations):
        backend = backends[i % len(backends)]
        conf = backend_config(backend, log_file)
        pod = topology.add_pod(f"crash{i}")
        try:
            before = full_snapshot(pod.ns)
            plugin = Plugin(topology.node)
            proc = _spawn_add(plugin, conf, pod)
            time.sleep(rng.uniform(startup * 0.8, whole * 1.1))
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            after_kill = full_snapshot(pod.ns)
            if after_kill == before:
                tally["untouched"] += 1
            elif proc.returncode == 0:
                tally["complete"] += 1
            else:
                tally["partial"] += 1
            outcome = plugin.delete(conf, pod.path)
            assert outcome.returncode == 0, f"iteration {i}: DEL after a crash failed: {outcome.describe()}"
            assert_same(before, full_snapshot(pod.ns), f"iteration {i} ({backend}): DEL after SIGKILL")
            outcome = plugin.add(conf, pod.path)
            assert outcome.returncode == 0, f"iteration {i}: ADD after recovery failed: {outcome.describe()}"
            assert plugin.delete(conf, pod.path).returncode == 0
            assert_same(before, full_snapshot(pod.ns), f"iteration {i}: final DEL")
        finally:
            topology.remove_pod(pod)
    return tally


def test_sigkill_during_add_is_recovered_by_del(topology: Topology, log_file: Path) -> None:
    tally = _crash_loop(topology, log_file, iterations=12, seed=20261125)
    print(f"crash loop: {tally}")


@pytest.mark.slow
def test_sigkill_during_add_is_recovered_by_del_many(topology: Topology, log_file: Path) -> None:
    tally = _crash_loop(topology, log_file, iterations=200, seed=int(time.time()))
    print(f"crash loop: {tally}")
    assert tally["partial"] > 0, f"no kill landed mid-ADD in 200 iterations: {tally}"


# --- 3. Idempotent DEL in every state -----------------------------------------------------------


def test_del_is_idempotent_in_every_state(topology: Topology, pod: Pod, log_file: Path) -> None:
    conf = router_config("1.0.0", str(log_file))
    plugin = Plugin(topology.node)
    before = full_snapshot(pod.ns)
    assert plugin.delete(conf, pod.path).returncode == 0, "DEL with nothing done"
    assert_same(before, full_snapshot(pod.ns), "DEL with nothing done")
    assert plugin.add(conf, pod.path).returncode == 0
    for attempt in range(3):
        outcome = plugin.delete(conf, pod.path)
        assert outcome.returncode == 0 and outcome.stdout == "", outcome.describe()
        assert_same(before, full_snapshot(pod.ns), f"DEL #{attempt + 1}")
    assert plugin.run("DEL", conf, "").returncode == 0, "DEL with CNI_NETNS empty"
    assert plugin.delete(with_ip(conf, addresses=None), pod.path).returncode == 0, "DEL with an invalid config"


def test_del_after_the_pod_namespace_is_gone(topology: Topology, log_file: Path) -> None:
    conf = router_config("1.0.0", str(log_file))
    pod = topology.add_pod("gone")
    plugin = Plugin(topology.node)
    assert plugin.add(conf, pod.path).returncode == 0
    delete_netns(pod.ns)
    outcome = plugin.delete(conf, pod.path)
    assert outcome.returncode == 0, outcome.describe()


def test_del_restores_state_after_the_link_was_deleted_by_hand(topology: Topology, pod: Pod, log_file: Path) -> None:
    conf = router_config("1.0.0", str(log_file))
    plugin = Plugin(topology.node)
    before = full_snapshot(pod.ns)
    assert plugin.add(conf, pod.path).returncode == 0
    oracle.netns_exec(pod.ns, "ip", "link", "del", IFNAME)
    assert plugin.delete(conf, pod.path).returncode == 0
    # Forwarding comes back too: the NAT table's comment kept the original value.
    assert_same(before, full_snapshot(pod.ns), "DEL after net1 was deleted by hand")


# --- 4. Concurrency: 32 pods at once --------------------------------------------------------------

CONCURRENT = 32


def _start(
    plugin: Plugin, command: str, conf: Dict[str, Any], netns: str, quiet: bool = False
) -> subprocess.Popen[bytes]:
    """Start the real executable in the node namespace without waiting for it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    env.update(
        {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": plugin.container_id,
            "CNI_NETNS": netns,
            "CNI_IFNAME": IFNAME,
            "CNI_PATH": "/opt/cni/bin",
        }
    )
    output = subprocess.DEVNULL if quiet else subprocess.PIPE
    # `ip netns exec` execs the plugin, so this PID is the plugin process itself.
    return subprocess.Popen(
        ["ip", "netns", "exec", plugin.node_ns, *plugin.command],
        stdin=_config_file(conf),
        stdout=output,
        stderr=output,
        env=env,
    )


def _reserved(i: int) -> str:
    return f"192.168.12.{100 + i}"


def test_32_concurrent_adds_and_dels(topology: Topology, log_file: Path) -> None:
    pods: List[Pod] = []
    try:
        for i in range(CONCURRENT):
            mac = f"02:00:0a:80:0b:{i:02x}"
            pods.append(topology._attach(f"{topology.prefix}-cc{i}", f"10.128.11.{10 + i}", mac, None))
        befores = [full_snapshot(p.ns) for p in pods]
        plugins = [Plugin(topology.node) for _ in pods]
        confs = [
            with_ip(router_config("1.0.0", str(log_file)), addresses=[f"{_reserved(i)}/24"]) for i in range(len(pods))
        ]
        procs = [_start(pl, "ADD", c, p.path) for pl, c, p in zip(plugins, confs, pods)]
        outputs = [p.communicate(timeout=120) for p in procs]
        failures = [
            f"pod {i}: exit {p.returncode}: {out.decode()} {err.decode()}"
            for i, (p, (out, err)) in enumerate(zip(procs, outputs))
            if p.returncode != 0
        ]
        assert not failures, "\n".join(failures)
        for i, pod in enumerate(pods):
            assert oracle.ipv4_addresses(pod.ns, IFNAME) == [f"{_reserved(i)}/24"], f"pod {i}: wrong address"
            snat = oracle.nft_rule_lines(pod.ns, "ip", "egress_cni", "postrouting")
            assert snat == [f'oifname "{IFNAME}" snat to {_reserved(i)}'], f"pod {i}: rules of another pod? {snat}"
            reply = topology.request("tcp", 8080, host=f"10.128.11.{10 + i}")
            assert f"peer={_reserved(i)}:" in reply, f"pod {i}: the server saw {reply!r}"
        procs = [_start(pl, "DEL", c, p.path) for pl, c, p in zip(plugins, confs, pods)]
        for i, proc in enumerate(procs):
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, f"DEL pod {i}: {out.decode()} {err.decode()}"
        for i, pod in enumerate(pods):
            assert_same(befores[i], full_snapshot(pod.ns), f"pod {i} after concurrent DEL")
        lines = log_file.read_text().splitlines()
        bad = [line for line in lines if not LOG_LINE.match(line)]
        assert not bad, f"{len(bad)} log lines are torn or interleaved, e.g. {bad[:3]}"
        assert sum("Called CNI ADD" in line for line in lines) == CONCURRENT
    finally:
        for pod in pods:
            topology.remove_pod(pod)


# --- 5. Never the node's own namespace ---------------------------------------------------------


@pytest.mark.parametrize("command", ["ADD", "CHECK", "DEL"])
def test_refuses_the_node_namespace_itself(topology: Topology, log_file: Path, command: str) -> None:
    node_path = f"/run/netns/{topology.node}"
    before = full_snapshot(topology.node)
    plugin = Plugin(topology.node)
    conf = router_config("1.0.0", str(log_file), prevResult={"cniVersion": "1.0.0", "interfaces": []})
    outcome = plugin.run(command, conf, node_path)
    assert outcome.returncode == 1, outcome.describe()
    assert outcome.document()["code"] == 8
    assert_same(before, full_snapshot(topology.node), f"{command} aimed at the node namespace")


def _fds() -> Dict[str, str]:
    out = {}
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            out[fd] = os.readlink(f"/proc/self/fd/{fd}")
    return out


def test_add_and_del_close_every_descriptor(topology: Topology, pod: Pod, log_file: Path) -> None:
    """In-process: no fd (netlink sockets, netns handles, log file, pipes) survives ADD or DEL."""
    from egress_router_cni import add, delete

    conf = router_config("1.0.0", str(log_file))
    container_id = uuid.uuid4().hex
    before = _fds()
    with inside(f"/run/netns/{topology.node}"):
        inner = _fds()
        add.cmd_add(cmd_args("ADD", conf, pod, container_id))
        assert _fds() == inner, "ADD leaked a file descriptor"
        delete.cmd_del(cmd_args("DEL", conf, pod, container_id))
        assert _fds() == inner, "DEL leaked a file descriptor"
    assert _fds() == before


def test_one_add_spawns_at_most_one_helper_process(topology: Topology, pod: Pod, log_file: Path) -> None:
    """Counted with strace when available; skipped otherwise (the count needs a tracer)."""
    strace = subprocess.run(["which", "strace"], capture_output=True, text=True).stdout.strip()
    if not strace:
        pytest.skip("strace not installed: apt-get install strace")
    plugin = Plugin(
        topology.node, command=[strace, "-f", "-qq", "-e", "trace=execve,clone,clone3,vfork,fork", *plugin_command()]
    )
    outcome = plugin.add(router_config("1.0.0", str(log_file)), pod.path)
    assert outcome.returncode == 0, outcome.describe()
    spawned = [line for line in outcome.stderr.splitlines() if "execve(" in line and "= 0" in line]
    # The first execve is the plugin itself (or the interpreter); the NAT batch goes out in-process.
    assert len(spawned) <= 2, "\n".join(spawned)


def test_a_failed_link_deletion_is_logged_and_the_rest_of_del_still_runs(
    topology: Topology, pod: Pod, log_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process: RTM_DELLINK fails in the deletion thread; DEL logs it, undoes the rest, and reports it."""
    from egress_router_cni import add, delete, unlink
    from egress_router_cni.errors import LinkError

    def refuse(nl: Any, index: int) -> bool:
        raise LinkError("failed to delete link", "injected")

    conf = router_config("1.0.0", str(log_file))
    container_id = uuid.uuid4().hex
    before = full_snapshot(pod.ns)
    with inside(f"/run/netns/{topology.node}"):
        add.cmd_add(cmd_args("ADD", conf, pod, container_id))
        assert oracle.sysctl(pod.ns, "net/ipv4/ip_forward") == "1"
        monkeypatch.setattr(unlink, "delete_link", refuse)
        with pytest.raises(LinkError, match="injected"):
            delete.cmd_del(cmd_args("DEL", conf, pod, container_id))
        log = log_file.read_text()
        assert "[error] failed to delete link: injected" in log
        assert "[error] CNI DEL failed: failed to delete link: injected" in log
        assert oracle.link(pod.ns, IFNAME) is not None
        assert not oracle.nft_table_exists(pod.ns, "ip", "egress_cni"), "the NAT table was not removed past the failure"
        assert oracle.sysctl(pod.ns, "net/ipv4/ip_forward") == "0", "forwarding not restored past the failure"
        monkeypatch.undo()
        delete.cmd_del(cmd_args("DEL", conf, pod, container_id))  # the runtime's retry deletes the link
    assert oracle.link(pod.ns, IFNAME) is None
    # The refused deletion left the saved default route alone, so the retry put it back.
    assert full_snapshot(pod.ns) == before
