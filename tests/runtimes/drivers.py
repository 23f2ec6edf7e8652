"""The three real CNI clients, each confined to a node namespace and private state dirs.

Recipes: ../shared/docs/real-clients.md (§3 libcni, §2 podman, §4 containerd CRI).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from tests import topology

from .harness import (
    CLIENTS,
    UPSTREAM_PLUGINS,
    CommandError,
    in_netns,
    kill_pids,
    pids_with_argument,
    remove_tree,
    sh,
    stop_process,
    wait_for,
    write_json,
)


def node_path(node: str) -> str:
    return os.path.join(topology.NETNS_DIR, node)


# --- libcni -----------------------------------------------------------------------------------


class Ercni:
    """tests/clients/ercni.go: ADD/CHECK/DEL/VERSION through libcni 1.1.2, run in the node netns."""

    def __init__(self, binary: Path, node: str, plugin_dir: Path, cache_dir: Path) -> None:
        self.binary, self.node, self.cache_dir = binary, node, cache_dir
        self.env = {**os.environ, "CNI_PATH": f"{plugin_dir}:{UPSTREAM_PLUGINS}", "ERCNI_CACHE": str(cache_dir)}

    def run(
        self,
        verb: str,
        config: Path,
        netns: str = "-",
        container_id: str = "-",
        ifname: str = "net1",
        cni_args: str = "",
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        # `ip netns exec` is fine here: there is no container runtime to need /sys/fs/cgroup.
        argv = ["ip", "netns", "exec", self.node, str(self.binary), verb, str(config), netns, container_id, ifname]
        return sh([*argv, cni_args], env=self.env, check=check)

    def add(self, config: Path, netns: str, container_id: str, ifname: str, cni_args: str) -> Dict[str, Any]:
        out = self.run("add", config, netns, container_id, ifname, cni_args).stdout
        result: Dict[str, Any] = json.loads(out)
        return result

    def cached(self, config: Path, container_id: str, ifname: str) -> Optional[Dict[str, Any]]:
        proc = self.run("cached", config, "-", container_id, ifname, check=False)
        return json.loads(proc.stdout) if proc.returncode == 0 else None


# --- podman -----------------------------------------------------------------------------------

_CONTAINERS_CONF = """\
[containers]
# podman asks for 1048576; without CAP_SYS_RESOURCE that is EPERM.
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]

[network]
network_backend = "cni"
cni_plugin_dirs = ["{plugins}", "{upstream}"]
network_config_dir = "{netd}"
default_network = "{default_network}"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
# crun 1.8.1 rejects the hybrid cgroup layout here.
runtime = "runc"
tmp_dir = "{run}/libpod"
"""

_STORAGE_CONF = """\
[storage]
driver = "vfs"
graphroot = "{work}/storage"
runroot = "{run}/storage"
"""


class Podman:
    """podman 4.3 with the CNI backend, private containers.conf/storage.conf, run in the node netns."""

    def __init__(self, work: Path, run: Path, node: str, plugin_dir: Path, rootfs: Path, default_network: str) -> None:
        self.work, self.run_dir, self.node, self.rootfs = work, run, node, rootfs
        self.netd = work / "net.d"
        self.netd.mkdir(parents=True, exist_ok=True)
        conf = _CONTAINERS_CONF.format(
            plugins=plugin_dir, upstream=UPSTREAM_PLUGINS, netd=self.netd, default_network=default_network, run=run
        )
        (work / "containers.conf").write_text(conf)
        (work / "storage.conf").write_text(_STORAGE_CONF.format(work=work, run=run))
        self.env = {
            **os.environ,
            "CONTAINERS_CONF": str(work / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(work / "storage.conf"),
        }

    def __call__(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        # nsenter, not `ip netns exec`: the latter remounts /sys and runc then finds no cgroups.
        return sh(in_netns(node_path(self.node), ["podman", *args]), env=self.env, check=check, timeout=timeout)

    def add_network(self, name: str, doc: Mapping[str, Any]) -> None:
        write_json(self.netd / f"{name}.conflist", doc)

    def run_sleeper(self, name: str) -> str:
        """A detached container (`--rootfs`, no image) on the default network; return its netns path."""
        self("run", "-d", "--name", name, "--rootfs", str(self.rootfs), "/bin/sleep", "600")
        return self.netns(name)

    def inspect(self, container: str, fmt: str) -> str:
        return self("inspect", container, "--format", fmt).stdout.strip()

    def netns(self, container: str) -> str:
        """The container's netns path (/run/netns/netns-UUID)."""
        return self.inspect(container, "{{.NetworkSettings.SandboxKey}}")

    def container_id(self, container: str) -> str:
        return self.inspect(container, "{{.Id}}")

    def close(self) -> None:
        """Remove every container and the private storage; safe after a failure half-way."""
        self("rm", "-af", "-t", "0", check=False)
        self("system", "reset", "-f", check=False)
        remove_tree(self.run_dir)
        remove_tree(self.work / "storage")


# --- containerd CRI ---------------------------------------------------------------------------

