"""Run the plugin under test as a separate process, the way a container runtime does.

The executable is a black box: env vars + JSON on stdin in, one JSON document
(or nothing) on stdout, exit status. EGRESS_ROUTER_EXE selects it (a shell-style
command line, e.g. "dist/egress-router" for the PyInstaller build); the default
is this interpreter's `-m egress_router_cni`.
"""

from __future__ import annotations

import copy
import json
import os
import shlex
import subprocess
import sys
import uuid
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Union

from tests.topology import GATEWAY, MASTER, RESERVED_IP

ALL_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
CHECK_VERSIONS = ("0.4.0", "1.0.0", "1.1.0")
IFNAME = "net1"
NETWORK_NAME = "egress-router-cni-nad"
DESTINATIONS = ("80 UDP 10.0.0.99/30", "8080 TCP 203.0.113.26/30 80", "8443 TCP 203.0.113.27/30 443")
PLUGIN_TIMEOUT = 60.0
Config = Dict[str, Any]


def plugin_command() -> List[str]:
    """The argv prefix of the executable under test."""
    exe = os.environ.get("EGRESS_ROUTER_EXE", "").strip()
    return shlex.split(exe) if exe else [sys.executable, "-m", "egress_router_cni"]


def router_config(version: str, log_file: str, **changes: Any) -> Config:
    """The product manual's router config at VERSION; CHANGES replace top-level keys (None deletes one)."""
    conf: Config = {
        "cniVersion": version,
        "name": NETWORK_NAME,
        "type": "egress-router",
        "interfaceArgs": {"master": MASTER, "mode": "bridge"},
        "ip": {
            "addresses": [f"{RESERVED_IP}/24"],
            "gateway": GATEWAY,
            "destinations": list(DESTINATIONS),
        },
        "log_file": log_file,
        "log_level": "debug",
    }
    for key, value in changes.items():
        if value is None:
            conf.pop(key, None)
        else:
            conf[key] = copy.deepcopy(value)
    return conf


def with_ip(conf: Config, **changes: Any) -> Config:
    """A copy of CONF whose "ip" object has CHANGES applied (None deletes a key)."""
    new = copy.deepcopy(conf)
    for key, value in changes.items():
        if value is None:
            new["ip"].pop(key, None)
        else:
            new["ip"][key] = value
    return new


def with_prev_result(conf: Config, result: Mapping[str, Any]) -> Config:
    """What libcni sends on CHECK/DEL: the config plus the cached ADD result as prevResult."""
    new = copy.deepcopy(conf)
    new["prevResult"] = dict(result)
    return new


def single_json_document(stdout: str) -> Any:
    """Decode stdout, which must hold exactly one JSON document and nothing else; raise AssertionError."""
    text = stdout.strip()
    assert text, "stdout is empty; expected one JSON document"
    try:
        doc, end = json.JSONDecoder().raw_decode(text)
    except ValueError as e:
        raise AssertionError(f"stdout is not JSON ({e}): {stdout!r}") from None
    assert not text[end:].strip(), f"stdout holds more than one JSON document: {stdout!r}"
    return doc


@dataclass(frozen=True)
class Outcome:
    """What one plugin run produced."""

    returncode: int
    stdout: str
    stderr: str

    def document(self) -> Any:
        return single_json_document(self.stdout)

    def describe(self) -> str:
        return f"exit {self.returncode}\n--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"


class Plugin:
    """Invokes the executable inside the node namespace with CNI_* env and a config on stdin."""

    def __init__(self, node_ns: str, command: Optional[List[str]] = None) -> None:
        self.node_ns = node_ns
        self.command = command or plugin_command()
        self.container_id = uuid.uuid4().hex + uuid.uuid4().hex  # runtimes use 64 hex digits

    def cni_args(self) -> str:
        return (
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=openshift-egress-router;"
            f"K8S_POD_NAME=egress-router-cni-deployment-{self.container_id[:5]};"
            f"K8S_POD_INFRA_CONTAINER_ID={self.container_id}"
        )

    def run(
        self,
        command: str,
        config: Union[Config, str, bytes, None],
        netns: str = "",
        env: Optional[Mapping[str, Optional[str]]] = None,
    ) -> Outcome:
        """Run one CNI command. ENV overrides the CNI_* variables; a None value unsets one."""
        variables: Dict[str, Optional[str]] = {
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": self.container_id,
            "CNI_NETNS": netns,
            "CNI_IFNAME": IFNAME,
            "CNI_ARGS": self.cni_args(),
            "CNI_PATH": "/opt/cni/bin",
        }
        variables.update(env or {})
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
        full_env.update({k: v for k, v in variables.items() if v is not None})
        if isinstance(config, dict):
            stdin = json.dumps(config).encode()
        elif isinstance(config, str):
            stdin = config.encode()
        else:
            stdin = config or b""
        proc = subprocess.run(
            ["ip", "netns", "exec", self.node_ns, *self.command],
            input=stdin,
            capture_output=True,
            env=full_env,
            timeout=PLUGIN_TIMEOUT,
            check=False,
        )
        return Outcome(proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace"))

    def add(self, config: Config, netns: str) -> Outcome:
        return self.run("ADD", config, netns)

    def delete(self, config: Config, netns: str) -> Outcome:
        return self.run("DEL", config, netns)

    def check(self, config: Config, netns: str) -> Outcome:
        return self.run("CHECK", config, netns)
