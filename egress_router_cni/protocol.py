"""The CNI process contract (what Go's pkg/skel does): env + stdin in, one JSON document out.

This is the only CNI-mode module that touches the environment and the standard
streams; it receives them as arguments, with the command handlers, so tests
drive it with a dict, byte buffers and fake handlers. It never imports the
plugin: __main__ passes plugin.HANDLERS in.

VERSION is answered here, first, from a prepared string: runtimes ask it far
more often than anything else, so that path imports nothing (not even typing);
everything else is imported when a real command arrives.
"""

from __future__ import annotations

from .versions import VERSION_JSON

# typing costs ~15 ms to import on a cold interpreter: only the type checker sees these.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Any, Dict, Mapping

    from .cmdargs import CmdArgs, Handler
    from .errors import CniError

COMMANDS = ("ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION")
# What each command needs from the environment (the spec's table; DEL may lack CNI_NETNS).
_REQUIRED_ENV = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME"),
    "GC": (),
    "STATUS": (),
}
_MIN_VERSION = {"CHECK": "0.4.0", "GC": "1.1.0", "STATUS": "1.1.0"}


def run(
    environ: Mapping[str, str],
    stdin: IO[bytes],
    stdout: IO[str],
    stderr: IO[str],
    handlers: Mapping[str, Handler],
) -> int:
    """Serve one CNI invocation with these handlers; return the process exit status (0 or 1).

    Prints exactly one line on stdout: the VERSION document, the handler's
    Result in the config's cniVersion, or an error document; nothing when the
    handler returns None.
    """
    if environ.get("CNI_COMMAND", "") == "VERSION":
        stdout.write(VERSION_JSON + "\n")
        stdout.flush()
        return 0
    from .errors import CniError, ErrorCode

    cni_version = "1.1.0"
    try:
        request = read_request(environ, stdin)
        cni_version = request.cni_version
        result = handlers[request.command](request)
        if result is not None:
            _emit(stdout, result.to_dict(cni_version))
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


def error_document(err: CniError, cni_version: str) -> Dict[str, Any]:
    """The spec's error result for err, in cni_version."""
    doc: Dict[str, Any] = {"cniVersion": cni_version, "code": int(err.code), "msg": err.msg}
    if err.details:
        doc["details"] = err.details
    return doc


def read_request(environ: Mapping[str, str], stdin: IO[bytes]) -> CmdArgs:
    """Validate the environment and stdin for ADD/DEL/CHECK/GC/STATUS; raise CniError."""
    from .cmdargs import CmdArgs
    from .config import MAX_CONFIG_BYTES, decode_json, parse_cni_args
    from .errors import InvalidEnvironment, IOFailure

    command = environ.get("CNI_COMMAND", "")
    if command not in _REQUIRED_ENV:
        raise InvalidEnvironment(f"unknown CNI_COMMAND: {command[:32]}", f"expected one of {', '.join(COMMANDS)}")
    # libcni always sets all six variables, some empty: empty means absent.
    env = {k: environ.get(k, "") for k in ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH")}
    missing = [k for k in _REQUIRED_ENV[command] if not env[k]]
    if missing:
        raise InvalidEnvironment(f"required env variables [{','.join(missing)}] missing", f"CNI_COMMAND={command}")
    _check_identity(command, env["CNI_CONTAINERID"], env["CNI_IFNAME"])
    try:
        cni_args = parse_cni_args(env["CNI_ARGS"])
    except ValueError as e:
        raise InvalidEnvironment("invalid CNI_ARGS", str(e)) from None
    try:
        data = stdin.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise IOFailure("error reading from stdin", str(e)) from None
    config = decode_json(data)
    version = _check_config_version(command, config)
    return CmdArgs(
        command=command,
        container_id=env["CNI_CONTAINERID"],
        netns=env["CNI_NETNS"],
        ifname=env["CNI_IFNAME"],
        args=cni_args,
        path=env["CNI_PATH"],
        config=config,
        cni_version=version,
        stdin_data=data,
    )


def _check_identity(command: str, container_id: str, ifname: str) -> None:
    """CNI_CONTAINERID and CNI_IFNAME as the spec restricts them (DEL accepts any ifname)."""
    from .config import NAME_PATTERN, matches_name_pattern, valid_ifname
    from .errors import InvalidEnvironment

    if container_id and not matches_name_pattern(container_id):
        raise InvalidEnvironment("invalid CNI_CONTAINERID", f"{container_id[:80]!r} must match {NAME_PATTERN}")
    if ifname and command != "DEL" and not valid_ifname(ifname):
        raise InvalidEnvironment(
            "invalid CNI_IFNAME",
            f"{ifname[:32]!r}: an interface name is 1-15 bytes, not '.' or '..', without '/', ':' or whitespace",
        )


def _check_config_version(command: str, config: Dict[str, Any]) -> str:
    """The config's cniVersion, checked against what the command needs; errors answer in that version."""
    from .config import check_name, check_version
    from .errors import CniError, IncompatibleVersion
    from .versions import SUPPORTED_VERSIONS

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
    return version


def _emit(stdout: IO[str], doc: Dict[str, Any]) -> None:
    from .jsonio import dumps

    stdout.write(dumps(doc) + "\n")
    stdout.flush()
