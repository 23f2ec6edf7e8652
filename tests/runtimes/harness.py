"""Plumbing shared by the real-runtime tests: configs, the plugin's install, its log, host hygiene.

Everything a runtime does here happens in namespaces made by tests.topology
(PREFIX-node stands in for the node); the only paths outside the tests' own
temp dirs that the runtimes touch are listed in HOST_TRACES and put back as
they were by HostTraces.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

from tests import oracle, topology
from tests.servers import REPLY_TIMEOUT

REPO = Path(__file__).resolve().parents[2]
CLIENTS = REPO / "tests" / "clients"
UPSTREAM_PLUGINS = Path("/usr/lib/cni")
PLUGIN_TYPE = "egress-router"
RESERVED_IP = topology.RESERVED_IP
GATEWAY = topology.GATEWAY
DESTINATIONS = ("80 UDP 10.0.0.99", "8080 TCP 203.0.113.26 80", "8443 TCP 203.0.113.27 443")
# (proto, port on the router's eth0) -> where the echo server says it was reached.
EXPECTED_TARGETS = {("tcp", 8080): "203.0.113.26:80", ("tcp", 8443): "203.0.113.27:443", ("udp", 80): "10.0.0.99:80"}
NAT_TABLE = "egress_cni"
# Network names: the cluster network (eth0, upstream bridge) and the NAD-style egress network.
CLUSTER_NETWORK = "ertcluster"
EGRESS_NETWORK = "egress"
# The bridge network that runtimes attach as eth0, inside PREFIX-node.
CLUSTER_BRIDGE = "ert-br0"
CLUSTER_SUBNET = "10.88.77.0/24"
CLUSTER_GATEWAY = "10.88.77.1"
# Global paths runtimes write no matter how they are configured.
CNI_RESULTS = Path("/var/lib/cni/results")
HOST_TRACES = (
    Path("/var/lib/cni"),  # libcni's result cache (podman, containerd CRI)
    Path("/run/containerd"),  # containerd 1.6 shim sockets: /run/containerd/s
    Path("/run/runc"),  # podman's runc state
    Path("/dev/shm/libpod_lock"),  # podman's SHM locks
)
COMMAND_TIMEOUT = 120.0


class CommandError(AssertionError):
    """A command the test ran failed; the message carries its output."""

    def __init__(self, argv: Sequence[str], proc: subprocess.CompletedProcess[str]) -> None:
        self.proc = proc
        super().__init__(
            f"{' '.join(argv)} exited {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        )


def sh(
    argv: Sequence[str],
    *,
    env: Optional[Mapping[str, str]] = None,
    check: bool = True,
    timeout: float = COMMAND_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run argv without stdin; raise CommandError on a non-zero exit when check is set."""
    proc = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        env=None if env is None else dict(env),
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if check and proc.returncode != 0:
        raise CommandError(argv, proc)
    return proc


def in_netns(path: str, argv: Sequence[str]) -> List[str]:
    """argv run in the network namespace at path, and only that namespace (see real-clients.md §1)."""
    return ["nsenter", f"--net={path}", *argv]


def request(netns_path: str, proto: str, host: str, port: int) -> Dict[str, str]:
    """One echo request from inside netns_path; the parsed answer (peer_ip = the source the server saw)."""
    script = str(REPO / "tests" / "servers.py")
    argv = [sys.executable, script, "request", proto, host, str(port), "--timeout", str(REPLY_TIMEOUT)]
    proc = sh(in_netns(netns_path, argv), timeout=REPLY_TIMEOUT + 10)
    return topology.parse_reply(proc.stdout.strip())


def hold_netns(path: str, name: str) -> str:
    """Bind-mount the netns at path as /run/netns/NAME so it outlives the runtime; return NAME.

    Lets a test look into a pod's namespace after the runtime has deleted its
    own handle (StopPodSandbox, podman rm). NAME must carry the topology
    prefix: Topology.down() deletes it.
    """
    target = Path(topology.NETNS_DIR) / name
    target.touch()
    try:
        sh(["mount", "--bind", path, str(target)])
    except BaseException:
        target.unlink()
        raise
    return name


# --- configs ----------------------------------------------------------------------------------


