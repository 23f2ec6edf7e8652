"""Issue 13: a hostile network config cannot hurt the node.

Each finding of the review is replayed against the real executable in
throwaway namespaces; the assertions look at the file system and the kernel
(ip, nft) rather than at the plugin's own words.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Dict, Iterator

import pytest

from egress_router_cni.state import owner_id
from tests import oracle
from tests.cni import IFNAME, Outcome, Plugin, plugin_command, router_config, with_ip, with_prev_result
from tests.expect import assert_cni_error
from tests.scratch import temp_dir
from tests.topology import RESERVED_IP, Pod, Topology, ip, parse_reply

pytestmark = pytest.mark.netns

DEFAULT_LOG = Path("/tmp/egress-router-log")
VICTIM_BYTES = 11 * 1000 * 1000  # above the 10 MiB rotation threshold


@pytest.fixture
def outside_dir() -> Iterator[Path]:
    """A directory outside /tmp and /var/log, where no config may make the plugin write or rename."""
    yield from temp_dir("ert-victim-", "/var/tmp")


@pytest.fixture
def log_dir() -> Iterator[Path]:
    """A directory the rules accept: /tmp/egress-router-*."""
    yield from temp_dir("egress-router-test-", "/tmp")


def big_file(path: Path) -> None:
    with open(path, "wb") as f:
        f.truncate(VICTIM_BYTES)  # sparse: large to stat(), cheap on disk


def failing_add(plugin: Plugin, pod: Pod, log_file: str) -> Outcome:
    """An ADD that logs and then fails (no such master): what a retrying kubelet repeats."""
    conf = router_config("1.0.0", log_file, interfaceArgs={"master": "nosuch0"})
    outcome = plugin.add(conf, pod.path)
    assert_cni_error(outcome, 7)
    return outcome


def refusals(path: str) -> int:
    """How many [error] lines in the default log name PATH as refused.

    The default log is shared with every other plugin run on this machine (and may rotate meanwhile).
    """
    text = "".join(p.read_text(errors="replace") for p in (DEFAULT_LOG, Path(f"{DEFAULT_LOG}.1")) if p.exists())
    return sum("[error] refusing log_file" in line and repr(path) in line for line in text.splitlines())


def assert_refused(outcome: Outcome, path: str, earlier: int = 0) -> None:
    """One warning on stderr, and an [error] line naming the refused path in the default log."""
    warnings = [line for line in outcome.stderr.splitlines() if "refusing log_file" in line]
    assert len(warnings) == 1 and repr(path) in warnings[0], outcome.describe()
    assert refusals(path) > earlier, f"no new [error] line for {path} in {DEFAULT_LOG}"


# --- finding 1: log_file ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ld.so.preload", "egress-router-log"])
def test_log_file_outside_the_log_directories_is_never_created(
    name: str, topology: Topology, pod: Pod, plugin: Plugin, outside_dir: Path
) -> None:
    """The router still works; the config's path is neither created nor appended to."""
    target = outside_dir / name
    existing = outside_dir / "nologin"
    existing.write_text("precious\n")
    conf = router_config("1.0.0", str(target))
    outcome = plugin.add(conf, pod.path)
    assert outcome.returncode == 0, outcome.describe()
    assert_refused(outcome, str(target))
    assert sorted(p.name for p in outside_dir.iterdir()) == ["nologin"]
    conf_existing = router_config("1.0.0", str(existing))
    assert plugin.delete(conf_existing, pod.path).returncode == 0
    assert existing.read_text() == "precious\n"


def test_rotation_never_moves_a_large_file_outside_the_log_rules(
    pod: Pod, plugin: Plugin, outside_dir: Path, log_dir: Path
) -> None:
    """An 11 MB file outside the directories, or with another name inside them, stays where it is."""
    victims = [outside_dir / "egress-router-meta.db", log_dir / "meta.db"]
    for victim in victims:
        big_file(victim)
        for _ in range(3):  # a kubelet retrying a failing pod
            assert_refused(failing_add(plugin, pod, str(victim)), str(victim))
        assert victim.stat().st_size == VICTIM_BYTES
        assert not Path(f"{victim}.1").exists()


