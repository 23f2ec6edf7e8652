"""The CNI process contract (what Go's pkg/skel does): env + stdin in, one JSON document out.

This is the only CNI-mode module that touches the environment and the standard
streams; it receives them as arguments so tests drive it with a dict and
byte buffers.
"""

from __future__ import annotations

import json
import re
from typing import IO, Any, Callable, Dict, Mapping, NamedTuple, Optional

from .config import MAX_CONFIG_BYTES, check_name, check_version, decode_json, valid_ifname
from .config import parse_cni_args as _parse_cni_args
from .errors import CniError, ErrorCode, IncompatibleVersion, InvalidEnvironment, IOFailure
from .versions import SUPPORTED_VERSIONS, VERSION_JSON

COMMANDS = ("ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION")
_CONTAINER_ID_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")
# What each command needs from the environment (the spec's table; DEL may lack CNI_NETNS).
_REQUIRED_ENV = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME"),
    "GC": (),
    "STATUS": (),
}
_MIN_VERSION = {"CHECK": "0.4.0", "GC": "1.1.0", "STATUS": "1.1.0"}


# NamedTuple, not @dataclass: dataclasses imports inspect, ~12 ms of every plugin exec.
class CmdArgs(NamedTuple):
    """One invocation, decoded: the Go skel.CmdArgs plus the parsed config object."""

    command: str
    container_id: str
    netns: str
    ifname: str
    args: Dict[str, str]
    path: str
    config: Dict[str, Any]
    cni_version: str
    stdin_data: bytes = b""


Handler = Callable[[CmdArgs], Optional[Dict[str, Any]]]


def version_info() -> Dict[str, Any]:
    """The VERSION answer (the same document __main__ prints from versions.VERSION_JSON)."""
    result: Dict[str, Any] = json.loads(VERSION_JSON)
    return result


def error_document(err: CniError, cni_version: str) -> Dict[str, Any]:
    doc: Dict[str, Any] = {"cniVersion": cni_version, "code": int(err.code), "msg": err.msg}
    if err.details:
        doc["details"] = err.details
    return doc


def read_request(environ: Mapping[str, str], stdin: IO[bytes]) -> CmdArgs:
    """Validate the environment and stdin for ADD/DEL/CHECK/GC/STATUS; raise CniError."""
    command = environ.get("CNI_COMMAND", "")
    if command not in _REQUIRED_ENV:
        raise InvalidEnvironment(f"unknown CNI_COMMAND: {command[:32]}", f"expected one of {', '.join(COMMANDS)}")
    # libcni always sets all six variables, some empty: empty means absent.
    env = {k: environ.get(k, "") for k in ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH")}
    missing = [k for k in _REQUIRED_ENV[command] if not env[k]]
    if missing:
        raise InvalidEnvironment(f"required env variables [{','.join(missing)}] missing", f"CNI_COMMAND={command}")
    container_id = env["CNI_CONTAINERID"]
    if container_id and not _CONTAINER_ID_RE.fullmatch(container_id):
        raise InvalidEnvironment(
            "invalid CNI_CONTAINERID", f"{container_id[:80]!r} must match {_CONTAINER_ID_RE.pattern}"
        )
    ifname = env["CNI_IFNAME"]
    if ifname and command != "DEL" and not valid_ifname(ifname):
        raise InvalidEnvironment(
            "invalid CNI_IFNAME",
            f"{ifname[:32]!r}: an interface name is 1-15 bytes, not '.' or '..', without '/', ':' or whitespace",
        )
    try:
        cni_args = _parse_cni_args(env["CNI_ARGS"])
    except ValueError as e:
        raise InvalidEnvironment("invalid CNI_ARGS", str(e)) from None
    try:
        data = stdin.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise IOFailure("error reading from stdin", str(e)) from None
    config = decode_json(data)
    version = check_version(config)
    try:
        check_name(config)
        minimum = _MIN_VERSION.get(command)
        if minimum and SUPPORTED_VERSIONS.index(version) < SUPPORTED_VERSIONS.index(minimum):
            raise IncompatibleVersion(
                f"config version does not allow {command}",
                f"config is {version!r}; {command} needs {minimum} or later",
            )
    except CniError as e:
        e.cni_version = version  # answer in the config's own version
        raise
    return CmdArgs(
        command=command,
        container_id=container_id,
        netns=env["CNI_NETNS"],
        ifname=ifname,
        args=cni_args,
        path=env["CNI_PATH"],
        config=config,
        cni_version=version,
        stdin_data=data,
    )


def run(
    environ: Mapping[str, str],
    stdin: IO[bytes],
    stdout: IO[str],
    stderr: IO[str],
    handlers: Optional[Mapping[str, Handler]] = None,
) -> int:
    """Serve one CNI invocation; return the process exit status (0 or 1)."""
    command = environ.get("CNI_COMMAND", "")
    if command == "VERSION":
        _emit(stdout, version_info())
        return 0
    cni_version = "1.1.0"
    try:
        request = read_request(environ, stdin)
        cni_version = request.cni_version
        if handlers is None:
            from . import plugin  # deferred: VERSION and bad requests never load netlink code

            handlers = plugin.HANDLERS
        output = handlers[request.command](request)
        if output is not None:
            _emit(stdout, output)
        return 0
    except CniError as e:
        _emit(stdout, error_document(e, e.cni_version or cni_version))
        stderr.write(f"egress-router: {e}\n")
        return 1
    except Exception as e:
        import traceback  # only on this path: ~2 ms of imports

        stderr.write(traceback.format_exc())
        err = CniError(f"internal error: {type(e).__name__}: {e}", code=ErrorCode.INTERNAL)
        _emit(stdout, error_document(err, cni_version))
        return 1


def _emit(stdout: IO[str], doc: Dict[str, Any]) -> None:
    stdout.write(json.dumps(doc) + "\n")
    stdout.flush()
