"""Fixtures for driving egress-router through real CNI runtimes: libcni, podman, containerd CRI.

Each runtime runs inside a throwaway node namespace (tests.topology's
PREFIX-node, which holds the macvlan master ermaster0) with its state in
private temp dirs; nothing goes to /etc/cni/net.d or /opt/cni/bin.

A runtime whose packages are missing is skipped with the reason (install
them with scripts/install-runtimes.sh); with ERT_REQUIRE_RUNTIMES=1 (CI) that
is a failure instead, so a broken install cannot pass silently.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Iterator, List, NoReturn, Optional

import pytest

from tests.topology import Topology

from .drivers import SANDBOX_IMAGE, Containerd, Ercni, Podman, cri_python
from .harness import (
    CLIENTS,
    CLUSTER_NETWORK,
    EGRESS_NETWORK,
    UPSTREAM_PLUGINS,
    HostTraces,
    bridge_plugin,
    conflist,
    egress_plugin,
    install_plugin,
    kernel_problem,
    link_upstream_plugins,
    sh,
    write_json,
)

REQUIRE_ENV = "ERT_REQUIRE_RUNTIMES"
INSTALL_HINT = "run scripts/install-runtimes.sh"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "runtimes: drives the plugin through real CNI runtimes (libcni, podman, containerd); "
        "needs scripts/install-runtimes.sh",
    )


def unavailable(reason: str) -> NoReturn:
    """Skip, printing why; fail instead when ERT_REQUIRE_RUNTIMES says the runtimes must be there."""
    if os.environ.get(REQUIRE_ENV, "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (and {REQUIRE_ENV} is set)", pytrace=False)
    pytest.skip(reason)


def missing_commands(names: List[str]) -> List[str]:
    return [n for n in names if shutil.which(n) is None]


def private_run_dir() -> Path:
    """A fresh dir under /run for sockets and runtime state (short paths: sockets are limited to 108 bytes)."""
    return Path("/run") / f"ert-{uuid.uuid4().hex[:8]}"


# --- session: can anything run here? ---------------------------------------------------------


@pytest.fixture(scope="session")
def kernel_ready() -> None:
    if os.geteuid() != 0:
        pytest.skip("the runtime tests need root: they create network namespaces")
    problem = kernel_problem()
    if problem:
        pytest.skip(problem)


@pytest.fixture(scope="session")
def upstream_plugins() -> Path:
    if not (UPSTREAM_PLUGINS / "bridge").exists():
        unavailable(f"containernetworking-plugins not installed ({UPSTREAM_PLUGINS}/bridge missing): {INSTALL_HINT}")
    return UPSTREAM_PLUGINS


@pytest.fixture(scope="session")
def ercni_binary(kernel_ready: None) -> Path:
    """tests/clients/bin/ercni, built from Debian's libcni sources when needed."""
    proc = sh(["bash", str(CLIENTS / "build.sh")], check=False, timeout=300)
    if proc.returncode == 2:
        unavailable(f"libcni driver cannot be built: {proc.stderr.strip()}")
    if proc.returncode != 0:
        pytest.fail(f"tests/clients/build.sh failed:\n{proc.stderr}", pytrace=False)
    return Path(proc.stdout.strip().splitlines()[-1])


def podman_without_cni() -> Optional[str]:
    """Why this podman cannot run CNI plugins at all, or None when it can (or may).

    podman 5 made netavark the only default backend; its CNI backend exists only
    in builds made with the `cni` tag, which Debian 13's podman 5 is not
    ("cni support is not enabled in this build, only netavark"). That is a
    property of the distribution's package, not a failed install, so it is a
    skip even under ERT_REQUIRE_RUNTIMES. podman 4 is always tested.
    """
    version_out = subprocess.run(["podman", "--version"], capture_output=True, text=True, timeout=60).stdout
    found = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", version_out)
    if found is None or int(found.group(1)) < 5:
        return None
    version = found.group(0)
    # Ask podman itself, in throwaway storage (vfs: no mounts; a private mount namespace anyway):
    # only a build without CNI gives this answer.
    with tempfile.TemporaryDirectory(prefix="ert-podman-probe-") as tmp:
        conf = Path(tmp) / "containers.conf"
        conf.write_text(f'[network]\nnetwork_backend = "cni"\n[engine]\ntmp_dir = "{tmp}/libpod"\n')
        isolated = ["unshare", "--mount", "--propagation", "private", "--"]
        storage = ["--storage-driver", "vfs", "--root", f"{tmp}/root", "--runroot", f"{tmp}/run"]
        probe = subprocess.run(
            [*isolated, "podman", *storage, "network", "ls"],
            capture_output=True,
            text=True,
            env={**os.environ, "CONTAINERS_CONF": str(conf)},
            timeout=120,
        )
    said = next((line for line in probe.stderr.splitlines() if "cni support is not enabled" in line.lower()), "")
    if probe.returncode != 0 and said:
        return (
            f"podman {version} cannot run CNI plugins: this distribution builds podman >= 5 with netavark only "
            f"(podman says: {said.strip()!r}); podman 4 is the CNI client tested where it exists"
        )
    return None