_CONTAINERD_TOML = """\
version = 2
root = "{work}/root"
state = "{run}/state"

[grpc]
  address = "{run}/containerd.sock"
[ttrpc]
  address = "{run}/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{work}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{image}"
  # oom_score_adj -998 needs CAP_SYS_RESOURCE, which this machine lacks.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{bin_dir}"
    conf_dir = "{conf_dir}"
    max_conf_num = {max_conf_num}
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      Root = "{run}/runc"
"""
SANDBOX_IMAGE = "localhost/ert-pause:1"
CRI_VENV_PYTHON = CLIENTS / "bin" / "cri-venv" / "bin" / "python"
_CRI_IMPORT = "import grpc, cri_api.v1.api_pb2"


def cri_python() -> Optional[str]:
    """An interpreter that can run tests/clients/cri_pod.py: install-runtimes.sh's venv, or this one."""
    for python in (str(CRI_VENV_PYTHON), sys.executable):
        if os.path.exists(python) and sh([python, "-c", _CRI_IMPORT], check=False).returncode == 0:
            return python
    return None


@dataclass(frozen=True)
class Sandbox:
    """PodSandboxStatus, as tests/clients/cri_pod.py prints it."""

    id: str
    ready: bool
    ip: str
    netns: Optional[str]


class Cri:
    """kubelet's side of the CRI, one tests/clients/cri_pod.py process per call."""

    def __init__(self, python: str, socket: str) -> None:
        self.argv = [python, str(CLIENTS / "cri_pod.py"), socket]

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh([*self.argv, *args], check=check, timeout=120)

    def version(self) -> str:
        return self("version").stdout.strip()

    def run_pod(self, name: str, namespace: str, uid: str, log_dir: Path) -> str:
        """RunPodSandbox: CNI ADD of every network happens inside this call."""
        return self("run", name, namespace, uid, str(log_dir)).stdout.strip()

    def status(self, sandbox_id: str) -> Sandbox:
        return Sandbox(**json.loads(self("status", sandbox_id).stdout))

    def stop_pod(self, sandbox_id: str) -> None:
        """StopPodSandbox: CNI DEL with the netns and the cached prevResult."""
        self("stop", sandbox_id)

    def remove_pod(self, sandbox_id: str) -> None:
        """RemovePodSandbox: CNI DEL again, with an empty netns and no prevResult."""
        self("rm", sandbox_id)

    def list_pods(self) -> List[Dict[str, Any]]:
        pods: List[Dict[str, Any]] = json.loads(self("ls").stdout)
        return pods


class Containerd:
    """A private containerd (CRI plugin on) started in the node netns; stopped by its PID."""

    def __init__(self, work: Path, run: Path, node: str, bin_dir: Path, python: str) -> None:
        self.work, self.run_dir, self.node, self.bin_dir = work, run, node, bin_dir
        self.conf_dir = work / "net.d"
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        self.socket = str(run / "containerd.sock")
        self.log_dir = work / "podlogs"
        self.log_dir.mkdir(exist_ok=True)
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.cri = Cri(python, self.socket)

    def write_config(self, max_conf_num: int) -> Path:
        path = self.work / "config.toml"
        path.write_text(
            _CONTAINERD_TOML.format(
                work=self.work,
                run=self.run_dir,
                image=SANDBOX_IMAGE,
                bin_dir=self.bin_dir,
                conf_dir=self.conf_dir,
                max_conf_num=max_conf_num,
            )
        )
        return path

    def start(self, max_conf_num: int, timeout: float = 30) -> None:
        config = self.write_config(max_conf_num)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.work / "containerd.log", "wb") as log:
            # nsenter execs containerd: this PID is containerd's own.
            self.proc = subprocess.Popen(
                in_netns(node_path(self.node), ["containerd", "--config", str(config)]),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if not wait_for(self._ready, timeout, interval=0.1):
            raise RuntimeError(f"containerd did not start; its log:\n{self.log_tail()}")

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"containerd exited {self.proc.returncode}; its log:\n{self.log_tail()}")
        return os.path.exists(self.socket) and self.cri("version", check=False).returncode == 0

    def log_tail(self, lines: int = 40) -> str:
        path = self.work / "containerd.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def ctr(self, *args: str) -> subprocess.CompletedProcess[str]:
        return sh(["ctr", "--address", self.socket, "--namespace", "k8s.io", *args])

    def import_image(self, archive: Path) -> None:
        self.ctr("images", "import", str(archive))

    def remove_all_sandboxes(self) -> List[str]:
        """Stop and remove whatever sandboxes a failed test left; return the errors."""
        errors = []
        for pod in self.cri.list_pods():
            for verb in ("stop", "rm"):
                proc = self.cri(verb, pod["id"], check=False)
                if proc.returncode != 0:
                    errors.append(proc.stderr.strip())
        return errors

    def close(self) -> List[str]:
        """Remove sandboxes, stop containerd and its shims (by PID), unmount and delete its dirs."""
        errors: List[str] = []
        if self.proc is not None and self.proc.poll() is None:
            try:
                errors = self.remove_all_sandboxes()
            except CommandError as e:
                errors.append(str(e))
        if self.proc is not None:
            stop_process(self.proc)
        # Shims outlive containerd by design; ours name our private socket on their command line.
        kill_pids(pids_with_argument(self.socket))
        for path in (self.run_dir, self.work / "root"):
            try:
                remove_tree(path)
            except (RuntimeError, CommandError) as e:
                errors.append(str(e))
        return errors
