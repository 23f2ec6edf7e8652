#!/usr/bin/env python3
"""Drive a CRI runtime's pod sandboxes over its socket, the way kubelet does for networking.

    cri_pod.py SOCK run NAME NAMESPACE UID [LOG_DIR]   print the new sandbox id
    cri_pod.py SOCK status ID                          {"id", "ready", "ip", "netns"} as JSON
    cri_pod.py SOCK stop ID | rm ID                    StopPodSandbox / RemovePodSandbox
    cri_pod.py SOCK ls                                 the sandboxes as a JSON list
    cri_pod.py SOCK version                            runtime name and version

A failed call prints the runtime's error on stderr and exits 1. Uses the
generated CRI v1 stubs of PyPI's container-runtime-interface-api (which pulls
grpcio and protobuf); scripts/install-runtimes.sh puts them in a venv of
their own, tests/clients/bin/cri-venv, which the tests run this file with.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence

import grpc
from cri_api.v1 import api_pb2 as pb
from cri_api.v1 import api_pb2_grpc as rpc

DEFAULT_TIMEOUT = 60.0


@dataclass(frozen=True)
class SandboxStatus:
    """What a test needs from PodSandboxStatus."""

    id: str
    ready: bool
    ip: str
    netns: Optional[str]


def _netns_path(info: Dict[str, str]) -> Optional[str]:
    """The network namespace path from the verbose status (runtimeSpec.linux.namespaces)."""
    spec = json.loads(info.get("info", "{}")).get("runtimeSpec", {})
    for ns in spec.get("linux", {}).get("namespaces", []):
        if ns.get("type") == "network":
            path = ns.get("path")
            return str(path) if path else None
    return None


class CriClient:
    """RuntimeService calls on a unix socket; close() when done."""

    def __init__(self, socket_path: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.channel = grpc.insecure_channel("unix://" + socket_path)
        self.runtime = rpc.RuntimeServiceStub(self.channel)
        self.timeout = timeout

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> CriClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def version(self) -> str:
        reply = self.runtime.Version(pb.VersionRequest(version="v1"), timeout=self.timeout)
        return f"{reply.runtime_name} {reply.runtime_version} (CRI {reply.runtime_api_version})"

    def run_pod(
        self, name: str, namespace: str, uid: str, log_directory: str, annotations: Optional[Dict[str, str]] = None
    ) -> str:
        """RunPodSandbox; return the sandbox id. CNI ADD happens inside this call."""
        config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, namespace=namespace, uid=uid, attempt=0),
            hostname=name,
            log_directory=log_directory,
            annotations=annotations or {},
            linux=pb.LinuxPodSandboxConfig(cgroup_parent=""),
        )
        reply = self.runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=config), timeout=self.timeout)
        return str(reply.pod_sandbox_id)

    def status(self, sandbox_id: str) -> SandboxStatus:
        reply = self.runtime.PodSandboxStatus(
            pb.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id, verbose=True), timeout=self.timeout
        )
        return SandboxStatus(
            id=sandbox_id,
            ready=reply.status.state == pb.SANDBOX_READY,
            ip=reply.status.network.ip,
            netns=_netns_path(dict(reply.info)),
        )

    def stop_pod(self, sandbox_id: str) -> None:
        """StopPodSandbox: CNI DEL with the netns and the cached prevResult."""
        self.runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=self.timeout)

    def remove_pod(self, sandbox_id: str) -> None:
        """RemovePodSandbox: CNI DEL again, with an empty netns and no prevResult."""
        self.runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=self.timeout)

    def list_pods(self) -> List[Dict[str, Any]]:
        reply = self.runtime.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=self.timeout)
        return [
            {
                "id": p.id,
                "namespace": p.metadata.namespace,
                "name": p.metadata.name,
                "ready": p.state == pb.SANDBOX_READY,
            }
            for p in reply.items
        ]


def _run(cri: CriClient, verb: str, rest: List[str]) -> bool:
    """Do one verb, printing its answer; False when the arguments do not fit."""
    if verb == "run" and len(rest) in (3, 4):
        log_dir = rest[3] if len(rest) == 4 else "/tmp"
        print(cri.run_pod(rest[0], rest[1], rest[2], log_directory=log_dir))
    elif verb == "status" and len(rest) == 1:
        print(json.dumps(asdict(cri.status(rest[0]))))
    elif verb == "stop" and len(rest) == 1:
        cri.stop_pod(rest[0])
    elif verb == "rm" and len(rest) == 1:
        cri.remove_pod(rest[0])
    elif verb == "ls" and not rest:
        print(json.dumps(cri.list_pods()))
    elif verb == "version" and not rest:
        print(cri.version())
    else:
        return False
    return True


def main(argv: Sequence[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    sock, verb = argv[0], argv[1]
    with CriClient(sock) as cri:
        try:
            if not _run(cri, verb, list(argv[2:])):
                print(__doc__, file=sys.stderr)
                return 2
        except grpc.RpcError as e:
            # The runtime's own words, e.g. 'failed to setup network for sandbox ...: plugin type=...'
            print(f"cri_pod {verb}: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