@pytest.fixture(scope="session")
def podman_installed(kernel_ready: None, upstream_plugins: Path) -> None:
    missing = missing_commands(["podman", "runc", "conmon"])
    if missing:
        unavailable(f"podman not installed ({', '.join(missing)} missing): {INSTALL_HINT}")
    reason = podman_without_cni()
    if reason:
        pytest.skip(reason)  # a property of the distribution's podman: never a failure


@pytest.fixture(scope="session")
def cri_client_python(kernel_ready: None, upstream_plugins: Path) -> str:
    """The interpreter for tests/clients/cri_pod.py, once containerd, runc and the CRI stubs are there."""
    missing = missing_commands(["containerd", "ctr", "runc", "containerd-shim-runc-v2"])
    if missing:
        unavailable(f"containerd not installed ({', '.join(missing)} missing): {INSTALL_HINT}")
    python = cri_python()
    if python is None:
        unavailable(f"CRI client stubs missing (no tests/clients/bin/cri-venv): {INSTALL_HINT}")
    return python


@pytest.fixture(scope="session")
def plugin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CNI bin dir holding only egress-router (this checkout, or EGRESS_ROUTER_EXE)."""
    directory = tmp_path_factory.mktemp("plugins")
    install_plugin(directory)
    return directory


@pytest.fixture(scope="session")
def rootfs(tmp_path_factory: pytest.TempPathFactory, kernel_ready: None) -> Path:
    """A few host binaries and their libraries: a container root without any image pull."""
    root = tmp_path_factory.mktemp("rootfs") / "root"
    sh(["bash", str(CLIENTS / "mkrootfs.sh"), str(root)])
    return root


# --- module: a node with a lan and an ext behind ermaster0 -----------------------------------


@pytest.fixture(scope="module")
def topo(kernel_ready: None) -> Iterator[Topology]:
    """tests.topology's node/lan/ext/cluster/client namespaces and echo servers, fresh per module."""
    t = Topology()
    t.up()
    try:
        yield t
    finally:
        t.down()


@pytest.fixture(scope="module")
def host_traces() -> Iterator[HostTraces]:
    """Put back the global paths the runtimes create (/var/lib/cni/results entries, /run/containerd, ...)."""
    traces = HostTraces()
    try:
        yield traces
    finally:
        traces.restore()


# --- libcni -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ercni(
    ercni_binary: Path,
    upstream_plugins: Path,
    topo: Topology,
    plugin_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Ercni:
    """The libcni driver in PREFIX-node, caching results in a private dir."""
    return Ercni(ercni_binary, topo.node, plugin_dir, tmp_path_factory.mktemp("ercni-cache"))


# --- podman -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def podman(
    podman_installed: None,
    host_traces: HostTraces,
    topo: Topology,
    plugin_dir: Path,
    rootfs: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Podman]:
    """podman with two networks: CLUSTER_NETWORK (bridge, eth0) and EGRESS_NETWORK (egress-router alone)."""
    work = tmp_path_factory.mktemp("podman")
    p = Podman(work, private_run_dir(), topo.node, plugin_dir, rootfs, CLUSTER_NETWORK)
    p.add_network(CLUSTER_NETWORK, conflist("1.0.0", CLUSTER_NETWORK, [bridge_plugin(work / "ipam")]))
    p.add_network(EGRESS_NETWORK, conflist("1.0.0", EGRESS_NETWORK, [egress_plugin(work / "egress-router-plugin.log")]))
    try:
        yield p
    finally:
        p.close()


# --- containerd -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def containerd(
    cri_client_python: str,
    host_traces: HostTraces,
    topo: Topology,
    rootfs: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Containerd]:
    """A private containerd in PREFIX-node whose CRI attaches 10-bridge (eth0) and 20-egress (eth1)."""
    work = tmp_path_factory.mktemp("containerd")
    bin_dir = work / "bin"
    install_plugin(bin_dir)
    link_upstream_plugins(bin_dir)
    ctd = Containerd(work, private_run_dir(), topo.node, bin_dir, cri_client_python)
    # go-cni attaches both networks in parallel: the bridge sets no default route, so it
    # cannot race with the one egress-router puts in (real-clients.md §4).
    bridge = bridge_plugin(work / "ipam", default_route=False)
    write_json(ctd.conf_dir / "10-bridge.conflist", conflist("1.0.0", CLUSTER_NETWORK, [bridge]))
    egress = egress_plugin(work / "egress-router-plugin.log")
    write_json(ctd.conf_dir / "20-egress.conflist", conflist("1.0.0", EGRESS_NETWORK, [egress]))
    archive = work / "pause.tar"
    pack = [sys.executable, str(CLIENTS / "mk_oci_archive.py"), str(rootfs), str(archive)]
    sh([*pack, SANDBOX_IMAGE, "/bin/sleep", "infinity"])
    errors: List[str] = []
    try:
        ctd.start(max_conf_num=2)
        ctd.import_image(archive)
        yield ctd
    finally:
        errors = ctd.close()
    if errors:
        pytest.fail("containerd cleanup: " + "; ".join(errors), pytrace=False)
