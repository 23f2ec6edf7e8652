"""A throwaway Kubernetes-like network for end-to-end tests and the demo.

Every object lives in network namespaces named PREFIX-* (PREFIX starts with
"ert-"), so nothing here can touch the machine's own namespace: each `ip`
call names its namespace with `-n`, and `down()` removes every PREFIX-*
namespace and kills the echo servers by PID.

    client (10.128.10.19, fd00:10::19) ─┐   cluster: bridge cbr0 10.128.10.1/23, fd00:10::1/64
    pod eth0 (10.128.10.18, fd00:10::18)┘
    pod net1 (the plugin's macvlan on node's ermaster0, 192.168.12.99 / 2001:db8:12::99)
        ─ node:ermaster0 ══ lan:lan-node 192.168.12.1/24, 2001:db8:12::1/64   (lan forwards both families)
                            lan:lan-ext 203.0.113.1/24, 10.0.0.98/24, 2001:db8:ff::1/64
                              ══ ext:eth0 203.0.113.26/24, .27/24, 10.0.0.99/24,
                                          2001:db8:ff::26/64, 2001:db8:ff::27/64 + echo servers (both families)

10.0.0.99 sits in a /24 here, not the /30 of the manual's destination string:
in 10.0.0.96/30 it is the broadcast address, which a router does not forward.
IPv6 uses only the documentation prefix 2001:db8::/32 and fd00::/8, and only
inside these namespaces. Every address the topology configures skips duplicate
address detection (nodad, accept_dad=0) so setup is fast and snapshots stable;
a pod made with add_pod(dad=True) lets the plugin's own interface do real DAD.

CLI (used by scripts/demo.sh):
    python -m tests.topology up --prefix ert-demo     build everything, start the servers
    python -m tests.topology request --prefix ert-demo tcp 8080
    python -m tests.topology request --prefix ert-demo --host fd00:10::18 tcp 8080
    python -m tests.topology down --prefix ert-demo
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

SERVER_SCRIPT = Path(__file__).resolve().with_name("servers.py")
MASTER = "ermaster0"
GATEWAY = "192.168.12.1"
RESERVED_IP = "192.168.12.99"
CLUSTER_GATEWAY = "10.128.10.1"
ROUTER_POD_IP = "10.128.10.18"
CLIENT_POD_IP = "10.128.10.19"
CLUSTER_PREFIXLEN = 23
EXT_ADDRESSES = ("203.0.113.26/24", "203.0.113.27/24", "10.0.0.99/24")
# IPv6 beside IPv4: the same picture with 2001:db8::/32 (outside) and fd00::/8 (cluster).
GATEWAY6 = "2001:db8:12::1"
RESERVED_IP6 = "2001:db8:12::99"
LAN_EXT6 = "2001:db8:ff::1"
EXT_ADDRESSES6 = ("2001:db8:ff::26/64", "2001:db8:ff::27/64")
CLUSTER_GATEWAY6 = "fd00:10::1"
ROUTER_POD_IP6 = "fd00:10::18"
CLIENT_POD_IP6 = "fd00:10::19"
PREFIXLEN6 = 64
TCP_PORTS = (80, 443)
UDP_PORTS = (80,)
# Fixed so that the client's neighbour cache stays right when a test replaces
# the router pod; ifindex 3 makes the plugin's "deleted default route {Ifindex: 3 …}"
# log line read exactly as in the product manual.
ROUTER_POD_MAC = "02:00:0a:80:0a:12"
CLIENT_POD_MAC = "02:00:0a:80:0a:13"
POD_ETH0_INDEX = 3
SERVER_READY_TIMEOUT = 10.0
# How long the kernel may take to destroy a deleted pod namespace (its workqueue runs late on a loaded machine).
POD_TEARDOWN_TIMEOUT = 10.0
NETNS_DIR = "/run/netns"


class TopologyError(RuntimeError):
    """An `ip`/helper command failed while building or using the topology."""


def run(argv: Sequence[str], timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a command without stdin; raise TopologyError with its stderr when check fails."""
    proc = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL
    )
    if check and proc.returncode != 0:
        raise TopologyError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def ip(ns: str, *args: str) -> None:
    """`ip -n NS ...`: the only way this module changes links, addresses and routes."""
    run(["ip", "-n", ns, *args])


def write_sysctl(ns: str, key: str, value: str) -> None:
    """Write /proc/sys/KEY inside NS (key like 'net/ipv4/ip_forward')."""
    run(["ip", "netns", "exec", ns, "sh", "-c", 'printf "%s\\n" "$1" > "/proc/sys/$2"', "sh", value, key])


def ip6(ns: str, *args: str) -> None:
    """`ip -n NS -6 ...`."""
    run(["ip", "-n", ns, "-6", *args])