def test_rotation_never_replaces_a_symlink(pod: Pod, plugin: Plugin, outside_dir: Path, log_dir: Path) -> None:
    """A legitimate log at its cap, whose backup name is a symlink: the link and its target survive."""
    log_file = log_dir / "egress-router-log"
    big_file(log_file)
    victim = outside_dir / "lib.so.1"
    victim.write_text("precious\n")
    (log_dir / "egress-router-log.1").symlink_to(victim)
    for _ in range(2):
        outcome = failing_add(plugin, pod, str(log_file))
        assert "not rotating" in outcome.stderr, outcome.describe()
    assert (log_dir / "egress-router-log.1").is_symlink()
    assert victim.read_text() == "precious\n"
    assert log_file.stat().st_size == VICTIM_BYTES, "log writing must stop rather than grow past the cap"


def test_rotation_of_an_accepted_log_stays_in_its_directory(pod: Pod, plugin: Plugin, log_dir: Path) -> None:
    log_file = log_dir / "egress-router-log"
    big_file(log_file)
    failing_add(plugin, pod, str(log_file))
    assert (log_dir / "egress-router-log.1").stat().st_size == VICTIM_BYTES
    assert "CNI ADD failed" in log_file.read_text()


def test_log_file_in_proc_sys_is_never_written(topology: Topology, pod: Pod) -> None:
    """A log_file of /proc/sys/kernel/hostname once set the node's hostname; run in a private UTS namespace."""
    script = 'hostname ert-uts-probe; "$@"; rc=$?; echo "hostname-after=$(hostname)" >&2; exit $rc'
    plugin = Plugin(topology.node, ["unshare", "--uts", "sh", "-c", script, "sh", *plugin_command()])
    path = "/proc/sys/kernel/hostname"
    earlier = refusals(path)
    outcome = plugin.add(router_config("1.0.0", path, interfaceArgs={"master": "nosuch0"}), pod.path)
    assert_cni_error(outcome, 7)
    assert "hostname-after=ert-uts-probe" in outcome.stderr, outcome.describe()
    assert_refused(outcome, path, earlier)


def test_log_file_through_a_symlinked_directory_is_refused(
    pod: Pod, plugin: Plugin, outside_dir: Path, log_dir: Path
) -> None:
    (log_dir / "link").symlink_to(outside_dir)
    path = str(log_dir / "link" / "egress-router-log")
    outcome = failing_add(plugin, pod, path)
    assert_refused(outcome, path)
    assert "is a symbolic link" in outcome.stderr
    assert list(outside_dir.iterdir()) == []


def test_a_refused_log_file_never_changes_the_verdict(topology: Topology, pod: Pod, plugin: Plugin) -> None:
    """ADD/DEL with a refused path behave exactly as with an accepted one; only the log moves."""
    path = f"/etc/egress-router-{uuid.uuid4().hex}"
    before = oracle.snapshot(pod.ns)
    conf = router_config("1.0.0", path)
    assert plugin.add(conf, pod.path).returncode == 0
    assert plugin.delete(conf, pod.path).returncode == 0
    assert not oracle.snapshot_diff(before, oracle.snapshot(pod.ns))
    assert not os.path.exists(path)


# --- finding 5: unbounded ip.addresses --------------------------------------------------------------