def egress_plugin(log_file: Path, **extra: Any) -> Dict[str, Any]:
    """The plugin entry of the NAD-style config from the issue."""
    return {
        "type": PLUGIN_TYPE,
        "interfaceArgs": {"master": topology.MASTER},
        "ip": {"addresses": [f"{RESERVED_IP}/24"], "gateway": GATEWAY, "destinations": list(DESTINATIONS)},
        "log_file": str(log_file),
        **extra,
    }


def egress_conf(version: str, log_file: Path, name: str = "egress") -> Dict[str, Any]:
    """A single-plugin .conf."""
    return {"cniVersion": version, "name": name, **egress_plugin(log_file)}


def conflist(version: str, name: str, plugins: Iterable[Dict[str, Any]]) -> Dict[str, Any]:
    return {"cniVersion": version, "name": name, "plugins": list(plugins)}


def bridge_plugin(ipam_dir: Path, default_route: bool = True) -> Dict[str, Any]:
    """Upstream bridge + host-local on CLUSTER_SUBNET: the pod's eth0, as a cluster network gives it."""
    ipam: Dict[str, Any] = {"type": "host-local", "dataDir": str(ipam_dir), "ranges": [[{"subnet": CLUSTER_SUBNET}]]}
    if default_route:
        ipam["routes"] = [{"dst": "0.0.0.0/0"}]
    return {"type": "bridge", "bridge": CLUSTER_BRIDGE, "isGateway": True, "ipMasq": False, "ipam": ipam}