def add_netns(name: str) -> None:
    """Create a namespace with lo up, no IPv6 DAD (addresses must not flip from 'tentative' between snapshots)."""
    run(["ip", "netns", "add", name])
    ip(name, "link", "set", "lo", "up")
    for scope in ("all", "default"):
        write_sysctl(name, f"net/ipv6/conf/{scope}/accept_dad", "0")


def wait_addresses_settled(ns: str, dev: str, timeout: float = 10.0) -> None:
    """Wait until no IPv6 address on dev is still 'tentative'.

    Even with accept_dad=0 the kernel clears the flag (and adds the address's
    local route) from a workqueue after the link gets carrier; on a loaded
    machine a snapshot taken right after setup can see the address tentative,
    and the next one not, which reads as a change the test did not make.
    """
    deadline = time.monotonic() + timeout
    while True:
        out = run(["ip", "-n", ns, "-6", "-o", "addr", "show", "dev", dev, "tentative"], check=False).stdout
        if not out.strip() or time.monotonic() > deadline:
            return
        time.sleep(0.05)


def delete_netns(name: str) -> None:
    """Remove a namespace; already gone is fine."""
    if os.path.exists(os.path.join(NETNS_DIR, name)):
        run(["ip", "netns", "del", name], check=False)


def link_exists(ns: str, dev: str) -> bool:
    """Whether NS has a link named DEV (`ip link show` fails for a missing one)."""
    return run(["ip", "-n", ns, "link", "show", "dev", dev], check=False).returncode == 0


def list_netns(prefix: str) -> List[str]:
    """Namespaces whose name starts with PREFIX- (only ours: the prefix is unique)."""
    try:
        names = os.listdir(NETNS_DIR)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.startswith(prefix + "-"))


def new_prefix() -> str:
    return "ert-" + uuid.uuid4().hex[:6]


def parse_reply(text: str) -> Dict[str, str]:
    """'peer=1.2.3.4:5 local=6.7.8.9:80 proto=tcp' -> {'peer': ..., 'peer_ip': ..., 'local': ..., ...}.

    IPv6 endpoints are written [addr]:port; peer_ip / local_ip hold the bare address.
    """
    fields = dict(item.split("=", 1) for item in text.split() if "=" in item)
    for key in ("peer", "local"):
        if key in fields:
            host, _, fields[f"{key}_port"] = fields[key].rpartition(":")
            fields[f"{key}_ip"] = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    return fields


@dataclass
class Pod:
    """A pod network namespace with eth0 on the cluster bridge."""

    ns: str
    address: str
    peer: str  # the cluster-side veth, enslaved to cbr0
    address6: Optional[str] = None

    @property
    def path(self) -> str:
        """What a runtime passes as CNI_NETNS."""
        return os.path.join(NETNS_DIR, self.ns)


