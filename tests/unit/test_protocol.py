"""protocol.run driven like Go's skel_test: a dict environment, byte/str buffers and fake handlers.

No netlink, no root: the handlers dict replaces plugin.HANDLERS.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional

import pytest

from egress_router_cni import protocol
from egress_router_cni.cmdargs import CmdArgs
from egress_router_cni.config import MAX_CONFIG_BYTES, SUPPORTED_VERSIONS, parse_netconf
from egress_router_cni.errors import CniError, ErrorCode, NatError, NotAvailable, UnknownContainer
from egress_router_cni.result import Interface, IPConfig, Result
from egress_router_cni.versions import VERSION_JSON

if TYPE_CHECKING:
    from egress_router_cni.cmdargs import Handler

ROOT = Path(__file__).resolve().parents[2]
NETNS = "/var/run/netns/cni-1234"
CONTAINER_ID = "3f2a9c0e1b7d"


def config(version: str = "1.0.0", **extra: Any) -> Dict[str, Any]:
    return {
        "cniVersion": version,
        "name": "egress-router-cni-nad",
        "type": "egress-router",
        "ip": {"addresses": ["192.168.12.99/24"], "gateway": "192.168.12.1", "destinations": ["80 tcp 10.0.0.99"]},
        **extra,
    }


def env(command: str, **overrides: Optional[str]) -> Dict[str, str]:
    """The environment libcni sets: all six variables (GC/STATUS get empty ones)."""
    base = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": CONTAINER_ID,
        "CNI_NETNS": NETNS,
        "CNI_IFNAME": "net1",
        "CNI_ARGS": "",
        "CNI_PATH": "/opt/cni/bin",
    }
    if command in ("GC", "STATUS"):
        base.update(CNI_CONTAINERID="", CNI_NETNS="", CNI_IFNAME="")
    for key, value in overrides.items():
        if value is None:
            base.pop(key, None)
        else:
            base[key] = value
    return base


def add_result(args: CmdArgs) -> Result:
    return Result(
        interfaces=[Interface(name=args.ifname, sandbox=args.netns)],
        ips=[IPConfig(address="192.168.12.99/24", gateway="192.168.12.1", interface=0)],
    )


@dataclass
class Recorder:
    """Fake handlers: ADD returns a result, the others None; every call is recorded."""

    calls: List[CmdArgs] = field(default_factory=list)
    raises: Optional[BaseException] = None

    def handler(self, args: CmdArgs) -> Optional[Result]:
        self.calls.append(args)
        if self.raises is not None:
            raise self.raises
        return add_result(args) if args.command == "ADD" else None

    def handlers(self) -> Dict[str, Handler]:
        return {c: self.handler for c in ("ADD", "DEL", "CHECK", "GC", "STATUS")}


@dataclass
class Outcome:
    rc: int
    stdout: str
    stderr: str

    @property
    def doc(self) -> Dict[str, Any]:
        return one_json_document(self.stdout)


def one_json_document(text: str) -> Dict[str, Any]:
    """The single JSON document in text; fail if there is none, or anything else besides it."""
    decoder = json.JSONDecoder()
    doc, end = decoder.raw_decode(text)
    assert text[end:].strip() == "", f"more than one document on stdout: {text!r}"
    assert isinstance(doc, dict)
    return doc


def invoke(
    environ: Mapping[str, str],
    stdin: Any = None,
    recorder: Optional[Recorder] = None,
    handlers: Optional[Mapping[str, Any]] = None,
) -> Outcome:
    if stdin is None:
        stdin = config()
    if isinstance(stdin, dict):
        stdin = json.dumps(stdin).encode()
    reader = io.BytesIO(stdin) if isinstance(stdin, bytes) else stdin
    out, err = io.StringIO(), io.StringIO()
    if handlers is None:
        handlers = (recorder or Recorder()).handlers()
    rc = protocol.run(environ, reader, out, err, handlers)
    return Outcome(rc, out.getvalue(), err.getvalue())


def assert_error(outcome: Outcome, code: int) -> Dict[str, Any]:
    assert outcome.rc == 1
    doc = outcome.doc
    assert doc["code"] == code, doc
    assert isinstance(doc["msg"], str)
    assert doc["msg"]
    assert "cniVersion" in doc
    return doc


# --- VERSION ---------------------------------------------------------------------------------


def test_protocol_version_reports_every_spec_version() -> None:
    outcome = invoke({"CNI_COMMAND": "VERSION"}, b'{"cniVersion":"1.1.0"}')
    assert outcome.rc == 0
    assert outcome.doc == {
        "cniVersion": "1.1.0",
        "supportedVersions": ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"],
    }


def test_protocol_version_ignores_stdin_and_other_env() -> None:
    # libcni sends CNI_NETNS/CNI_IFNAME/CNI_PATH=dummy; skel ignores stdin for VERSION.
    outcome = invoke({"CNI_COMMAND": "VERSION", "CNI_IFNAME": "dummy", "CNI_NETNS": "dummy"}, b"not json at all")
    assert outcome.rc == 0
    assert outcome.doc["supportedVersions"] == list(SUPPORTED_VERSIONS)


def test_protocol_version_does_not_call_a_handler() -> None:
    recorder = Recorder()
    invoke({"CNI_COMMAND": "VERSION"}, b"", recorder)
    assert recorder.calls == []


# --- commands and environment ----------------------------------------------------------------


@pytest.mark.parametrize("command", ["FOO", "add", "Add", "", "ADD ", "VERSIONS"])
def test_protocol_unknown_command_is_code_4(command: str) -> None:
    doc = assert_error(invoke(env(command)), ErrorCode.INVALID_ENVIRONMENT)
    assert "unknown CNI_COMMAND" in doc["msg"]


def test_protocol_absent_command_is_code_4() -> None:
    assert_error(invoke(env("ADD", CNI_COMMAND=None)), ErrorCode.INVALID_ENVIRONMENT)


def test_protocol_missing_env_vars_are_all_named() -> None:
    doc = assert_error(invoke({"CNI_COMMAND": "ADD"}), ErrorCode.INVALID_ENVIRONMENT)
    assert "[CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME]" in doc["msg"]


@pytest.mark.parametrize("name", ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"])
@pytest.mark.parametrize("command", ["ADD", "CHECK"])
def test_protocol_missing_env_var_is_named(command: str, name: str) -> None:
    stdin = config("1.0.0")
    doc = assert_error(invoke(env(command, **{name: None}), stdin), ErrorCode.INVALID_ENVIRONMENT)
    assert f"[{name}]" in doc["msg"]


@pytest.mark.parametrize("name", ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"])
def test_protocol_empty_env_value_counts_as_absent(name: str) -> None:
    doc = assert_error(invoke(env("ADD", **{name: ""})), ErrorCode.INVALID_ENVIRONMENT)
    assert name in doc["msg"]


@pytest.mark.parametrize("netns", [None, ""])
def test_protocol_del_without_netns_reaches_the_handler(netns: Optional[str]) -> None:
    recorder = Recorder()
    outcome = invoke(env("DEL", CNI_NETNS=netns), recorder=recorder)
    assert (outcome.rc, outcome.stdout) == (0, "")
    assert recorder.calls[0].netns == ""


@pytest.mark.parametrize("name", ["CNI_CONTAINERID", "CNI_IFNAME"])
def test_protocol_del_still_needs_container_id_and_ifname(name: str) -> None:
    assert_error(invoke(env("DEL", **{name: ""})), ErrorCode.INVALID_ENVIRONMENT)


@pytest.mark.parametrize("command", ["GC", "STATUS"])
def test_protocol_gc_and_status_need_no_container_env(command: str) -> None:
    recorder = Recorder()
    outcome = invoke(env(command), config("1.1.0"), recorder)
    assert (outcome.rc, outcome.stdout) == (0, "")
    assert recorder.calls[0].command == command


def test_protocol_cni_path_is_optional() -> None:
    assert invoke(env("ADD", CNI_PATH=None)).rc == 0


@pytest.mark.parametrize("container_id", ["-abc", ".abc", "a b", "a/b", "a;b", "abc\x00", "ü123"])
def test_protocol_bad_container_id_is_code_4(container_id: str) -> None:
    doc = assert_error(invoke(env("ADD", CNI_CONTAINERID=container_id)), ErrorCode.INVALID_ENVIRONMENT)
    assert "CNI_CONTAINERID" in doc["msg"]


@pytest.mark.parametrize("container_id", ["a", "3f2a9c0e1b7d", "cnitool-77383ca0a0715733ca6f", "a_b.c-d"])
def test_protocol_good_container_id_is_accepted(container_id: str) -> None:
    recorder = Recorder()
    assert invoke(env("ADD", CNI_CONTAINERID=container_id), recorder=recorder).rc == 0
    assert recorder.calls[0].container_id == container_id


@pytest.mark.parametrize(
    "ifname", [".", "..", "a/b", "a:b", "a b", "net\t1", "n" * 16, "é" * 8, "x" * 4096], ids=lambda s: repr(s)[:20]
)
@pytest.mark.parametrize("command", ["ADD", "CHECK"])
def test_protocol_bad_ifname_is_code_4(command: str, ifname: str) -> None:
    doc = assert_error(invoke(env(command, CNI_IFNAME=ifname)), ErrorCode.INVALID_ENVIRONMENT)
    assert "CNI_IFNAME" in doc["msg"]


def test_protocol_ifname_of_15_bytes_is_accepted() -> None:
    assert invoke(env("ADD", CNI_IFNAME="n" * 15)).rc == 0


def test_protocol_kubernetes_cni_args_are_accepted_and_passed_on() -> None:
    recorder = Recorder()
    args = (
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=egress;K8S_POD_NAME=router-0;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u1"
    )
    assert invoke(env("ADD", CNI_ARGS=args), recorder=recorder).rc == 0
    assert recorder.calls[0].args["K8S_POD_NAME"] == "router-0"
    assert recorder.calls[0].args["IgnoreUnknown"] == "1"


@pytest.mark.parametrize("cni_args", ["K8S_POD_NAME", "IgnoreUnknown=1;garbage", "=value"])
def test_protocol_malformed_cni_args_pair_is_code_4(cni_args: str) -> None:
    doc = assert_error(invoke(env("ADD", CNI_ARGS=cni_args)), ErrorCode.INVALID_ENVIRONMENT)
    assert "CNI_ARGS" in doc["msg"]


def test_protocol_handler_gets_every_field() -> None:
    recorder = Recorder()
    stdin = json.dumps(config("0.4.0")).encode()
    invoke(env("ADD", CNI_ARGS="K8S_POD_NAME=p"), stdin, recorder)
    args = recorder.calls[0]
    assert (args.command, args.container_id, args.netns, args.ifname, args.path) == (
        "ADD",
        CONTAINER_ID,
        NETNS,
        "net1",
        "/opt/cni/bin",
    )
    assert args.args == {"K8S_POD_NAME": "p"}
    assert args.config == config("0.4.0")
    assert args.cni_version == "0.4.0"
    assert args.stdin_data == stdin


# --- stdin, JSON and versions ----------------------------------------------------------------


@pytest.mark.parametrize(
    "stdin",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"{", id="truncated"),
        pytest.param(b"[1, 2]", id="array"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
        pytest.param(b'{"cniVersion": "1.0.0"} trailing', id="trailing-garbage"),
    ],
)
def test_protocol_bad_json_is_code_6(stdin: bytes) -> None:
    assert_error(invoke(env("ADD"), stdin), ErrorCode.DECODING_FAILURE)


@pytest.mark.parametrize("version", ["0.5.0", "1.0.1", "2.0.0", "1.0"])
def test_protocol_unsupported_version_is_code_1(version: str) -> None:
    doc = assert_error(invoke(env("ADD"), config(version)), ErrorCode.INCOMPATIBLE_VERSION)
    assert version in doc["details"]


def test_protocol_non_string_version_is_code_6() -> None:
    assert_error(invoke(env("ADD"), config(version=1.0)), ErrorCode.DECODING_FAILURE)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", [None, "", "-x", "a b"])
def test_protocol_bad_network_name_is_code_7(name: Optional[str]) -> None:
    stdin = config()
    stdin["name"] = name
    assert_error(invoke(env("DEL"), stdin), ErrorCode.INVALID_CONFIG)


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0", "0.3.0", "0.3.1"])
def test_protocol_check_below_0_4_0_is_code_1(version: str) -> None:
    recorder = Recorder()
    doc = assert_error(invoke(env("CHECK"), config(version), recorder), ErrorCode.INCOMPATIBLE_VERSION)
    assert doc["msg"] == "config version does not allow CHECK"
    assert recorder.calls == []


@pytest.mark.parametrize("version", ["0.4.0", "1.0.0", "1.1.0"])
def test_protocol_check_from_0_4_0_reaches_the_handler(version: str) -> None:
    outcome = invoke(env("CHECK"), config(version))
    assert (outcome.rc, outcome.stdout) == (0, "")


@pytest.mark.parametrize("version", ["0.4.0", "1.0.0"])
@pytest.mark.parametrize("command", ["GC", "STATUS"])
def test_protocol_gc_and_status_below_1_1_0_are_code_1(command: str, version: str) -> None:
    doc = assert_error(invoke(env(command), config(version)), ErrorCode.INCOMPATIBLE_VERSION)
    assert command in doc["msg"]


def test_protocol_stdin_read_error_is_code_5() -> None:
    class Broken(io.RawIOBase):
        def read(self, size: int = -1) -> bytes:
            raise OSError(5, "Input/output error")

    assert_error(invoke(env("ADD"), Broken()), ErrorCode.IO_FAILURE)


# --- dispatch and output ---------------------------------------------------------------------


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_protocol_add_prints_the_handler_result_in_the_config_version(version: str) -> None:
    outcome = invoke(env("ADD"), config(version))
    assert outcome.rc == 0
    assert outcome.doc["cniVersion"] == version
    if version in ("0.1.0", "0.2.0"):
        assert outcome.doc["ip4"] == {"ip": "192.168.12.99/24", "gateway": "192.168.12.1"}
    else:
        assert outcome.doc["interfaces"] == [{"name": "net1", "sandbox": NETNS}]
        assert outcome.doc["ips"][0]["address"] == "192.168.12.99/24"


@pytest.mark.parametrize("command", ["DEL", "CHECK"])
def test_protocol_del_and_check_print_nothing(command: str) -> None:
    outcome = invoke(env(command), config("1.0.0"))
    assert (outcome.rc, outcome.stdout) == (0, "")


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (NatError("nftables rejected the change", "Error: syntax error"), 103),
        (NotAvailable("egress router cannot be set up on this node", "no master"), 50),
        (UnknownContainer("netns not found", NETNS), 3),
        (CniError("try again", code=ErrorCode.TRY_AGAIN_LATER), 11),
    ],
)
def test_protocol_handler_cni_error_passes_its_code_through(error: CniError, code: int) -> None:
    recorder = Recorder(raises=error)
    doc = assert_error(invoke(env("ADD"), recorder=recorder), code)
    assert doc["msg"] == error.msg
    assert doc.get("details", "") == error.details


def test_protocol_error_document_echoes_the_config_version() -> None:
    recorder = Recorder(raises=NatError("nftables rejected the change"))
    assert assert_error(invoke(env("ADD"), config("0.4.0"), recorder), 103)["cniVersion"] == "0.4.0"


def test_protocol_config_error_found_by_the_protocol_layer_echoes_the_config_version() -> None:
    stdin = config("0.4.0")
    stdin["name"] = "bad name"
    assert assert_error(invoke(env("ADD"), stdin), ErrorCode.INVALID_CONFIG)["cniVersion"] == "0.4.0"


def test_protocol_version_gate_error_echoes_the_config_version() -> None:
    assert assert_error(invoke(env("CHECK"), config("0.3.1")), ErrorCode.INCOMPATIBLE_VERSION)["cniVersion"] == "0.3.1"


def test_protocol_error_without_details_has_no_details_key() -> None:
    recorder = Recorder(raises=NatError("nftables rejected the change"))
    assert "details" not in assert_error(invoke(env("ADD"), recorder=recorder), 103)


def test_protocol_cni_error_is_also_described_on_stderr() -> None:
    recorder = Recorder(raises=NatError("nftables rejected the change", "details here"))
    outcome = invoke(env("ADD"), recorder=recorder)
    assert "nftables rejected the change: details here" in outcome.stderr


def test_protocol_unexpected_exception_is_code_999_with_json_on_stdout() -> None:
    recorder = Recorder(raises=RuntimeError("boom"))
    outcome = invoke(env("ADD"), recorder=recorder)
    doc = assert_error(outcome, ErrorCode.INTERNAL)
    assert "RuntimeError" in doc["msg"]
    assert "boom" in doc["msg"]


def test_protocol_unexpected_exception_traceback_goes_only_to_stderr() -> None:
    outcome = invoke(env("ADD"), recorder=Recorder(raises=RuntimeError("boom")))
    assert "Traceback (most recent call last)" in outcome.stderr
    assert "RuntimeError: boom" in outcome.stderr
    assert "Traceback" not in outcome.stdout


def test_protocol_unserialisable_handler_output_is_one_error_document() -> None:
    outcome = invoke(env("ADD"), handlers={"ADD": lambda args: Result(dns={"bad": object()})})
    assert_error(outcome, ErrorCode.INTERNAL)


SCENARIOS = [
    pytest.param(env("VERSION"), config(), None, id="version"),
    pytest.param(env("ADD"), config(), None, id="add-ok"),
    pytest.param(env("FOO"), config(), None, id="unknown-command"),
    pytest.param({"CNI_COMMAND": "ADD"}, config(), None, id="missing-env"),
    pytest.param(env("ADD"), b"{", None, id="bad-json"),
    pytest.param(env("ADD"), config("9.9.9"), None, id="bad-version"),
    pytest.param(env("CHECK"), config("0.3.1"), None, id="check-too-old"),
    pytest.param(env("ADD"), config(), NatError("x", "y"), id="handler-cni-error"),
    pytest.param(env("ADD"), config(), RuntimeError("boom\n{}"), id="handler-crash"),
    pytest.param(env("DEL"), config(), KeyError("k"), id="del-crash"),
]


@pytest.mark.parametrize(("environ", "stdin", "raises"), SCENARIOS)
def test_protocol_writes_exactly_one_json_document(
    environ: Dict[str, str], stdin: Any, raises: Optional[BaseException]
) -> None:
    outcome = invoke(environ, stdin, Recorder(raises=raises))
    one_json_document(outcome.stdout)
    assert outcome.stdout.count("\n") == 1


# --- oversized input is refused quickly ------------------------------------------------------


class EndlessStdin(io.RawIOBase):
    """A 100 MB stdin that is never held in memory: bytes are made as they are read."""

    def __init__(self, size: int = 100 * 1024 * 1024) -> None:
        self.remaining = size
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        n = self.remaining if size < 0 else min(size, self.remaining)
        if size < 0:
            raise AssertionError("the plugin must not read an unbounded stdin")
        self.remaining -= n
        self.consumed += n
        return b" " * n


def test_protocol_100_mb_stdin_is_refused_without_reading_it_all() -> None:
    stdin = EndlessStdin()
    started = time.monotonic()
    doc = assert_error(invoke(env("ADD"), stdin), ErrorCode.INVALID_CONFIG)
    assert time.monotonic() - started < 5
    assert stdin.consumed <= MAX_CONFIG_BYTES + 1
    assert "too large" in doc["msg"]


def test_protocol_100_000_destinations_are_refused_quickly() -> None:
    stdin = config()
    stdin["ip"]["destinations"] = ["1.1.1.1"] * 100_000
    data = json.dumps(stdin, separators=(",", ":")).encode()
    assert len(data) <= MAX_CONFIG_BYTES  # so it is the destination cap, not the size cap, that refuses it

    def parse_then_add(args: CmdArgs) -> Result:
        parse_netconf(args.config)
        return add_result(args)

    started = time.monotonic()
    doc = assert_error(invoke(env("ADD"), data, handlers={"ADD": parse_then_add}), ErrorCode.INVALID_CONFIG)
    assert time.monotonic() - started < 5
    assert "too many destinations" in doc["msg"]


def test_protocol_4_kb_ifname_is_refused_with_a_short_message() -> None:
    outcome = invoke(env("ADD", CNI_IFNAME="x" * 4096))
    doc = assert_error(outcome, ErrorCode.INVALID_ENVIRONMENT)
    assert len(outcome.stdout) < 1024
    assert "CNI_IFNAME" in doc["msg"]


def test_protocol_4_kb_container_id_with_a_bad_byte_is_refused_with_a_short_message() -> None:
    outcome = invoke(env("ADD", CNI_CONTAINERID="a" * 4096 + "/"))
    assert_error(outcome, ErrorCode.INVALID_ENVIRONMENT)
    assert len(outcome.stdout) < 1024


# --- regressions ------------------------------------------------------------------------------


def test_protocol_container_id_with_trailing_newline_is_code_4() -> None:
    """Regression: _CONTAINER_ID_RE used '$', which also matches before a trailing newline."""
    assert_error(invoke(env("ADD", CNI_CONTAINERID="abc\n")), ErrorCode.INVALID_ENVIRONMENT)


def test_version_through_the_entry_point_loads_no_command_code() -> None:
    """VERSION is answered by protocol.run alone: no config, error, netlink or typing module is imported."""
    import subprocess
    import sys

    probe = (
        f"import os, sys\nsys.path.insert(0, {str(ROOT)!r})\n"
        "os._exit = lambda status: (print(sorted(m for m in sys.modules if m.startswith(('egress', 'typing'))),"
        " file=sys.stderr), sys.exit(status))\n"
        "from egress_router_cni.__main__ import main\n"
        "main()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", probe],  # -S: no site, so nothing but our imports loads typing
        env={"CNI_COMMAND": "VERSION", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == VERSION_JSON + "\n"
    assert json.loads(proc.stdout)["supportedVersions"] == list(SUPPORTED_VERSIONS)
    loaded = proc.stderr.strip()
    assert loaded == str(
        [
            "egress_router_cni",
            "egress_router_cni.__main__",
            "egress_router_cni.plugin",
            "egress_router_cni.protocol",
            "egress_router_cni.versions",
        ]
    ), loaded