def test_twenty_thousand_addresses_are_refused_and_del_completes(topology: Topology, pod: Pod, plugin: Plugin) -> None:
    """Once 74 s of ADD and 15 minutes of DEL; now refused at once (code 7), DEL still cleans up."""
    addresses = [f"10.{i // 250}.{i % 250}.1/8" for i in range(20_000)]
    conf = with_ip(router_config("1.0.0", str(DEFAULT_LOG)), addresses=addresses)
    pod_before, node_before = oracle.snapshot(pod.ns), oracle.snapshot(topology.node)
    outcome = plugin.add(conf, pod.path)
    assert_cni_error(outcome, 7)
    assert "the limit is 8 per address family" in outcome.document()["details"]
    assert plugin.delete(conf, pod.path).returncode == 0
    assert_cni_error(plugin.check(with_prev_result(conf, {"cniVersion": "1.0.0"}), pod.path), 7)
    assert not oracle.snapshot_diff(pod_before, oracle.snapshot(pod.ns))
    assert not oracle.snapshot_diff(node_before, oracle.snapshot(topology.node))


# --- findings 6 and 7: prevResult is checked before the first change, and never forges the result ---


@pytest.mark.parametrize(
    ("prev", "code"),
    [
        pytest.param('{"ips": [{"address": "not-an-ip"}]}', 6, id="not-an-ip"),
        pytest.param('{"ips": [{"address": "10.1.0.5/16", "interface": 1e999}]}', 6, id="interface-1e999"),
        pytest.param(
            '{"interfaces": [{"name": "eth0"}], "ips": [{"address": "10.1.0.5/16", "interface": 3}]}',
            7,
            id="interface-index-outside",
        ),
        pytest.param(
            '{"interfaces": [{"name": "eth0", "sandbox": "/run/egress-router-fifo"}]}', 7, id="forged-sandbox"
        ),
    ],
)
def test_bad_prev_result_fails_add_before_any_change(
    prev: str, code: int, topology: Topology, pod: Pod, plugin: Plugin, log_file: Path
) -> None:
    """Once: net1, the default route, NAT and forwarding stayed in the pod (and 1e999 was code 999)."""
    text = json.dumps(router_config("1.0.0", str(log_file), prevResult={"x": 1}))
    text = text.replace('{"x": 1}', prev)
    pod_before, node_before = oracle.snapshot(pod.ns), oracle.snapshot(topology.node)
    outcome = plugin.run("ADD", text, pod.path)
    assert_cni_error(outcome, code)
    assert "Traceback" not in outcome.stderr, outcome.describe()
    assert not oracle.snapshot_diff(pod_before, oracle.snapshot(pod.ns)), "the pod changed"
    assert not oracle.snapshot_diff(node_before, oracle.snapshot(topology.node)), "the node changed"
    assert "Created macvlan interface" not in log_file.read_text()


def test_chained_add_keeps_the_previous_plugin_of_the_same_pod(pod: Pod, plugin: Plugin, log_file: Path) -> None:
    prev = {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "eth0", "mac": "02:00:0a:80:0a:12", "sandbox": pod.path}],
        "ips": [{"address": "10.128.10.18/23", "interface": 0}],
    }
    conf = router_config("1.0.0", str(log_file), prevResult=prev)
    outcome = plugin.add(conf, pod.path)
    assert outcome.returncode == 0, outcome.describe()
    doc = outcome.document()
    assert [(i["name"], i.get("sandbox")) for i in doc["interfaces"]] == [("eth0", pod.path), (IFNAME, pod.path)]
    assert [(ip["address"], ip.get("interface")) for ip in doc["ips"]] == [
        ("10.128.10.18/23", 0),
        ("192.168.12.99/24", 1),
    ]
    assert plugin.delete(conf, pod.path).returncode == 0


def test_add_result_at_0_2_0_ignores_a_prev_result(pod: Pod, plugin: Plugin, log_file: Path) -> None:
    """No chains before 0.3.0: the result describes only what this ADD did."""
    conf = router_config("0.2.0", str(log_file), prevResult={"ip4": {"ip": "198.51.100.7/24"}})
    outcome = plugin.add(conf, pod.path)
    assert outcome.returncode == 0, outcome.describe()
    assert outcome.document()["ip4"]["ip"] == "192.168.12.99/24"
    assert "198.51.100.7" not in outcome.stdout
    assert plugin.delete(conf, pod.path).returncode == 0