@dataclass
class Topology:
    """The namespaces node, lan, ext, cluster and client, plus per-test router pods."""

    prefix: str = field(default_factory=new_prefix)
    server_pid: Optional[int] = None
    _server: Optional[subprocess.Popen[str]] = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.prefix.startswith("ert-") or "/" in self.prefix:
            raise ValueError(f"topology prefix must start with 'ert-': {self.prefix!r}")

    @property
    def node(self) -> str:
        return f"{self.prefix}-node"

    @property
    def lan(self) -> str:
        return f"{self.prefix}-lan"

    @property
    def ext(self) -> str:
        return f"{self.prefix}-ext"

    @property
    def cluster(self) -> str:
        return f"{self.prefix}-cluster"

    @property
    def client(self) -> str:
        return f"{self.prefix}-client"

    def up(self, servers: bool = True) -> None:
        """Build node, lan, ext, cluster and client (and start the servers); undo everything on failure."""
        try:
            self._build_external()
            self._build_cluster()
            self._attach(self.client, CLIENT_POD_IP, CLIENT_POD_MAC, index=None, address6=CLIENT_POD_IP6)
            if servers:
                self.start_servers()
        except BaseException:
            self.down()
            raise

    def _build_external(self) -> None:
        for ns in (self.node, self.lan, self.ext):
            add_netns(ns)
        ip(self.node, "link", "add", MASTER, "type", "veth", "peer", "name", "lan-node", "netns", self.lan)
        ip(self.node, "link", "set", MASTER, "up")
        ip(self.lan, "addr", "add", f"{GATEWAY}/24", "dev", "lan-node")
        ip6(self.lan, "addr", "add", f"{GATEWAY6}/{PREFIXLEN6}", "dev", "lan-node", "nodad")
        ip(self.lan, "link", "set", "lan-node", "up")
        ip(self.lan, "link", "add", "lan-ext", "type", "veth", "peer", "name", "eth0", "netns", self.ext)
        for cidr in ("203.0.113.1/24", "10.0.0.98/24"):
            ip(self.lan, "addr", "add", cidr, "dev", "lan-ext")
        ip6(self.lan, "addr", "add", f"{LAN_EXT6}/{PREFIXLEN6}", "dev", "lan-ext", "nodad")
        ip(self.lan, "link", "set", "lan-ext", "up")
        write_sysctl(self.lan, "net/ipv4/ip_forward", "1")
        write_sysctl(self.lan, "net/ipv6/conf/all/forwarding", "1")
        for cidr in EXT_ADDRESSES:
            ip(self.ext, "addr", "add", cidr, "dev", "eth0")
        for cidr in EXT_ADDRESSES6:
            ip6(self.ext, "addr", "add", cidr, "dev", "eth0", "nodad")
        ip(self.ext, "link", "set", "eth0", "up")
        ip(self.ext, "route", "add", "default", "via", "203.0.113.1", "dev", "eth0")
        ip6(self.ext, "route", "add", "default", "via", LAN_EXT6, "dev", "eth0")

    def _build_cluster(self) -> None:
        add_netns(self.cluster)
        # No multicast snooping: without an MLD querier it could drop neighbour discovery between the pods.
        ip(self.cluster, "link", "add", "cbr0", "type", "bridge", "mcast_snooping", "0")
        ip(self.cluster, "addr", "add", f"{CLUSTER_GATEWAY}/{CLUSTER_PREFIXLEN}", "dev", "cbr0")
        ip6(self.cluster, "addr", "add", f"{CLUSTER_GATEWAY6}/{PREFIXLEN6}", "dev", "cbr0", "nodad")
        ip(self.cluster, "link", "set", "cbr0", "up")

    def _attach(self, ns: str, address: str, mac: str, index: Optional[int], address6: Optional[str] = None) -> Pod:
        """Create NS with eth0 (veth to cbr0), ADDRESS and a default route via the cluster gateway.

        With ADDRESS6, eth0 also gets ADDRESS6/64 and an IPv6 default route via fd00:10::1.
        """
        add_netns(ns)
        peer = "vp" + uuid.uuid4().hex[:8]
        index_args = ["index", str(index)] if index else []
        ip(ns, "link", "add", "eth0", *index_args, "type", "veth", "peer", "name", peer, "netns", self.cluster)
        ip(self.cluster, "link", "set", peer, "master", "cbr0", "up")
        ip(ns, "link", "set", "eth0", "address", mac, "up")
        ip(ns, "addr", "add", f"{address}/{CLUSTER_PREFIXLEN}", "dev", "eth0")
        ip(ns, "route", "add", "default", "via", CLUSTER_GATEWAY, "dev", "eth0")
        if address6:
            ip6(ns, "addr", "add", f"{address6}/{PREFIXLEN6}", "dev", "eth0", "nodad")
            ip6(ns, "route", "add", "default", "via", CLUSTER_GATEWAY6, "dev", "eth0")
        wait_addresses_settled(ns, "eth0")
        return Pod(ns=ns, address=address, peer=peer, address6=address6)

    def add_pod(self, suffix: Optional[str] = None, dad: bool = False) -> Pod:
        """A fresh router pod namespace (eth0 10.128.10.18/23 + fd00:10::18/64, default routes via the cluster).

        dad=True: interfaces created in the pod from now on (the plugin's net1)
        run IPv6 duplicate address detection, as in a real pod; eth0 does not.
        """
        name = f"{self.prefix}-pod" + (f"-{suffix}" if suffix else "")
        try:
            pod = self._attach(name, ROUTER_POD_IP, ROUTER_POD_MAC, index=POD_ETH0_INDEX, address6=ROUTER_POD_IP6)
            if dad:
                write_sysctl(name, "net/ipv6/conf/default/accept_dad", "1")
        except BaseException:
            delete_netns(name)
            raise
        # Forget the previous router's addresses: its net1 had another MAC.
        for ns in (self.client, self.lan):
            ip(ns, "neigh", "flush", "all")
        return pod

    def remove_pod(self, pod: Pod) -> None:
        """Delete the pod namespace and wait until the kernel has torn it down.

        `ip netns del` only drops the namespace's mount. The kernel destroys
        the namespace later, from a workqueue, and only then deletes its links:
        the veth pair and any macvlan in it, whose master then leaves
        promiscuous mode. A snapshot of the node taken before that still shows
        the macvlan's mark on the master. The kernel deletes all of a
        namespace's links in one batch, closing them all before unlisting any,
        so the cluster-side peer's disappearance says the batch has run.
        """
        delete_netns(pod.ns)
        deadline = time.monotonic() + POD_TEARDOWN_TIMEOUT
        while link_exists(self.cluster, pod.peer):
            if time.monotonic() > deadline:
                raise TopologyError(
                    f"{pod.peer} is still in {self.cluster} {POD_TEARDOWN_TIMEOUT:.0f} s after deleting {pod.ns}"
                )
            time.sleep(0.01)

    def start_servers(self) -> int:
        """Start the echo servers in ext and wait until they listen; return their PID."""
        argv = [
            "ip", "netns", "exec", self.ext, sys.executable, str(SERVER_SCRIPT), "serve",
            "--tcp", ",".join(map(str, TCP_PORTS)), "--udp", ",".join(map(str, UDP_PORTS)),
        ]  # fmt: skip
        # `ip netns exec` execs the command, so this PID is the server's own.
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True, start_new_session=True
        )
        self._server, self.server_pid = proc, proc.pid
        assert proc.stdout is not None
        readable, _, _ = select.select([proc.stdout], [], [], SERVER_READY_TIMEOUT)
        line = proc.stdout.readline() if readable else ""
        if line.strip() != "ready":
            self.stop_servers()
            raise TopologyError(f"echo servers in {self.ext} did not start (got {line!r})")
        return proc.pid

    def detach_servers(self) -> None:
        """Let the servers outlive this object (the CLI exits); down() still finds them by server_pid."""
        self._server = None

    def stop_servers(self) -> None:
        """Kill the echo servers by PID (and only them)."""
        if self._server is not None:
            self._server.kill()
            self._server.wait(timeout=10)
            if self._server.stdout:
                self._server.stdout.close()
        elif self.server_pid and _is_our_server(self.server_pid):
            os.kill(self.server_pid, signal.SIGKILL)
        self._server, self.server_pid = None, None

    def down(self) -> None:
        """Stop the servers and delete every PREFIX-* namespace; safe to call twice."""
        try:
            self.stop_servers()
        finally:
            for ns in list_netns(self.prefix):
                delete_netns(ns)

    def request(self, proto: str, port: int, host: str = ROUTER_POD_IP, timeout: float = 5.0) -> str:
        """Send one request from the client pod; return the server's answer line or raise TopologyError.

        HOST may be an IPv4 or IPv6 address (fd00:10::18, also written [fd00:10::18]).
        """
        argv = [
            "ip", "netns", "exec", self.client, sys.executable, str(SERVER_SCRIPT),
            "request", proto, host, str(port), "--timeout", str(timeout),
        ]  # fmt: skip
        proc = run(argv, timeout=timeout + 10, check=False)
        if proc.returncode != 0:
            where = f"[{host.strip('[]')}]:{port}" if ":" in host else f"{host}:{port}"
            raise TopologyError(f"{proto} request to {where} failed: {proc.stderr.strip()}")
        return proc.stdout.strip()

    def state(self) -> Dict[str, object]:
        return {"prefix": self.prefix, "server_pid": self.server_pid, "namespaces": list_netns(self.prefix)}


