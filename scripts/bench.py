#!/usr/bin/env python3
"""Benchmark the egress-router plugin side by side with other CNI plugins (`--vs`).

Run it through scripts/bench.sh (a fresh network namespace, `unshare --net`).
The network is the end-to-end tests' own (tests/topology.py: node, lan, ext
with the echo servers, cluster, client, one pod namespace per ADD), so every
namespace is named ert-<id>-* and is deleted on exit, Ctrl-C included. The
plugins run inside the node namespace, as a runtime runs them; only processes
this program started are ever signalled.

Every phase interleaves the implementations (ours, each --vs plugin, the
interpreter floor) in rotating order, so drift hits all of them alike, and
reports medians and ratios:

- ADD (the manual's 3 destinations) into a fresh pod, then CHECK (ours only:
  the reference builds stop at cniVersion 0.4.0 and answer errors with exit 0),
  DEL; each ADD is verified by kernel state (net1 in the pod, DNAT rules in
  nftables or iptables), for every plugin. The reference plugins' DEL leaves
  rules and routes behind: deleting the pod namespace cleans up after every cycle.
- ADD with --dest-count destinations (default 1000), verified the same way.
- --concurrent ADDs started at once into as many pods (distinct addresses),
  then one TCP request through each router; wall time from the first spawn to
  the last exit.
- Peak RSS of an ADD (5 ADDs each under /usr/bin/time, which forks the plugin
  from a small process; see Bench.peak_rss).

Standard library plus the tests' kit (tests/topology.py, tests/cni.py, tests/servers.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.cni import IFNAME, router_config, with_ip, with_prev_result  # noqa: E402
from tests.topology import (  # noqa: E402
    NETNS_DIR,
    Pod,
    Topology,
    TopologyError,
    parse_reply,
)

DEFAULT_OUT = REPO / "build" / "bench"
RESERVED = "192.168.12.{}"
# Plain addresses: the reference builds cannot parse the manual's "/30" form ("dnat to <nil>").
DESTINATIONS = ["80 UDP 10.0.0.99", "8080 TCP 203.0.113.26 80", "8443 TCP 203.0.113.27 443"]
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PLUGIN_TIMEOUT = 120.0
# `python3 -S -m egress_router_cni` from this checkout (-S: no site-packages, the hot path needs none).
PYTHON_ENTRY = (
    "import sys; sys.path.insert(0, {repo!r}); import runpy; runpy.run_module('egress_router_cni', run_name='__main__')"
)


class Impl(NamedTuple):
    name: str
    argv: List[str]
    ours: bool  # ours: CHECK is timed and DEL must remove net1


class Run(NamedTuple):
    status: int
    wall_ms: float
    cpu_ms: float
    stdout: str


# --- spawning -----------------------------------------------------------------------------------


def spawn(argv: Sequence[str], env: Dict[str, str], stdin: bytes, workdir: str) -> Tuple[int, float, str]:
    """posix_spawn argv with stdin from a file and stdout to a file; return (pid, start time, stdout path)."""
    fd, in_path = tempfile.mkstemp(dir=workdir)
    os.write(fd, stdin)
    os.close(fd)
    out_fd, out_path = tempfile.mkstemp(dir=workdir)
    os.close(out_fd)
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, in_path, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, out_path, os.O_WRONLY, 0),
        (os.POSIX_SPAWN_OPEN, 2, "/dev/null", os.O_WRONLY, 0),
    ]
    t0 = time.perf_counter()
    pid = os.posix_spawn(argv[0], list(argv), env, file_actions=actions)
    os.unlink(in_path)
    return pid, t0, out_path


def reap(pid: int, t0: float, out_path: str) -> Run:
    _, status, usage = os.wait4(pid, 0)
    wall = (time.perf_counter() - t0) * 1000
    with open(out_path) as f:
        stdout = f.read()
    os.unlink(out_path)
    return Run(
        os.waitstatus_to_exitcode(status),
        wall,
        (usage.ru_utime + usage.ru_stime) * 1000,
        stdout,
    )


def run_once(argv: Sequence[str], env: Dict[str, str], stdin: bytes, workdir: str) -> Run:
    return reap(*spawn(argv, env, stdin, workdir))


def cni_env(command: str, container_id: str, pod: Optional[Pod]) -> Dict[str, str]:
    env = {"PATH": HOST_PATH, "CNI_COMMAND": command, "CNI_PATH": "/opt/cni/bin", "CNI_IFNAME": IFNAME}
    env["CNI_CONTAINERID"] = container_id
    if pod is not None:
        env["CNI_NETNS"] = os.path.join(NETNS_DIR, pod.ns)
    return env


def config(log_file: str, destinations: Sequence[str], address: str, prev: Optional[Any] = None) -> bytes:
    """The tests' router config (tests/cni.py) at cniVersion 0.4.0, the newest the reference builds accept."""
    conf = with_ip(
        router_config("0.4.0", log_file, name="bench", interfaceType="macvlan"),
        addresses=[f"{address}/24"],
        destinations=list(destinations),
    )
    if prev is not None:
        conf = with_prev_result(conf, prev)
    return json.dumps(conf).encode()


