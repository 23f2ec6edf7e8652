"""Property-based tests (hypothesis) for hostile input: issue 4, item 6.

The default variants are small and derandomized, so the unit suite stays fast
and deterministic; each has a `slow`-marked twin with many more (random)
examples, run with `python -m pytest -m slow tests/unit/test_properties.py`
(or by scripts/fuzz.sh when atheris is missing).
"""

from __future__ import annotations

import io
import json
import os
import re
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from egress_router_cni import protocol
from egress_router_cni.cmdargs import CmdArgs
from egress_router_cni.config import SUPPORTED_VERSIONS, parse_destination, parse_destinations, parse_netconf
from egress_router_cni.errors import CniError, InvalidConfig
from egress_router_cni.ipaddr import ip_address
from egress_router_cni.nat.nftables_text import render_install, rule_text
from egress_router_cni.nat.rules import DnatRule, SnatRule, build_rules
from egress_router_cni.result import IPConfig, Result, parse_result

SPEC_CODES = {1, 2, 3, 4, 5, 6, 7, 8, 11, 50, 51, *range(100, 106), 999}
ENV_KEYS = ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH")
COMMANDS = ("ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION")
_HEALTH = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
FAST = settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=_HEALTH)
# scripts/fuzz.sh scales this to its --seconds when it runs these instead of atheris (Python 3.13).
SLOW = settings(
    max_examples=int(os.environ.get("ERT_HYPOTHESIS_EXAMPLES", "5000")), deadline=None, suppress_health_check=_HEALTH
)


def require_slow(request: pytest.FixtureRequest) -> None:
    """Run a slow twin only when asked for with -m slow."""
    expr = request.config.getoption("markexpr") or ""
    if "slow" not in expr or "not slow" in expr:
        pytest.skip("long-running variant: select it with -m slow")


# --- strategies ------------------------------------------------------------------------------

ODD_TEXT = st.text(
    alphabet=st.sampled_from([*"\n\r\t \x00\x7f\"'\\;=:/%{}[]$`|&<>*?", "\u2028", "\u00e9", "\udcff", "\ufeff"]),
    max_size=40,
)
HUGE_TEXT = st.builds(
    lambda c, n: c * n, st.sampled_from(["a", "0", " ", "é", ";", "=", "\n"]), st.integers(0, 200_000)
)
ENV_VALUE = st.one_of(st.text(max_size=40), ODD_TEXT, HUGE_TEXT, st.sampled_from(["", "net1", "eth0", "abc123"]))

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    ODD_TEXT,
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)

V4 = st.ip_addresses(v=4)
V6 = st.ip_addresses(v=6)
IP_TEXT = st.one_of(
    V4.map(str),
    V6.map(str),
    st.builds(lambda a, p: f"{a}/{p}", V4, st.integers(0, 40)),
    st.builds(lambda a, p: f"{a}/{p}", V6, st.integers(0, 130)),
    st.builds(lambda a, z: f"{a}%{z}", V6, st.text(min_size=1, max_size=12)),  # zone ids
    st.sampled_from(["192.168.12.99/24", "192.168.12.1", "2001:db8:12::99/64", "2001:db8:12::1", "10.0.0.99"]),
)
PORT_TEXT = st.one_of(
    st.integers(-5, 70_000).map(str),
    st.sampled_from(["+80", "80a", "0x50", "²", "\u0668\u0660", "\uff18\uff10", "080"]),
    st.text(max_size=6),
)
PROTO_TEXT = st.one_of(st.sampled_from(["tcp", "UDP", "Sctp", "icmp", "tcp6", ""]), st.text(max_size=5))
BLANK = st.text(alphabet=" \t\n\u2003", min_size=1, max_size=3)
DEST_ENTRY = st.one_of(
    st.text(max_size=40),
    IP_TEXT,
    st.builds(lambda *f: " ".join(f), PORT_TEXT, PROTO_TEXT, IP_TEXT),
    st.builds(lambda *f: " ".join(f), PORT_TEXT, PROTO_TEXT, IP_TEXT, PORT_TEXT),
    st.builds(lambda p, s, q, t, a: f"{p}{s}{q}{t}{a}", PORT_TEXT, BLANK, PROTO_TEXT, BLANK, IP_TEXT),
    st.sampled_from(["# comment", "", "   "]),
)