def _is_our_server(pid: int) -> bool:
    """PID still runs tests/servers.py (guards against PID reuse before a kill)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return str(SERVER_SCRIPT).encode() in cmdline


def _state_file(prefix: str) -> Path:
    return Path(os.environ.get("TMPDIR", "/tmp")) / f"{prefix}-topology.json"


def _cli_up(prefix: str) -> int:
    topo = Topology(prefix=prefix)
    topo.up()
    try:
        pod = topo.add_pod()
    except BaseException:
        topo.down()
        raise
    topo.detach_servers()
    _state_file(prefix).write_text(json.dumps({**topo.state(), "pod": pod.path}))
    print(json.dumps({**topo.state(), "pod": pod.path, "node": topo.node, "client": topo.client}))
    return 0


def _cli_down(prefix: str) -> int:
    state_path = _state_file(prefix)
    pid: Optional[int] = None
    if state_path.exists():
        pid = json.loads(state_path.read_text()).get("server_pid")
    Topology(prefix=prefix, server_pid=pid).down()
    state_path.unlink(missing_ok=True)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.topology", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("up", "down", "request"):
        cmd = sub.add_parser(name)
        cmd.add_argument("--prefix", required=True, help="namespace name prefix, must start with 'ert-'")
        if name == "request":
            cmd.add_argument("--host", default=ROUTER_POD_IP, help="the router pod's IPv4 or IPv6 address")
            cmd.add_argument("proto", choices=("tcp", "udp"))
            cmd.add_argument("port", type=int)
    args = parser.parse_args(argv)
    if args.command == "up":
        return _cli_up(args.prefix)
    if args.command == "down":
        return _cli_down(args.prefix)
    try:
        print(Topology(prefix=args.prefix).request(args.proto, args.port, host=args.host))
    except TopologyError as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