# --- verification (kernel state, for every plugin) ---------------------------------------------


def _out(argv: Sequence[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    return proc.stdout if proc.returncode == 0 else ""


def dnat_rules(ns: str) -> int:
    """DNAT rules in the pod: nftables (ours, Go nft, iptables-nft) or legacy iptables."""
    text = _out(["ip", "netns", "exec", ns, "nft", "list", "ruleset"])
    count = text.count("dnat to")
    if not count:
        count = _out(["ip", "netns", "exec", ns, "iptables-legacy-save", "-t", "nat"]).count("-j DNAT")
    return count


def has_link(ns: str) -> bool:
    return subprocess.run(["ip", "-n", ns, "link", "show", IFNAME], capture_output=True, check=False).returncode == 0


def verify_add(pod: Pod, destinations: int) -> Optional[str]:
    if not has_link(pod.ns):
        return "no net1 in the pod"
    found = dnat_rules(pod.ns)
    if found < destinations:
        return f"{found} DNAT rules, expected {destinations}"
    return None


# --- statistics ---------------------------------------------------------------------------------


class Results:
    def __init__(self) -> None:
        self.samples: Dict[str, Dict[str, List[Run]]] = {}
        self.failures: List[str] = []
        self.notes: Dict[str, Any] = {}

    def add(self, phase: str, impl: str, run: Run) -> None:
        self.samples.setdefault(phase, {}).setdefault(impl, []).append(run)

    def median(self, phase: str, impl: str, field: str = "wall_ms") -> Optional[float]:
        runs = self.samples.get(phase, {}).get(impl, [])
        return statistics.median(getattr(r, field) for r in runs) if runs else None

    def summary(self) -> Dict[str, Any]:
        out: Dict[str, Any] = {}
        for phase, by_impl in self.samples.items():
            for impl, runs in by_impl.items():
                walls = sorted(r.wall_ms for r in runs)
                out.setdefault(phase, {})[impl] = {
                    "n": len(runs),
                    "median_ms": round(statistics.median(walls), 1),
                    "p90_ms": round(walls[max(0, round(0.9 * len(walls)) - 1)], 1),
                    "cpu_median_ms": round(statistics.median(r.cpu_ms for r in runs), 1),
                }
        return {"phases": out, "failures": self.failures, **self.notes}


# --- the phases ---------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, impls: List[Impl], topology: Topology, workdir: str) -> None:
        self.args = args
        self.impls = impls
        self.topology = topology
        self.workdir = workdir
        self.results = Results()
        self.serial = 0
        self.floor = [sys.executable, "-I", "-S", "-c", "pass"]

    def log_file(self, impl: Impl) -> str:
        return os.path.join(self.workdir, f"egress-router-{impl.name}.log")  # log confinement: /tmp, egress-router*

    def new_pod(self, index: Optional[int] = None) -> Pod:
        self.serial += 1
        if index is None:
            return self.topology.add_pod(suffix=str(self.serial))
        # Distinct addresses and MACs, so that the client can reach every router of a concurrent run.
        ns = f"{self.topology.prefix}-pod-c{index}"
        address = f"10.128.11.{10 + index}"
        mac = f"02:00:0a:80:0b:{index:02x}"
        return self.topology._attach(ns, address, mac, index=None)

    def cycle(self, impl: Impl, destinations: Sequence[str], phase: str, record: bool) -> None:
        """ADD into a fresh pod (verified), CHECK (ours), DEL; the pod namespace is deleted after."""
        pod = self.new_pod()
        cid = f"bench{self.serial:06d}"
        conf = config(self.log_file(impl), destinations, RESERVED.format(99))
        try:
            add = run_once(impl.argv, cni_env("ADD", cid, pod), conf, self.workdir)
            problem = f"exit {add.status}" if add.status else verify_add(pod, len(destinations))
            if problem:
                self.results.failures.append(f"{phase} {impl.name}: {problem}")
                return
            if record:
                self.results.add(phase, impl.name, add)
            if phase != "add":
                return
            if impl.ours:
                prev = json.loads(add.stdout)
                check_conf = config(self.log_file(impl), destinations, RESERVED.format(99), prev)
                check = run_once(impl.argv, cni_env("CHECK", cid, pod), check_conf, self.workdir)
                if check.status:
                    self.results.failures.append(f"check {impl.name}: exit {check.status}")
                elif record:
                    self.results.add("check", impl.name, check)
            delete = run_once(impl.argv, cni_env("DEL", cid, pod), conf, self.workdir)
            if delete.status or (impl.ours and has_link(pod.ns)):
                self.results.failures.append(f"del {impl.name}: exit {delete.status}, net1 left: {has_link(pod.ns)}")
            elif record:
                self.results.add("del", impl.name, delete)
        finally:
            self.topology.remove_pod(pod)

    def latency(self) -> None:
        n = self.args.iterations
        for i in range(self.args.warmup + n):
            record = i >= self.args.warmup
            order = self.impls[i % len(self.impls) :] + self.impls[: i % len(self.impls)]
            if record:
                self.results.add("floor", "python3 -I -S", run_once(self.floor, {}, b"", self.workdir))
            for impl in order:
                self.cycle(impl, DESTINATIONS, "add", record)
            self.progress(f"latency {i + 1}/{self.args.warmup + n}")

    def scaling(self) -> None:
        count = self.args.dest_count
        destinations = [f"{1000 + i} TCP 203.0.113.26 80" for i in range(count)]
        for i in range(self.args.dest_iterations):
            order = self.impls[i % len(self.impls) :] + self.impls[: i % len(self.impls)]
            for impl in order:
                self.cycle(impl, destinations, f"add{count}", True)
            self.progress(f"{count} destinations {i + 1}/{self.args.dest_iterations}")

    def concurrency_rounds(self) -> Dict[str, Dict[str, Any]]:
        """--concurrent-rounds rounds of concurrency(), implementations in rotating order; medians per plugin.

        One round is a single shot whose wall time moves by ±25 % between runs on
        this machine, more than the differences it is meant to show.
        """
        rounds: Dict[str, List[Dict[str, Any]]] = {impl.name: [] for impl in self.impls}
        for r in range(self.args.concurrent_rounds):
            order = self.impls[r % len(self.impls) :] + self.impls[: r % len(self.impls)]
            for impl in order:
                rounds[impl.name].append(self.concurrency(impl))
            self.progress(f"concurrent round {r + 1}/{self.args.concurrent_rounds}")
        summary = {}
        for name, runs in rounds.items():
            walls = [run["wall_ms"] for run in runs]
            summary[name] = {
                "n": self.args.concurrent,
                "rounds": len(runs),
                "succeeded": sum(run["succeeded"] for run in runs),
                "traffic": sum(run["traffic"] for run in runs),
                "wall_ms": round(statistics.median(walls), 1),
                "wall_min_ms": min(walls),
                "wall_max_ms": max(walls),
                "cpu_total_ms": round(statistics.median(run["cpu_total_ms"] for run in runs), 1),
                "per_round": runs,
            }
        return summary

    def concurrency(self, impl: Impl) -> Dict[str, Any]:
        """N ADDs at once into N pods; then one TCP request through each router."""
        n = self.args.concurrent
        pods = [self.new_pod(index=i) for i in range(n)]
        try:
            jobs = []
            for i, pod in enumerate(pods):
                conf = config(self.log_file(impl), DESTINATIONS, RESERVED.format(100 + i))
                jobs.append((impl.argv, cni_env("ADD", f"conc{i:03d}", pod), conf, self.workdir))
            t0 = time.perf_counter()
            started = [spawn(*job) for job in jobs]
            runs = [reap(*s) for s in started]
            wall = (time.perf_counter() - t0) * 1000
            ok = sum(1 for r, pod in zip(runs, pods) if r.status == 0 and verify_add(pod, len(DESTINATIONS)) is None)
            traffic = 0
            for i, pod in enumerate(pods):
                try:
                    reply = parse_reply(self.topology.request("tcp", 8080, host=pod.address, timeout=3.0))
                except TopologyError:
                    continue
                if reply.get("peer_ip") == RESERVED.format(100 + i):
                    traffic += 1
            # CPU of all N processes together: with 2 vCPUs, wall >= cpu_total / 2 whatever the plugin waits on.
            cpu_total = sum(r.cpu_ms for r in runs)
            return {
                "n": n,
                "succeeded": ok,
                "traffic": traffic,
                "wall_ms": round(wall, 1),
                "cpu_total_ms": round(cpu_total, 1),
            }
        finally:
            for pod in pods:
                self.topology.remove_pod(pod)

    def peak_rss(self, impl: Impl, runs: int = 5) -> float:
        """Max peak RSS (MB) of ADDs run under /usr/bin/time.

        ru_maxrss from our own wait4 is useless here: a spawned child starts as
        a copy of this (Python, ~18 MB) process and exec keeps that high-water
        mark. /usr/bin/time is small and forks the plugin itself.
        """
        peak = 0.0
        for _ in range(runs):
            pod = self.new_pod()
            self.serial += 1
            cid = f"rss{self.serial:06d}"
            conf = config(self.log_file(impl), DESTINATIONS, RESERVED.format(99))
            out = os.path.join(self.workdir, "rss")
            argv = ["/usr/bin/time", "-f", "%M", "-o", out, *impl.argv]
            try:
                add = run_once(argv, cni_env("ADD", cid, pod), conf, self.workdir)
                if add.status or verify_add(pod, len(DESTINATIONS)):
                    self.results.failures.append(f"rss {impl.name}: ADD failed")
                    continue
                with open(out) as f:
                    peak = max(peak, int(f.read().split()[-1]) / 1024)
                run_once(impl.argv, cni_env("DEL", cid, pod), conf, self.workdir)
            finally:
                self.topology.remove_pod(pod)
        return round(peak, 1)

    def progress(self, text: str) -> None:
        if not self.args.quiet:
            print(f"bench: {text}", file=sys.stderr, flush=True)


# --- report -------------------------------------------------------------------------------------


def report(summary: Dict[str, Any], impls: List[Impl]) -> str:
    phases = summary["phases"]
    ours = impls[0].name
    others = [i.name for i in impls[1:]]
    lines = []
    head = f"{'median wall ms':<22}" + "".join(f"{i.name:>16}" for i in impls)
    head += "".join(f"{'ours/' + o:>16}" for o in others)
    lines.append(head)
    for phase in [p for p in phases if p != "floor"]:
        row = f"{phase.upper():<22}"
        for impl in impls:
            value = phases[phase].get(impl.name, {}).get("median_ms")
            row += f"{value:>16.1f}" if value is not None else f"{'-':>16}"
        for other in others:
            a = phases[phase].get(ours, {}).get("median_ms")
            b = phases[phase].get(other, {}).get("median_ms")
            row += f"{a / b:>15.2f}x" if a and b else f"{'-':>16}"
        lines.append(row)
    rss = summary.get("peak_rss_mb", {})
    lines.append(f"{'ADD peak RSS MB (max)':<22}" + "".join(f"{rss.get(i.name, 0):>16.1f}" for i in impls))
    cpu = f"{'ADD cpu ms (median)':<22}" + "".join(
        f"{phases.get('add', {}).get(i.name, {}).get('cpu_median_ms', 0):>16.1f}" for i in impls
    )
    lines.append(cpu)
    floor = phases.get("floor", {}).get("python3 -I -S", {}).get("median_ms")
    if floor is not None:
        lines.append(f"floor python3 -I -S -c pass: {floor:.1f} ms")
    concurrent = summary.get("concurrent", {})
    for name, conc in concurrent.items():
        total = conc["n"] * conc["rounds"]
        line = (
            f"{conc['n']} concurrent ADDs x {conc['rounds']} rounds, {name}: {conc['succeeded']}/{total} succeeded, "
            f"traffic {conc['traffic']}/{total}, wall median {conc['wall_ms']:.0f} ms "
            f"({conc['wall_min_ms']:.0f}-{conc['wall_max_ms']:.0f}), "
            f"cpu of all {conc['n']} {conc['cpu_total_ms']:.0f} ms"
        )
        if name != ours and concurrent.get(ours, {}).get("wall_ms") and conc["wall_ms"]:
            line += f", ours/{name} {concurrent[ours]['wall_ms'] / conc['wall_ms']:.2f}x"
        lines.append(line)
    lines.append(f"load average before/after: {summary['load_before']} / {summary['load_after']}")
    if summary["failures"]:
        lines.append(f"FAILURES ({len(summary['failures'])}): " + "; ".join(summary["failures"][:10]))
    return "\n".join(lines)


# --- main ---------------------------------------------------------------------------------------


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--impl", default="onedir", help="ours: onedir, onefile or python (default onedir)")
    p.add_argument("--onedir", default=str(REPO / "dist" / "egress-router" / "egress-router"))
    p.add_argument("--onefile", default=str(REPO / "dist" / "onefile" / "egress-router"))
    p.add_argument("--vs", action="append", default=[], metavar="[NAME=]PLUGIN", help="another CNI plugin to time")
    p.add_argument(
        "--baseline", metavar="PLUGIN", help="another build of this plugin (e.g. an older onedir), timed like ours"
    )
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--dest-count", type=int, default=1000)
    p.add_argument("--dest-iterations", type=int, default=10, help="0: skip the scaling phase")
    p.add_argument("--concurrent", type=int, default=32, help="0: skip the concurrency phase")
    p.add_argument(
        "--concurrent-rounds", type=int, default=None, help="rounds of the concurrency phase, medians (default 5)"
    )
    p.add_argument("--quick", action="store_true", help="5 iterations, 3 at 1000 destinations, 8 concurrent, 1 round")
    p.add_argument("--json-out", default=str(DEFAULT_OUT / "results.json"))
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.quick:
        args.iterations, args.warmup, args.dest_iterations, args.concurrent = 5, 1, 3, 8
    if args.concurrent_rounds is None:
        args.concurrent_rounds = 1 if args.quick else 5
    return args


def implementations(args: argparse.Namespace) -> List[Impl]:
    ours = {
        "onedir": [args.onedir],
        "onefile": [args.onefile],
        "python": [sys.executable, "-S", "-c", PYTHON_ENTRY.format(repo=str(REPO))],
    }[args.impl]
    impls = [Impl(f"ours-{args.impl}", ours, True)]
    if args.baseline:
        impls.append(Impl("baseline", [os.path.abspath(args.baseline)], True))
    for spec in args.vs:
        name, _, path = spec.rpartition("=")
        path = os.path.abspath(path)
        impls.append(Impl(name or os.path.basename(path), [path], False))
    for impl in impls:
        if not os.access(impl.argv[0], os.X_OK):
            raise SystemExit(f"bench: {impl.argv[0]} is not executable (scripts/build.sh builds ours)")
    return impls


def leave_host_netns() -> None:
    """unshare(CLONE_NEWNET) (bench.sh already did; twice is harmless): nothing here runs in the host's."""
    before = os.readlink("/proc/self/ns/net")
    if hasattr(os, "unshare"):  # Python 3.12+
        os.unshare(0x40000000)
    else:
        import ctypes

        if ctypes.CDLL("libc.so.6", use_errno=True).unshare(0x40000000) != 0:
            raise SystemExit(f"bench: unshare(CLONE_NEWNET) failed: {os.strerror(ctypes.get_errno())}")
    if os.readlink("/proc/self/ns/net") == before:
        raise SystemExit("bench: could not leave the network namespace")


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    leave_host_netns()
    impls = implementations(args)
    topology = Topology(prefix=f"ert-bench{os.getpid()}")
    with tempfile.TemporaryDirectory(prefix="egress-router-bench-") as workdir:
        from egress_router_cni.netns import NetNS

        load_before = os.getloadavg()
        topology.up()
        try:
            with NetNS(os.path.join(NETNS_DIR, topology.node)) as node:
                node.enter()  # the plugins run where a runtime runs them
                bench = Bench(args, impls, topology, workdir)
                bench.latency()
                if args.dest_iterations:
                    bench.scaling()
                if os.access("/usr/bin/time", os.X_OK):
                    bench.results.notes["peak_rss_mb"] = {impl.name: bench.peak_rss(impl) for impl in impls}
                if args.concurrent:
                    bench.results.notes["concurrent"] = bench.concurrency_rounds()
        finally:
            topology.down()
        summary = bench.results.summary()
        summary["load_before"] = " ".join(f"{x:.2f}" for x in load_before)
        summary["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        summary["implementations"] = {i.name: i.argv for i in impls}
    out = Path(args.json_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1))
    print(report(summary, impls))
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