# --- finding 7 (the reader side) and 8: pod-side state read defensively --------------------------


def test_malformed_ownership_record_is_not_ours_and_del_completes(
    topology: Topology, pod: Pod, plugin: Plugin, log_file: Path
) -> None:
    """A pod with NET_ADMIN wrote our owner id with a bad forwarding map on lo: once every DEL failed (999)."""
    record = json.dumps({"owner": owner_id(plugin.container_id), "forwarding": {"x": "1"}}, separators=(",", ":"))
    ip(pod.ns, "link", "set", "lo", "alias", f"egress-router {record}")
    before = oracle.snapshot(pod.ns)
    conf = router_config("1.0.0", str(log_file))
    assert plugin.add(conf, pod.path).returncode == 0
    outcome = plugin.delete(conf, pod.path)
    assert outcome.returncode == 0 and outcome.stdout == "", outcome.describe()
    assert not oracle.snapshot_diff(before, oracle.snapshot(pod.ns)), "DEL did not restore the pod"
    assert "interface 'lo' carries a malformed egress-router record: not ours" in log_file.read_text()


def run_inspect(topology: Topology, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    argv = ["ip", "netns", "exec", topology.node, *plugin_command(), "inspect", *args]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)


def test_inspect_escapes_control_characters_from_the_pod(
    topology: Topology, pod: Pod, plugin: Plugin, log_file: Path
) -> None:
    conf = router_config("1.0.0", str(log_file))
    assert plugin.add(conf, pod.path).returncode == 0
    try:
        hostile = "n\x1b[2J\x07x"  # clear screen, bell: a pod with NET_ADMIN may name its link so
        ip(pod.ns, "link", "set", IFNAME, "down")
        ip(pod.ns, "link", "set", IFNAME, "name", hostile)
        proc = run_inspect(topology, "--netns", pod.path, "--log-file", str(log_file))
        assert proc.returncode == 0, proc.stderr
        assert "Interface n\\x1b[2J\\x07x:" in proc.stdout
        assert not any(c in proc.stdout for c in "\x1b\x07"), proc.stdout
    finally:
        assert plugin.delete(conf, pod.path).returncode == 0
    assert oracle.link(pod.ns, hostile) is None


@pytest.mark.parametrize("kind", ["fifo", "device", "regular"])
def test_only_namespace_files_are_opened(
    kind: str, topology: Topology, pod: Pod, plugin: Plugin, log_dir: Path, log_file: Path
) -> None:
    """A forged sandbox or CNI_NETNS naming a FIFO once hung inspect; a device would be opened as root."""
    path = {"fifo": log_dir / "fifo", "device": Path("/dev/null"), "regular": log_dir / "file"}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "regular":
        path.write_text("")
    proc = run_inspect(topology, "--netns", str(path), "--log-file", str(log_file))
    assert proc.returncode == 1 and "not a network namespace" in proc.stderr, proc.stderr
    outcome = plugin.run("ADD", router_config("1.0.0", str(log_file)), str(path))
    assert_cni_error(outcome, 3)
    assert "not a network namespace" in outcome.stdout


# --- finding 4: an address someone already uses ------------------------------------------------------

TAKEN_IP = "192.168.12.50"


@pytest.fixture
def taken_address(topology: Topology) -> Iterator[str]:
    """A LAN host (the lan namespace) already holds TAKEN_IP; yields that host's MAC."""
    ip(topology.lan, "addr", "add", f"{TAKEN_IP}/24", "dev", "lan-node")
    try:
        lan_node = oracle.link(topology.lan, "lan-node")
        assert lan_node is not None
        yield str(lan_node["address"])
    finally:
        ip(topology.lan, "addr", "del", f"{TAKEN_IP}/24", "dev", "lan-node")


