"""Coverage-guided fuzzing of the CNI protocol layer and the config parser (atheris on libFuzzer).

Run it through scripts/fuzz.sh (fixed time budget, committed seed corpus,
new corpus entries in a temporary directory). tests/unit/test_fuzz_smoke.py
runs check_one over the committed corpus without atheris.

Input format (so seeds stay readable):
- no NUL byte: the whole input is stdin, with an ADD environment;
- otherwise: up to six NUL-terminated environment values, in the order
  CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS, CNI_PATH,
  then stdin. A single-byte CNI_COMMAND picks one of the six commands; the
  single byte 0x01 as any other value means "not set" (an empty value is
  set-but-empty, as libcni sends it).

Invariants checked for every input (an AssertionError is a finding):
- exit status 0 or 1;
- stdout is empty or exactly one JSON object followed by a newline: a result
  (ADD), the version info (VERSION), or an error with a spec/plugin code;
- never code 999 and never a traceback: the handlers below run only the pure
  parsers and renderers, so an internal error is a bug in them;
- the rendered nft batch has only the lines the renderer means to write
  (no injected commands), one per table/chain/rule.
"""

from __future__ import annotations

import io
import json
import sys
from typing import Any, Dict, List, Tuple

ENV_KEYS = ("CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH")
COMMANDS = ("ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION")
DEFAULT_ENV = {
    "CNI_COMMAND": "ADD",
    "CNI_CONTAINERID": "3f2a9c0e1b7d",
    "CNI_NETNS": "/var/run/netns/cni-fuzz",
    "CNI_IFNAME": "net1",
    "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAMESPACE=egress;K8S_POD_NAME=router-0",
    "CNI_PATH": "/opt/cni/bin",
}
UNSET = b"\x01"
SPEC_CODES = frozenset({1, 2, 3, 4, 5, 6, 7, 8, 11, 50, 51})
PLUGIN_CODES = frozenset(range(100, 106))
INTERNAL = 999
NOTE = "egress-router owner=0123456789abcdef fwd4=0 nat=nftables"

_mods: Dict[str, Any] = {}


def _load() -> Dict[str, Any]:
    """Import the code under test on first use (main() does it inside atheris' instrumentation)."""
    if not _mods:
        from egress_router_cni import config, protocol, result
        from egress_router_cni.errors import CniError
        from egress_router_cni.nat import nftables_text, rules

        _mods.update(config=config, protocol=protocol, result=result, CniError=CniError, rules=rules, nft=nftables_text)
    return _mods


def decode_input(data: bytes) -> Tuple[Dict[str, str], bytes]:
    """Split a fuzz input into (environment, stdin) as described in the module docstring."""
    parts = data.split(b"\0", len(ENV_KEYS))
    if len(parts) == 1:
        return dict(DEFAULT_ENV), data
    header, stdin = parts[:-1], parts[-1]
    environ = dict(DEFAULT_ENV)
    for key, raw in zip(ENV_KEYS, header):
        if key == "CNI_COMMAND" and len(raw) == 1:
            environ[key] = COMMANDS[raw[0] % len(COMMANDS)]
        elif raw == UNSET:
            environ.pop(key, None)
        else:
            environ[key] = raw.decode("utf-8", "surrogateescape")
    return environ, stdin


def _check_batch(text: str, n_rules: int, n_families: int) -> None:
    lines = text.splitlines()
    assert len(lines) == 5 * n_families + n_rules, f"unexpected nft batch lines:\n{text}"
    for line in lines:
        assert line.startswith(("add table ", "delete table ", "add chain ", "add rule ")), f"injected: {line!r}"


def _handler(args: Any) -> Any:
    m = _load()
    conf = m["config"].parse_netconf(args.config)
    if args.command == "ADD":
        built = m["rules"].build_rules(conf, args.ifname)
        families = list(conf.routed_families())
        _check_batch(m["nft"].render_install(built, families, NOTE), len(built), len(families))
        for rule in built:
            text = m["rules"].iptables_spelling(rule) + m["nft"].rule_text(rule)
            assert "\n" not in text and "\r" not in text, repr(text)
        res = m["result"].Result(dns=conf.dns)
        if conf.prev_result:
            res = m["result"].parse_result(conf.prev_result, conf.cni_version)
        index = len(res.interfaces)
        res.interfaces.append(m["result"].Interface(name=args.ifname, mac="0a:58:c0:a8:0c:63", sandbox=args.netns))
        for address in conf.addresses:
            gateway = conf.gateway_for(address.version)
            res.ips.append(m["result"].IPConfig(str(address), str(gateway) if gateway else "", index))
        return res
    if args.command == "CHECK" and conf.prev_result:
        m["result"].parse_result(conf.prev_result, conf.cni_version)
    return None


HANDLERS = {command: _handler for command in COMMANDS if command != "VERSION"}


def _one_document(text: str) -> Dict[str, Any]:
    assert text.endswith("\n") and text.count("\n") == 1, f"stdout is not one line: {text[:500]!r}"
    doc = json.loads(text)
    assert isinstance(doc, dict), f"stdout is not a JSON object: {text[:500]!r}"
    return doc


def check_one(data: bytes) -> None:
    """The fuzz target: run one invocation and assert the invariants; raise AssertionError on a finding."""
    m = _load()
    environ, stdin = decode_input(data)
    out, err = io.StringIO(), io.StringIO()
    rc = m["protocol"].run(environ, io.BytesIO(stdin), out, err, HANDLERS)
    stdout, stderr = out.getvalue(), err.getvalue()
    context = f"env={environ!r}\nstdin={stdin[:2000]!r}\nstderr={stderr[-4000:]}"
    assert rc in (0, 1), f"exit status {rc}\n{context}"
    assert "Traceback" not in stdout, context
    command = environ.get("CNI_COMMAND", "")
    if rc == 1:
        doc = _one_document(stdout)
        code = doc.get("code")
        assert code != INTERNAL, f"internal error (a bug in a pure parser): {doc}\n{context}"
        assert code in SPEC_CODES | PLUGIN_CODES, f"code {code!r} outside the spec\n{context}"
        assert isinstance(doc.get("msg"), str) and doc["msg"], context
        assert isinstance(doc.get("cniVersion"), str), context
        assert "Traceback" not in stderr, context
    elif command == "VERSION":
        assert "supportedVersions" in _one_document(stdout), context
    elif command == "ADD":
        doc = _one_document(stdout)
        assert doc.get("cniVersion") == m["config"].check_version(json.loads(stdin)), context
    else:
        assert stdout == "", context


def main(argv: List[str]) -> None:
    import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]

    with atheris.instrument_imports(include=["egress_router_cni"]):
        _load()
    atheris.Setup(argv, check_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