def write_json(path: Path, doc: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


def k8s_args(container_id: str, pod: str = "egress-router", namespace: str = "egress", uid: str = "") -> str:
    """CNI_ARGS as kubelet's runtimes send them."""
    uid = uid or f"uid-{container_id[:12]}"
    return (
        f"IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={pod};"
        f"K8S_POD_INFRA_CONTAINER_ID={container_id};K8S_POD_UID={uid}"
    )


# --- the plugin -------------------------------------------------------------------------------

_WRAPPER = """#!{python}
# egress-router from {repo}, for the runtime tests (tests/runtimes/harness.py).
import sys

sys.path.insert(0, {repo!r})
from egress_router_cni.__main__ import main

main()
"""


def install_plugin(directory: Path) -> Path:
    """Put an `egress-router` executable in directory; return its path.

    By default it runs this checkout with this interpreter. EGRESS_ROUTER_EXE
    (a shell-style command line, as for tests/cni.py, e.g. the PyInstaller
    build dist/egress-router/egress-router) replaces that. The runtime passes
    no env var of ours: podman runs DEL with a cut-down environment.
    """
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / PLUGIN_TYPE
    exe = os.environ.get("EGRESS_ROUTER_EXE", "").strip()
    if exe:
        argv = shlex.split(exe)
        first = argv[0]
        argv[0] = os.path.abspath(first) if "/" in first else (shutil.which(first) or first)
        target.write_text(f'#!/bin/sh\nexec {shlex.join(argv)} "$@"\n')
    else:
        target.write_text(_WRAPPER.format(python=sys.executable, repo=str(REPO)))
    target.chmod(0o755)
    return target


def link_upstream_plugins(directory: Path) -> None:
    """Symlink Debian's plugins next to egress-router (containerd's CRI takes ONE bin_dir)."""
    for plugin in UPSTREAM_PLUGINS.iterdir():
        link = directory / plugin.name
        if not link.exists():
            link.symlink_to(plugin)


# --- the plugin's log -------------------------------------------------------------------------

_LINE = re.compile(r"^\S+ \[(?P<level>\w+)\] (?P<msg>.*)$")
_CALLED = re.compile(r"^Called CNI (?P<cmd>[A-Z]+)$")
_IDS = re.compile(r"^Container ID: (?P<cid>\S*) Netns: (?P<netns>\S*) Interface: (?P<ifname>\S*)$")
_DONE = re.compile(r"^(CNI (ADD|DEL|CHECK) done\b|CHECK passed$|network namespace is gone or not given)")
_FAILED = re.compile(r"^CNI [A-Z]+ failed")


@dataclass
class PluginCall:
    """One plugin invocation as its log tells it."""

    command: str
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    lines: List[str] = field(default_factory=list)
    done: bool = False
    failed: bool = False

    @property
    def ok(self) -> bool:
        return self.done and not self.failed

    def summary(self) -> str:
        netns = self.netns or "''"
        return f"{self.command}({self.ifname}, netns={netns}) {'ok' if self.ok else 'FAILED'}"


def plugin_calls(log_file: Path, container_id: Optional[str] = None) -> List[PluginCall]:
    """The ADD/DEL/CHECK calls in the log, oldest first; those of container_id when given.

    The runtimes here never run two egress-router calls at once, so a call's
    lines follow its 'Called CNI X' line without interleaving.
    """
    calls: List[PluginCall] = []
    text = log_file.read_text() if log_file.exists() else ""
    for raw in text.splitlines():
        m = _LINE.match(raw)
        if not m:
            continue
        msg = m.group("msg")
        called = _CALLED.match(msg)
        if called:
            calls.append(PluginCall(command=called.group("cmd")))
            continue
        if not calls:
            continue
        call = calls[-1]
        call.lines.append(msg)
        ids = _IDS.match(msg)
        if ids:
            call.container_id, call.netns, call.ifname = ids.group("cid", "netns", "ifname")
        call.done = call.done or bool(_DONE.match(msg))
        call.failed = call.failed or bool(_FAILED.match(msg)) or m.group("level") == "error"
    if container_id is not None:
        calls = [c for c in calls if c.container_id == container_id]
    return calls


def summaries(calls: Sequence[PluginCall]) -> List[str]:
    return [c.summary() for c in calls]


# --- host hygiene -----------------------------------------------------------------------------


class HostTraces:
    """Remember which global runtime paths exist; later remove the ones that did not, and new result files."""

    def __init__(self, paths: Sequence[Path] = HOST_TRACES) -> None:
        self.absent = [p for p in paths if not os.path.lexists(p)]
        self.results = set(_listdir(CNI_RESULTS))

    def new_results(self) -> List[str]:
        """libcni cache entries (NET-CONTAINERID-IFNAME) of our networks created since construction."""
        ours = tuple(f"{net}-" for net in (CLUSTER_NETWORK, EGRESS_NETWORK))
        return sorted(n for n in set(_listdir(CNI_RESULTS)) - self.results if n.startswith(ours))

    def restore(self) -> None:
        for name in self.new_results():
            (CNI_RESULTS / name).unlink(missing_ok=True)
        for path in self.absent:
            _remove_empty(path)


def _listdir(path: Path) -> List[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


def _remove_empty(path: Path) -> None:
    """Remove path if it is a file, or a tree of empty directories; leave anything else."""
    if path.is_file() and not path.is_symlink():
        path.unlink(missing_ok=True)
        return
    if not path.is_dir() or path.is_symlink():
        return
    for root, _dirs, _files in os.walk(path, topdown=False):
        with contextlib.suppress(OSError):
            os.rmdir(root)


def mounts_under(path: Path) -> List[str]:
    """Mount points at or below path, deepest first."""
    prefix = str(path).rstrip("/")
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")  # \040 and friends
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return sorted(points, key=len, reverse=True)


def unmount_under(path: Path) -> None:
    for point in mounts_under(path):
        sh(["umount", "--lazy", point], check=False)


def remove_tree(path: Path) -> None:
    """rm -rf path, unmounting what a runtime left mounted below it first; never crosses a mount."""
    if not path.exists():
        return
    unmount_under(path)
    left = mounts_under(path)
    if left:
        raise RuntimeError(f"not removing {path}: still mounted: {left}")
    sh(["rm", "-rf", "--one-file-system", str(path)], check=False)


def stop_process(proc: subprocess.Popen[Any], timeout: float = 15.0) -> None:
    """SIGTERM then SIGKILL one process we started, by its PID."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def pids_with_argument(argument: str) -> List[int]:
    """PIDs whose command line contains argument exactly (e.g. our private containerd socket)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argument.encode() in argv:
            pids.append(int(entry))
    return pids


def kill_pids(pids: Iterable[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def wait_for(predicate: Any, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


# --- what the tests assert --------------------------------------------------------------------


def kernel_problem() -> Optional[str]:
    """Why this kernel cannot host the runtime tests (veth, macvlan, bridge, nftables NAT), or None."""
    name = f"ert-{uuid.uuid4().hex[:6]}-probe"
    steps = [
        (["ip", "netns", "add", name], "network namespaces"),
        (["ip", "-n", name, "link", "add", "ert-p0", "type", "veth", "peer", "name", "ert-p1"], "veth links"),
        (["ip", "-n", name, "link", "add", "ert-mv", "link", "ert-p0", "type", "macvlan", "mode", "bridge"], "macvlan"),
        (["ip", "-n", name, "link", "add", "ert-br", "type", "bridge"], "bridges"),
        (["ip", "netns", "exec", name, "nft", "add table ip ert"], "nftables"),
        (
            ["ip", "netns", "exec", name, "nft", "add chain ip ert pre { type nat hook prerouting priority dstnat; }"],
            "nftables NAT",
        ),
    ]
    try:
        for argv, feature in steps:
            proc = sh(argv, check=False)
            if proc.returncode != 0:
                return f"the kernel cannot do {feature}: `{' '.join(argv)}` said {proc.stderr.strip()!r}"
        return None
    finally:
        sh(["ip", "netns", "del", name], check=False)


def expected_nat_rules(router_if: str, pod_if: str = "eth0") -> Dict[str, List[str]]:
    """The plugin's table egress_cni, chain by chain, in nft's text form."""
    return {
        "prerouting": [
            f'iifname "{pod_if}" udp dport 80 dnat to 10.0.0.99',
            f'iifname "{pod_if}" tcp dport 8080 dnat to 203.0.113.26:80',
            f'iifname "{pod_if}" tcp dport 8443 dnat to 203.0.113.27:443',
        ],
        "postrouting": [f'oifname "{router_if}" snat to {RESERVED_IP}'],
    }


def router_state_problems(ns: str, router_if: str, pod_if: str = "eth0") -> List[str]:
    """What differs, in netns NAME ns, from an egress router on router_if (empty when all is right)."""
    problems = []
    link = oracle.link(ns, router_if)
    if link is None:
        return [f"no {router_if} in {ns}: links are {[x['ifname'] for x in oracle.links(ns)]}"]
    info = link.get("linkinfo", {})
    if info.get("info_kind") != "macvlan" or info.get("info_data", {}).get("mode") != "bridge":
        problems.append(f"{router_if} is not a bridge-mode macvlan: {info}")
    if "UP" not in link.get("flags", []):
        problems.append(f"{router_if} is down")
    if oracle.ipv4_addresses(ns, router_if) != [f"{RESERVED_IP}/24"]:
        problems.append(f"{router_if} addresses: {oracle.ipv4_addresses(ns, router_if)}")
    defaults = [r for r in oracle.main_routes(ns) if r[0] == "default"]
    if defaults != [("default", GATEWAY, router_if)]:
        problems.append(f"default routes: {defaults}")
    if oracle.sysctl(ns, "net/ipv4/ip_forward") != "1":
        problems.append("net.ipv4.ip_forward is not 1")
    if not oracle.nft_table_exists(ns, "ip", NAT_TABLE):
        return [*problems, f"no nft table ip {NAT_TABLE}"]
    for chain, rules in expected_nat_rules(router_if, pod_if).items():
        found = oracle.nft_rule_lines(ns, "ip", NAT_TABLE, chain)
        if found != rules:
            problems.append(f"{chain}: {found}, expected {rules}")
    return problems


def traffic_problems(client_netns: str, router_ip: str) -> List[str]:
    """Send each configured destination's traffic from client_netns to the router's pod address.

    Each must reach its real destination with the reserved address as source.
    """
    problems = []
    for (proto, port), target in EXPECTED_TARGETS.items():
        try:
            reply = request(client_netns, proto, router_ip, port)
        except CommandError as e:
            problems.append(f"{proto} {router_ip}:{port}: {e.proc.stderr.strip()}")
            continue
        if (reply.get("peer_ip"), reply.get("local")) != (RESERVED_IP, target):
            problems.append(f"{proto} {router_ip}:{port}: expected {RESERVED_IP} -> {target}, got {reply}")
    return problems


def leftovers(ns: str) -> List[str]:
    """Anything but lo, and any nft table, in a netns every plugin has DELeted from."""
    found = [f"link {x['ifname']}" for x in oracle.links(ns) if x["ifname"] != "lo"]
    found += [
        f"nft {item['table']['family']} {item['table']['name']}" for item in oracle.nft_ruleset(ns) if "table" in item
    ]
    return found