def _maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the near-valid strategy (to get deep into the parser), sometimes any JSON value."""
    return st.one_of(strategy, strategy, strategy, JSON_VALUES)


IP_OBJECT = st.fixed_dictionaries(
    {},
    optional={
        "addresses": _maybe(st.lists(_maybe(IP_TEXT), min_size=1, max_size=3)),
        "gateway": _maybe(st.one_of(IP_TEXT, st.lists(IP_TEXT, max_size=3))),
        "destinations": _maybe(st.lists(_maybe(DEST_ENTRY), max_size=6)),
        "fallbackIP": _maybe(IP_TEXT),
    },
)
CONFIG = st.fixed_dictionaries(
    {
        "cniVersion": _maybe(st.sampled_from([*SUPPORTED_VERSIONS, "", "1.0.1", "0.5.0"])),
        "name": _maybe(st.sampled_from(["egress-router-cni-nad", "n", "-x", "a b", "net\n"])),
    },
    optional={
        "type": _maybe(st.sampled_from(["egress-router", "macvlan"])),
        "ip": _maybe(IP_OBJECT),
        "interfaceType": _maybe(st.sampled_from(["macvlan", "ipvlan", ""])),
        "interfaceArgs": _maybe(
            st.fixed_dictionaries(
                {},
                optional={
                    "master": _maybe(st.sampled_from(["ens3", "br-ex", "a/b", "x" * 16])),
                    "mode": _maybe(st.sampled_from(["bridge", "VEPA", "Private", "passthru", "macvtap"])),
                    "mtu": _maybe(st.one_of(st.integers(-10, 70_000), PORT_TEXT)),
                },
            )
        ),
        "podInterface": _maybe(st.sampled_from(["eth0", "eth1", 'eth"0', "a b"])),
        "log_file": _maybe(st.sampled_from(["/tmp/egress-router-log", "relative", "/tmp/a\x00b"])),
        "log_level": _maybe(st.sampled_from(["debug", "VERBOSE", "error", "panic", "info"])),
        "log_format": _maybe(st.sampled_from(["text", "json", "xml"])),
        "natBackend": _maybe(st.sampled_from(["nftables", "auto", "iptables", "bogus"])),
        "dns": JSON_VALUES,
        "prevResult": JSON_VALUES,
        "podIP": JSON_VALUES,
        "ipConfig": JSON_VALUES,
    },
)


def _to_bytes(obj: Any) -> bytes:
    return json.dumps(obj).encode()


STDIN = st.one_of(
    st.binary(max_size=512),
    CONFIG.map(_to_bytes),
    CONFIG.map(_to_bytes),
    st.builds(lambda data, cut: data[:cut], CONFIG.map(_to_bytes), st.integers(0, 400)),  # truncated JSON
    JSON_VALUES.map(_to_bytes),
)
ENVIRON = st.builds(
    lambda command, rest: {"CNI_COMMAND": command, **rest} if command is not None else dict(rest),
    st.one_of(st.none(), st.sampled_from([*COMMANDS, "", "add", "FOO"]), ENV_VALUE),
    st.fixed_dictionaries({}, optional={k: ENV_VALUE for k in ENV_KEYS}),
)


# --- protocol.run ----------------------------------------------------------------------------


def _minimal_result() -> Result:
    return Result(ips=[IPConfig(address="192.168.12.99/24")], dns={})


def _minimal_handler(args: CmdArgs) -> Optional[Result]:
    return _minimal_result() if args.command == "ADD" else None


HANDLERS = {c: _minimal_handler for c in COMMANDS if c != "VERSION"}


def check_protocol(environ: Dict[str, str], stdin: bytes) -> None:
    out, err = io.StringIO(), io.StringIO()
    rc = protocol.run(environ, io.BytesIO(stdin), out, err, HANDLERS)
    stdout = out.getvalue()
    assert rc in (0, 1)
    assert "Traceback" not in stdout
    # The handlers never raise, so a traceback anywhere is a bug in the protocol layer itself.
    assert "Traceback" not in err.getvalue()
    command = environ.get("CNI_COMMAND")
    if rc == 0 and command in ("DEL", "CHECK", "GC", "STATUS"):
        assert stdout == ""
        return
    # ADD, VERSION and every error: exactly one JSON object, on one line.
    assert stdout.endswith("\n") and stdout.count("\n") == 1, stdout[:200]
    doc = json.loads(stdout)
    assert isinstance(doc, dict)
    if rc == 1:
        assert doc["code"] in SPEC_CODES
        assert doc["code"] != 999, doc
        assert isinstance(doc["msg"], str) and doc["msg"]
        assert len(stdout) < 4096, "an error document must not echo a huge input back"
    elif command == "VERSION":
        assert doc["supportedVersions"] == list(SUPPORTED_VERSIONS)
    else:
        assert doc["cniVersion"] in SUPPORTED_VERSIONS
        assert doc == _minimal_result().to_dict(doc["cniVersion"])


@FAST
@given(environ=ENVIRON, stdin=STDIN)
def test_properties_protocol_answers_with_at_most_one_json_document(environ: Dict[str, str], stdin: bytes) -> None:
    check_protocol(environ, stdin)


@pytest.mark.slow
def test_properties_protocol_answers_with_at_most_one_json_document_slow(request: pytest.FixtureRequest) -> None:
    require_slow(request)
    SLOW(given(environ=ENVIRON, stdin=STDIN)(check_protocol))()


VALID_ENV = st.fixed_dictionaries(
    {
        "CNI_COMMAND": st.sampled_from(["ADD", "DEL", "CHECK"]),
        "CNI_CONTAINERID": st.from_regex(r"\A[a-zA-Z0-9][a-zA-Z0-9_.\-]{0,63}\Z"),
        "CNI_NETNS": st.sampled_from(["/var/run/netns/x", "/proc/1/ns/net"]),
        "CNI_IFNAME": st.sampled_from(["net1", "eth1", "egress0"]),
    }
)


@FAST
@given(environ=VALID_ENV, stdin=CONFIG.map(_to_bytes))
def test_properties_protocol_with_a_valid_environment_reaches_config_checks(
    environ: Dict[str, str], stdin: bytes
) -> None:
    check_protocol(environ, stdin)


# --- parse_netconf ---------------------------------------------------------------------------


def check_netconf(obj: Dict[str, Any]) -> None:
    try:
        conf = parse_netconf(obj)
    except CniError as e:
        assert int(e.code) in (1, 2, 6, 7)
        assert len(str(e)) < 4096, "the message must not echo a huge value back"
        return
    # Whatever is accepted must render to safe NAT rules (or be refused with a config error).
    try:
        rules = build_rules(conf, "net1")
    except InvalidConfig:
        return
    families = list(conf.routed_families())
    lines = render_install(rules, families).splitlines()
    assert len(lines) == 5 * len(families) + len(rules)
    assert all(line.startswith(("add table ", "delete table ", "add chain ", "add rule ")) for line in lines)
    assert all("%" not in line for line in lines)


@FAST
@given(obj=CONFIG)
def test_properties_parse_netconf_returns_a_netconf_or_raises_a_cni_error(obj: Dict[str, Any]) -> None:
    check_netconf(obj)


@pytest.mark.slow
def test_properties_parse_netconf_returns_a_netconf_or_raises_a_cni_error_slow(request: pytest.FixtureRequest) -> None:
    require_slow(request)
    SLOW(given(obj=CONFIG)(check_netconf))()


@FAST
@given(obj=st.dictionaries(st.text(max_size=12), JSON_VALUES, max_size=8))
def test_properties_parse_netconf_on_arbitrary_objects_never_crashes(obj: Dict[str, Any]) -> None:
    check_netconf(obj)


ROUTE_DST = st.one_of(
    IP_TEXT, st.text(max_size=12), st.sampled_from(["0.0.0.0/0", "::/0", "10.0.0.0/8", "default", ""])
)
PREV_RESULT = st.one_of(
    JSON_VALUES,
    st.fixed_dictionaries(
        {},
        optional={
            "interfaces": st.lists(st.fixed_dictionaries({"name": st.sampled_from(["eth0", "net1"])}), max_size=2),
            "ips": st.lists(
                st.fixed_dictionaries(
                    {"address": _maybe(IP_TEXT)}, optional={"gateway": _maybe(IP_TEXT), "interface": JSON_SCALARS}
                ),
                max_size=3,
            ),
            "routes": st.lists(st.fixed_dictionaries({"dst": ROUTE_DST}, optional={"gw": IP_TEXT}), max_size=3),
            "dns": JSON_VALUES,
        },
    ),
    st.fixed_dictionaries(
        {},
        optional={
            key: st.fixed_dictionaries(
                {"ip": _maybe(IP_TEXT)},
                optional={
                    "gateway": _maybe(IP_TEXT),
                    "routes": st.lists(st.fixed_dictionaries({"dst": ROUTE_DST}, optional={"gw": IP_TEXT}), max_size=3),
                },
            )
            for key in ("ip4", "ip6")
        },
    ),
)


def check_prev_result(doc: Any, version: str) -> None:
    """A prevResult is parsed into a Result that prints again in its version, or refused with code 6."""
    try:
        parsed = parse_result(doc, version)
    except CniError as e:
        assert int(e.code) == 6
        return
    try:
        printed = parsed.to_dict(version)
    except CniError as e:
        assert "no valid IP addresses" in str(e)  # 0.1/0.2 cannot carry a result without IPs
        return
    json.dumps(printed)


@FAST
@given(doc=JSON_VALUES, version=st.sampled_from(SUPPORTED_VERSIONS))
def test_properties_parse_result_returns_a_result_or_a_decoding_failure(doc: Any, version: str) -> None:
    check_prev_result(doc, version)


@FAST
@given(doc=PREV_RESULT, version=st.sampled_from(SUPPORTED_VERSIONS))
@example(doc={"ip4": {"ip": "10.128.10.18/23", "routes": [{"dst": "0.0.04.0/0"}]}}, version="0.2.0")  # fuzzer finding
def test_properties_prev_result_prints_again_or_is_a_decoding_failure(doc: Any, version: str) -> None:
    check_prev_result(doc, version)


@pytest.mark.slow
def test_properties_prev_result_prints_again_or_is_a_decoding_failure_slow(request: pytest.FixtureRequest) -> None:
    require_slow(request)
    SLOW(given(doc=PREV_RESULT, version=st.sampled_from(SUPPORTED_VERSIONS))(check_prev_result))()


# --- the destination grammar -----------------------------------------------------------------


def check_destination(entry: str) -> None:
    try:
        d = parse_destination(entry)
    except InvalidConfig as e:
        assert repr(entry)[:40] in str(e) or "fields" in str(e)
        return
    fields = entry.split()
    assert len(fields) in (1, 3, 4)
    assert d.address.version in (4, 6)
    assert "%" not in str(d.address)
    if d.port is not None:
        assert 1 <= d.port <= 65535
        assert d.protocol in ("tcp", "udp", "sctp")
        assert fields[0] == str(d.port).rjust(len(fields[0]), "0")
    if d.target_port is not None:
        assert 1 <= d.target_port <= 65535


@FAST
@given(entry=st.one_of(st.text(), DEST_ENTRY))
def test_properties_destination_parser_returns_or_raises_invalid_config(entry: str) -> None:
    check_destination(entry)


@pytest.mark.slow
def test_properties_destination_parser_returns_or_raises_invalid_config_slow(request: pytest.FixtureRequest) -> None:
    require_slow(request)
    SLOW(given(entry=st.one_of(st.text(), DEST_ENTRY))(check_destination))()


@FAST
@given(entries=st.lists(DEST_ENTRY, max_size=10), families=st.sampled_from([{4}, {6}, {4, 6}]))
def test_properties_destination_list_parser_returns_or_raises_invalid_config(entries: List[str], families: Any) -> None:
    try:
        parsed = parse_destinations(entries, families)
    except InvalidConfig:
        return
    assert all(d.version in families for d in parsed)
    for family in families:
        mine = [d for d in parsed if d.version == family]
        assert all(not d.is_fallback for d in mine[:-1]), "a fallback must be the last entry of its family"


# --- valid lists round-trip into rules -------------------------------------------------------

Expected = Tuple[int, Optional[int], Optional[str], str, Optional[int]]  # family, port, proto, address, target
TARGETS = {
    4: V4.filter(lambda a: not (a.is_unspecified or a.is_multicast)),
    6: V6.filter(lambda a: not (a.is_unspecified or a.is_multicast)),
}
SOURCES = {4: ("192.168.12.99/24", "192.168.12.1"), 6: ("2001:db8:12::99/64", "2001:db8:12::1")}


@st.composite
def valid_routers(draw: Callable[..., Any]) -> Tuple[Dict[str, Any], List[Expected]]:
    """A valid config plus, per family in order, what each DNAT rule must be."""
    families = draw(st.sampled_from([(4,), (6,), (4, 6)]))
    entries: List[str] = []
    expected: List[Expected] = []
    used = set()
    for _ in range(draw(st.integers(0, 8))):
        family = draw(st.sampled_from(families))
        port, proto = draw(st.integers(1, 65535)), draw(st.sampled_from(["tcp", "udp", "sctp"]))
        if (family, port, proto) in used:
            continue
        used.add((family, port, proto))
        address = draw(TARGETS[family])
        prefix = draw(st.one_of(st.none(), st.integers(0, 32 if family == 4 else 128)))
        target = draw(st.one_of(st.none(), st.integers(1, 65535)))
        spelled = draw(st.sampled_from([proto, proto.upper(), proto.capitalize()]))
        fields = [str(port), spelled, f"{address}" + (f"/{prefix}" if prefix is not None else "")]
        if target is not None:
            fields.append(str(target))
        sep = draw(
            st.lists(st.text(alphabet=" \t", min_size=1, max_size=3), min_size=len(fields), max_size=len(fields))
        )
        entry = draw(st.sampled_from(["", " ", "\t"])) + "".join(f + s for f, s in zip(fields, sep))
        if draw(st.booleans()):
            entries.append(draw(st.sampled_from(["# a comment", "#", "  # indented"])))
        entries.append(entry)
        expected.append((family, port, proto, str(address), target))
    ip: Dict[str, Any] = {
        "addresses": [SOURCES[f][0] for f in families],
        "gateway": [SOURCES[f][1] for f in families],
        "destinations": entries,
    }
    for family in families:
        how = draw(st.sampled_from(["none", "entry", "fallbackIP"]))
        if how == "none" or (how == "fallbackIP" and "fallbackIP" in ip):
            continue
        address = draw(TARGETS[family])
        if how == "entry":
            entries.append(str(address))
        else:
            ip["fallbackIP"] = str(address)
        expected.append((family, None, None, str(address), None))
    obj = {"cniVersion": draw(st.sampled_from(SUPPORTED_VERSIONS)), "name": "egress-router-cni-nad", "ip": ip}
    return obj, expected


_RULE_RE = re.compile(
    r'^iifname "eth0"(?: (tcp|udp|sctp) dport (\d+))? dnat to (\[[^\]]+\]|[^ :\[]+|[0-9a-f:]+)(?::(\d+))?$'
)


def _parse_rule_text(text: str, family: int) -> Tuple[Optional[int], Optional[str], str, Optional[int]]:
    if family == 6 and not text.endswith("]") and "[" not in text:
        head, _, addr = text.rpartition(" dnat to ")
        match = re.fullmatch(r'iifname "eth0"(?: (tcp|udp|sctp) dport (\d+))?', head)
        assert match, text
        return (int(match.group(2)) if match.group(2) else None), match.group(1), addr, None
    match = _RULE_RE.match(text)
    assert match, text
    proto, port, addr, target = match.groups()
    return (int(port) if port else None), proto, addr.strip("[]"), (int(target) if target else None)


def check_round_trip(router: Tuple[Dict[str, Any], List[Expected]]) -> None:
    obj, expected = router
    conf = parse_netconf(obj)
    families = conf.routed_families()
    rules = build_rules(conf, "net1")
    assert len(rules) == len(expected) + len(families)
    for family in families:
        dnats = [r for r in rules if isinstance(r, DnatRule) and r.family == family]
        want = [e for e in expected if e[0] == family]
        # Port rules keep their order; fallbacks (entry or fallbackIP) come last.
        assert [(r.port, r.protocol, str(r.to_addr), r.to_port) for r in dnats] == [e[1:] for e in want]
        for rule in dnats:
            port, proto, addr, target = _parse_rule_text(rule_text(rule), family)
            assert (port, proto, ip_address(addr), target) == (
                rule.port,
                rule.protocol,
                rule.to_addr,
                rule.to_port,
            )
        snats = [r for r in rules if isinstance(r, SnatRule) and r.family == family]
        assert [str(r.to_addr) for r in snats] == [SOURCES[family][0].split("/")[0]]


@FAST
@given(router=valid_routers())
def test_properties_valid_destination_lists_round_trip_into_rules(
    router: Tuple[Dict[str, Any], List[Expected]],
) -> None:
    check_round_trip(router)


@pytest.mark.slow
def test_properties_valid_destination_lists_round_trip_into_rules_slow(request: pytest.FixtureRequest) -> None:
    require_slow(request)
    SLOW(given(router=valid_routers())(check_round_trip))()
