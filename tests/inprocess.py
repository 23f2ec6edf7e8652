"""The plugin driven in-process, for fault injection: its CmdArgs, a node-namespace context, snapshots.

The tests still judge the kernel through tests/oracle.py; only the plugin
call itself runs inside the test process (so a hook can fail any ADD step).
"""

from __future__ import annotations

import contextlib
import re
from typing import Any, Dict, Iterator

from tests import oracle
from tests.cni import IFNAME
from tests.topology import Pod


class InjectedFault(Exception):
    """Raised by the test hook inside cmd_add."""


def full_snapshot(ns: str) -> Dict[str, Any]:
    """The oracle's snapshot plus the legacy xtables nat table (the iptables backend's home)."""
    snap = oracle.snapshot(ns)
    text = oracle.netns_exec(ns, "iptables-legacy-save", "-t", "nat")
    snap["iptables"] = [
        re.sub(r"\[\d+:\d+\]", "", line) for line in text.splitlines() if line and not line.startswith("#")
    ]
    return snap


def assert_same(before: Dict[str, Any], after: Dict[str, Any], what: str) -> None:
    diff = oracle.snapshot_diff(before, after)
    assert not diff, f"{what}: the pod namespace changed:\n" + "\n".join(diff)


@contextlib.contextmanager
def inside(netns_path: str) -> Iterator[None]:
    """Run the block with this process in netns_path (the node), as the plugin runs."""
    from egress_router_cni.netns import NetNS

    with NetNS(netns_path) as ns:
        ns.enter()
        yield


def cmd_args(command: str, conf: Dict[str, Any], pod: Pod, container_id: str) -> Any:
    from egress_router_cni.cmdargs import CmdArgs

    return CmdArgs(
        command=command,
        container_id=container_id,
        netns=pod.path,
        ifname=IFNAME,
        args={},
        path="",
        config=conf,
        cni_version=conf["cniVersion"],
    )
