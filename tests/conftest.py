"""Shared fixtures, and the guard that keeps the test run out of the host's network namespace.

When run as root, importing this file moves the pytest process into a fresh,
empty network namespace (unshare(CLONE_NEWNET)) before any test runs. The
tests only ever use namespaces they create by name, but should a bug run an
`ip` command without `-n`, it lands in that empty namespace, never on the
machine's real interfaces. `ip netns add/exec` and nsenter keep working from
there: /run/netns is in the (shared) mount namespace.
"""

from __future__ import annotations

import ctypes
import os
import shutil
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

from tests.cni import Plugin
from tests.topology import Pod, Topology

CLONE_NEWNET = 0x40000000
REQUIRED_TOOLS = ("ip", "nft")


def _netns_id(pid: str = "self") -> str:
    return os.readlink(f"/proc/{pid}/ns/net")


def _unshare_net() -> None:
    if hasattr(os, "unshare"):  # Python 3.12+
        os.unshare(CLONE_NEWNET)
        return
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _isolate() -> Optional[str]:
    """Enter a fresh network namespace when root; return why netns tests cannot run, or None."""
    if os.geteuid() != 0:
        return "needs root (creates network namespaces)"
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing:
        return f"needs {' and '.join(missing)} (apt-get install iproute2 nftables)"
    before = _netns_id()
    try:
        _unshare_net()
    except OSError as e:
        return f"cannot leave the host network namespace: unshare(CLONE_NEWNET) failed: {e}"
    if _netns_id() == before:
        return "unshare(CLONE_NEWNET) did not change the network namespace"
    return None


HOST_NETNS = _netns_id()
NETNS_SKIP_REASON = _isolate()


def pytest_report_header() -> List[str]:
    if NETNS_SKIP_REASON:
        return [f"netns tests: skipped ({NETNS_SKIP_REASON})"]
    return [f"netns tests: enabled; pytest runs in a private network namespace {_netns_id()} (started in {HOST_NETNS})"]


def pytest_collection_modifyitems(items: List[pytest.Item]) -> None:
    if NETNS_SKIP_REASON is None:
        return
    skip = pytest.mark.skip(reason=NETNS_SKIP_REASON)
    for item in items:
        if "netns" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def topology() -> Iterator[Topology]:
    """The node, lan, ext (with echo servers), cluster and client namespaces.

    Name: topology. Scope: session. Depends: root, ip, nft.
    Removed at the end of the session whatever happened.
    """
    assert _netns_id() != HOST_NETNS, "refusing to build a topology from the host network namespace"
    topo = Topology()
    topo.up()
    try:
        yield topo
    finally:
        topo.down()


@pytest.fixture
def pod(topology: Topology) -> Iterator[Pod]:
    """A fresh router pod namespace: eth0 10.128.10.18/23, default via 10.128.10.1.

    Name: pod. Scope: function. Depends: topology.
    """
    new_pod = topology.add_pod()
    try:
        yield new_pod
    finally:
        topology.remove_pod(new_pod)


@pytest.fixture
def dad_pod(topology: Topology) -> Iterator[Pod]:
    """A fresh router pod whose new interfaces (the plugin's net1) run IPv6 duplicate address detection.

    Name: dad_pod. Scope: function. Depends: topology.
    """
    new_pod = topology.add_pod(dad=True)
    try:
        yield new_pod
    finally:
        topology.remove_pod(new_pod)


@pytest.fixture
def plugin(topology: Topology) -> Plugin:
    """The executable under test, run inside the node namespace, with a fresh container id.

    Name: plugin. Scope: function. Depends: topology.
    """
    return Plugin(topology.node)


@pytest.fixture
def log_file(tmp_path: Path) -> Path:
    """Where the plugin writes its debug log in this test (the manual's /tmp/egress-router-log)."""
    return tmp_path / "egress-router-log"