def acd_config(log_file: Path, address: str, **changes: object) -> Dict[str, object]:
    conf = with_ip(router_config("1.0.0", str(log_file), **changes), addresses=[f"{address}/24"])
    return conf


def test_a_taken_address_is_refused_and_the_pod_left_as_it_was(
    topology: Topology, pod: Pod, plugin: Plugin, log_file: Path, taken_address: str
) -> None:
    pod_before, node_before = oracle.snapshot(pod.ns), oracle.snapshot(topology.node)
    outcome = plugin.add(acd_config(log_file, TAKEN_IP, addressConflictDetection=True), pod.path)
    assert_cni_error(outcome, 101)
    details = outcome.document()["details"]
    assert TAKEN_IP in details and taken_address in details, outcome.describe()
    assert not oracle.snapshot_diff(pod_before, oracle.snapshot(pod.ns)), "the pod changed"
    assert not oracle.snapshot_diff(node_before, oracle.snapshot(topology.node)), "the node changed"


def test_without_detection_a_taken_address_is_not_noticed(
    pod: Pod, plugin: Plugin, log_file: Path, taken_address: str
) -> None:
    """Default off (ADD latency): the README's warning stands; the node policy can turn it on."""
    conf = acd_config(log_file, TAKEN_IP)
    assert plugin.add(conf, pod.path).returncode == 0
    assert plugin.delete(conf, pod.path).returncode == 0


def test_the_node_policy_turns_detection_on(
    pod: Pod, plugin: Plugin, log_file: Path, taken_address: str, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text('{"addressConflictDetection": true}')
    outcome = plugin.run("ADD", acd_config(log_file, TAKEN_IP), pod.path, env={"EGRESS_ROUTER_POLICY": str(policy)})
    assert_cni_error(outcome, 101)


def test_a_free_address_passes_the_probe_and_traffic_flows(
    topology: Topology, pod: Pod, plugin: Plugin, log_file: Path, taken_address: str
) -> None:
    conf = acd_config(log_file, RESERVED_IP, addressConflictDetection=True, addressConflictDetectionWindowMs=300)
    outcome = plugin.add(conf, pod.path)
    assert outcome.returncode == 0, outcome.describe()
    try:
        assert f"Probed {RESERVED_IP} on net1 for 300 ms: free" in log_file.read_text()
        reply = parse_reply(topology.request("tcp", 8080))
        assert (reply["peer_ip"], reply["local"]) == (RESERVED_IP, "203.0.113.26:80"), reply
        # Taken down for the probe and up again: the kernel still announced the address (arp_notify).
        neighbours = oracle.ip_json(topology.lan, "neigh", "show", RESERVED_IP)
        assert neighbours and neighbours[0]["lladdr"] == oracle.link(pod.ns, IFNAME)["address"]  # type: ignore[index]
    finally:
        assert plugin.delete(conf, pod.path).returncode == 0


@pytest.mark.parametrize("phase", ["before", "after"])
def test_a_failure_around_the_probe_leaves_the_pod_unchanged(
    topology: Topology, pod: Pod, log_file: Path, phase: str
) -> None:
    """The probe is an ADD step like the others: the link it brought up and down goes with the rollback."""
    from egress_router_cni import add
    from tests.inprocess import InjectedFault, assert_same, cmd_args, full_snapshot, inside

    conf = router_config("1.0.0", str(log_file), addressConflictDetection=True, addressConflictDetectionWindowMs=20)
    before = full_snapshot(pod.ns)

    def hook(at: str, name: str) -> None:
        if (at, name) == (phase, "conflict-probe"):
            raise InjectedFault(f"{phase} conflict-probe")

    with inside(f"/run/netns/{topology.node}"), pytest.raises(InjectedFault):
        add.cmd_add(cmd_args("ADD", conf, pod, uuid.uuid4().hex), hook=hook)
    assert_same(before, full_snapshot(pod.ns), f"ADD failing {phase} the conflict probe")
