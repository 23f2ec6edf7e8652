"""The destination grammar: `IP[/prefix]`, `PORT PROTO IP[/prefix]`, `PORT PROTO IP[/prefix] TARGETPORT`.

Valid and invalid tables in the style of Go's DescribeTable. The invalid cases
include the legacy openshift-sdn egress router's unit-test corpus
(egress/router/egress_router_test.go, TestEgressRouterBad), translated from its
newline-separated EGRESS_DESTINATION to our list of strings.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import pytest

from egress_router_cni.config import (
    MAX_DESTINATIONS,
    NetConf,
    parse_destination,
    parse_destinations,
    parse_netconf,
)
from egress_router_cni.errors import CniError, ErrorCode, InvalidConfig
from egress_router_cni.ipaddr import ip_address

SEED_DESTINATIONS = ["80 UDP 10.0.0.99/30", "8080 TCP 203.0.113.26/30 80", "8443 TCP 203.0.113.27/30 443"]
V4_ONLY = {4}
Expected = Tuple[str, Optional[int], Optional[str], Optional[int]]  # address, port, proto, target
DUAL = {4, 6}


def make_conf(
    destinations: Any = None, fallback: Any = None, addresses: Optional[List[str]] = None, gateway: Any = "192.168.12.1"
) -> Dict[str, Any]:
    ip: Dict[str, Any] = {"addresses": addresses or ["192.168.12.99/24"], "gateway": gateway}
    if destinations is not None:
        ip["destinations"] = destinations
    if fallback is not None:
        ip["fallbackIP"] = fallback
    return {"cniVersion": "1.0.0", "name": "egress-router-cni-nad", "type": "egress-router", "ip": ip}


def dual_conf(destinations: List[str], fallback: Any = None) -> Dict[str, Any]:
    return make_conf(
        destinations,
        fallback,
        addresses=["192.168.12.99/24", "2001:db8:12::99/64"],
        gateway=["192.168.12.1", "2001:db8:12::1"],
    )


def parse_conf(obj: Dict[str, Any]) -> NetConf:
    return parse_netconf(obj)


# --- one entry: valid forms -------------------------------------------------------------------

VALID_ENTRIES = [
    pytest.param("10.0.0.99", ("10.0.0.99", None, None, None), id="bare-ip-fallback"),
    pytest.param("10.0.0.99/30", ("10.0.0.99", None, None, None), id="bare-cidr-target-is-the-address"),
    pytest.param("10.1.2.3\n", ("10.1.2.3", None, None, None), id="legacy-trailing-newline"),
    pytest.param("80 tcp 10.4.5.6", ("10.4.5.6", 80, "tcp", None), id="port-proto-ip"),
    pytest.param("8080 tcp 10.7.8.9 80", ("10.7.8.9", 8080, "tcp", 80), id="port-proto-ip-target"),
    pytest.param("80 UDP 10.0.0.99/30", ("10.0.0.99", 80, "udp", None), id="seed-udp-upper-case-with-prefix"),
    pytest.param("8080 TCP 203.0.113.26/30 80", ("203.0.113.26", 8080, "tcp", 80), id="seed-tcp-with-prefix-target"),
    pytest.param("8443 sctp 203.0.113.27 443", ("203.0.113.27", 8443, "sctp", 443), id="sctp"),
    pytest.param("53 Udp 10.0.0.53", ("10.0.0.53", 53, "udp", None), id="proto-mixed-case"),
    pytest.param("80\ttcp\t10.4.5.6", ("10.4.5.6", 80, "tcp", None), id="tab-separated"),
    pytest.param("  80   tcp \t 10.4.5.6    8080  ", ("10.4.5.6", 80, "tcp", 8080), id="runs-of-blanks"),
    pytest.param("1 tcp 10.0.0.1 65535", ("10.0.0.1", 1, "tcp", 65535), id="port-1-target-65535"),
    pytest.param("65535 udp 10.0.0.1 1", ("10.0.0.1", 65535, "udp", 1), id="port-65535-target-1"),
    pytest.param("80 tcp 2001:db8::26", ("2001:db8::26", 80, "tcp", None), id="ipv6"),
    pytest.param("80 tcp 2001:db8::26/64 8080", ("2001:db8::26", 80, "tcp", 8080), id="ipv6-prefix-target"),
    pytest.param("2001:db8::99", ("2001:db8::99", None, None, None), id="ipv6-fallback"),
]


@pytest.mark.parametrize(("entry", "expected"), VALID_ENTRIES)
def test_destination_valid_form_parses(entry: str, expected: Expected) -> None:
    address, port, protocol, target = expected
    d = parse_destination(entry)
    assert (d.address, d.port, d.protocol, d.target_port) == (ip_address(address), port, protocol, target)


@pytest.mark.parametrize(
    ("entry", "fallback"), [("10.0.0.99/30", True), ("80 tcp 10.4.5.6", False), ("8080 tcp 10.7.8.9 80", False)]
)
def test_destination_is_fallback_only_for_a_bare_address(entry: str, fallback: bool) -> None:
    assert parse_destination(entry).is_fallback is fallback


def test_destination_describe_keeps_the_entry_as_written_with_single_spaces() -> None:
    # The seed's log line "IP Destinations: [80 UDP 10.0.0.99/30 8080 TCP ...]" shows entries as written.
    assert parse_destination("8080\tTCP   203.0.113.26/30 80 ").describe() == "8080 TCP 203.0.113.26/30 80"


def test_destination_version_follows_the_address_family() -> None:
    assert parse_destination("80 tcp 10.0.0.1").version == 4
    assert parse_destination("80 tcp 2001:db8::1").version == 6


# --- one entry: invalid forms -----------------------------------------------------------------

INVALID_ENTRIES = [
    pytest.param("0 tcp 10.0.0.1", "port '0'", id="port-0"),
    pytest.param("65536 tcp 10.0.0.1", "port '65536'", id="port-65536"),
    pytest.param("800000 tcp 10.4.5.6", "port '800000'", id="legacy-port-800000"),
    pytest.param("+80 tcp 10.0.0.1", "port '+80'", id="port-plus-sign"),
    pytest.param("-1 tcp 10.0.0.1", "port '-1'", id="port-negative"),
    pytest.param("80a tcp 10.0.0.1", "port '80a'", id="port-trailing-letter"),
    pytest.param("0x50 tcp 10.0.0.1", "port '0x50'", id="port-hex"),
    pytest.param("80 tcp 10.0.0.1 0", "target port '0'", id="target-port-0"),
    pytest.param("80 tcp 10.0.0.1 65536", "target port '65536'", id="target-port-65536"),
    pytest.param("80 tcp 10.0.0.1 http", "target port 'http'", id="target-port-name"),
    pytest.param("80 icmp 10.0.0.1", "protocol 'icmp'", id="proto-icmp"),
    pytest.param("80 tcp6 10.0.0.1", "protocol 'tcp6'", id="proto-tcp6"),
    pytest.param("80 tcp 10.0.0.256", "'10.0.0.256'", id="bad-ipv4"),
    pytest.param("80 tcp 10.0.0.1/33", "'10.0.0.1/33'", id="bad-prefix"),
    pytest.param("80 tcp example.com", "'example.com'", id="hostname"),
    pytest.param("80 tcp 0.0.0.0", "0.0.0.0", id="unspecified-target"),
    pytest.param("80 tcp 224.0.0.1", "224.0.0.1", id="multicast-target"),
    pytest.param("80 tcp ::", "::", id="ipv6-unspecified-target"),
    pytest.param("invalid", "'invalid'", id="legacy-garbage-word"),
    pytest.param("not an IP address", "port 'not'", id="legacy-not-an-ip-4-fields"),
    pytest.param("80 tcp", "2 fields", id="2-fields"),
    pytest.param("80 tcp 10.0.0.1 8080 extra", "5 fields", id="5-fields"),
    pytest.param("80 tcp 10.4.5.6\n8080 tcp 10.7.8.9 80", "7 fields", id="two-lines-in-one-entry"),
    pytest.param("tcp 80 10.0.0.1", "port 'tcp'", id="proto-and-port-swapped"),
    pytest.param("10.0.0.1 tcp 80", "port '10.0.0.1'", id="ip-first"),
]


@pytest.mark.parametrize(("entry", "reason"), INVALID_ENTRIES)
def test_destination_invalid_form_is_a_config_error_quoting_the_entry(entry: str, reason: str) -> None:
    with pytest.raises(InvalidConfig) as exc:
        parse_destination(entry)
    assert exc.value.code == ErrorCode.INVALID_CONFIG
    assert repr(entry) in str(exc.value)
    assert reason in str(exc.value)


@pytest.mark.parametrize("entry", ["80 tcp", "80 tcp 10.0.0.1 8080 extra", "80 icmp 10.0.0.1", "invalid"])
def test_destination_grammar_error_says_what_would_be_valid(entry: str) -> None:
    with pytest.raises(InvalidConfig) as exc:
        parse_destination(entry)
    assert "PORT PROTO IP[/prefix] TARGETPORT" in str(exc.value)


@pytest.mark.parametrize("entry", ["0 tcp 10.0.0.1", "80 tcp 10.0.0.1 65536"])
def test_destination_port_error_states_the_valid_range(entry: str) -> None:
    with pytest.raises(InvalidConfig, match="1 to 65535"):
        parse_destination(entry)


# --- lists: comments, order, duplicates, fallback -----------------------------------------------


def test_destinations_comment_entries_are_skipped() -> None:
    dests = parse_destinations(["# My egress-router rules", "80 tcp 10.4.5.6", "   # indented comment"], V4_ONLY)
    assert [d.raw for d in dests] == ["80 tcp 10.4.5.6"]


def test_destinations_legacy_commented_block_parses_in_order() -> None:
    # The legacy corpus's commented block, one line per entry (its blank lines dropped).
    block = [
        "# My egress-router rules",
        "# Port 80 forwards to 10.4.5.6",
        "80 tcp 10.4.5.6",
        "# Port 8080 forwards to port 80 on 10.7.8.9",
        "8080 tcp 10.7.8.9 80",
        "# Skip this rule for now",
        "# 8443 tcp 10.7.8.9 443",
        "# Fallback; don't add anything after this",
        "10.1.2.3",
        "# No, seriously, don't add anything here",
    ]
    dests = parse_destinations(block, V4_ONLY)
    assert [(str(d.address), d.port, d.target_port) for d in dests] == [
        ("10.4.5.6", 80, None),
        ("10.7.8.9", 8080, 80),
        ("10.1.2.3", None, None),
    ]


def test_destinations_absent_list_is_empty() -> None:
    assert parse_destinations(None, V4_ONLY) == ()


def test_destinations_same_port_different_protocol_is_allowed() -> None:
    dests = parse_destinations(["53 tcp 10.0.0.53", "53 udp 10.0.0.53"], V4_ONLY)
    assert [(d.port, d.protocol) for d in dests] == [(53, "tcp"), (53, "udp")]


def test_destinations_same_port_and_protocol_in_different_families_is_allowed() -> None:
    dests = parse_destinations(["80 tcp 10.0.0.1", "80 tcp 2001:db8::1"], DUAL)
    assert [d.version for d in dests] == [4, 6]


def test_destinations_fallback_of_one_family_may_precede_entries_of_the_other() -> None:
    # Each family has its own NAT table, so "last" is per family.
    dests = parse_destinations(["10.1.2.3", "80 tcp 2001:db8::26", "2001:db8::99"], DUAL)
    assert [d.is_fallback for d in dests] == [True, False, True]


INVALID_LISTS = [
    pytest.param(["10.1.2.3", "80 tcp 10.4.5.6"], "'80 tcp 10.4.5.6'", id="legacy-fallback-then-port-rule"),
    pytest.param(["10.1.2.3", "10.4.5.6"], "'10.4.5.6'", id="legacy-two-fallbacks"),
    pytest.param(
        ["80 tcp 10.4.5.6", "10.1.2.3", "8080 tcp 10.7.8.9 80"], "'8080 tcp 10.7.8.9 80'", id="legacy-fallback-middle"
    ),
    pytest.param(["10.1.2.3", "# comment", "80 udp 10.4.5.6"], "'80 udp 10.4.5.6'", id="fallback-comment-then-rule"),
    pytest.param(
        ["80 tcp 10.4.5.6", "8080 tcp 10.7.8.9 80", "80 tcp 10.7.8.9 900"],
        "'80 tcp 10.7.8.9 900'",
        id="legacy-duplicate-port",
    ),
    pytest.param(["80 TCP 10.0.0.1", "80 tcp 10.0.0.2"], "'80 tcp 10.0.0.2'", id="duplicate-port-proto-any-case"),
    pytest.param(["80 tcp 10.4.5.6", "invalid", "8080 tcp 10.7.8.9 80"], "'invalid'", id="legacy-garbage-line"),
    pytest.param([""], "empty entry", id="empty-entry"),
    pytest.param(["80 tcp 10.0.0.1", "   "], "empty entry", id="blank-entry"),
    pytest.param([80], "80 is not a string", id="non-string-entry"),
    pytest.param(["80 tcp 10.0.0.1", None], "null is not a string", id="null-entry"),
    pytest.param("80 tcp 10.0.0.1", "expected a list", id="not-a-list"),
    pytest.param({"80": "tcp"}, "expected a list", id="object-not-list"),
    pytest.param(["80 tcp 2001:db8::26"], "'80 tcp 2001:db8::26' is IPv6", id="ipv6-without-ipv6-address"),
]


@pytest.mark.parametrize(("destinations", "fragment"), INVALID_LISTS)
def test_destinations_invalid_list_is_a_config_error(destinations: Any, fragment: str) -> None:
    with pytest.raises(InvalidConfig) as exc:
        parse_destinations(destinations, V4_ONLY)
    assert exc.value.code == ErrorCode.INVALID_CONFIG
    assert fragment in str(exc.value)


def test_destinations_fallback_not_last_names_the_fallback_too() -> None:
    with pytest.raises(InvalidConfig) as exc:
        parse_destinations(["10.1.2.3", "80 tcp 10.4.5.6"], V4_ONLY)
    assert "'10.1.2.3'" in str(exc.value)
    assert "last" in str(exc.value)


def test_destinations_duplicate_names_both_entries() -> None:
    with pytest.raises(InvalidConfig) as exc:
        parse_destinations(["80 tcp 10.4.5.6", "80 tcp 10.7.8.9 900"], V4_ONLY)
    assert "'80 tcp 10.4.5.6'" in str(exc.value)
    assert "'80 tcp 10.7.8.9 900'" in str(exc.value)


def test_destinations_limit_is_accepted() -> None:
    entries = [f"{port} tcp 10.0.0.1" for port in range(1, MAX_DESTINATIONS + 1)]
    assert len(parse_destinations(entries, V4_ONLY)) == MAX_DESTINATIONS


def test_destinations_over_the_limit_are_refused_naming_the_count() -> None:
    entries = [f"{port} tcp 10.0.0.1" for port in range(1, MAX_DESTINATIONS + 2)]
    with pytest.raises(InvalidConfig, match=f"{MAX_DESTINATIONS + 1} entries"):
        parse_destinations(entries, V4_ONLY)


# --- through parse_netconf: families and fallbackIP --------------------------------------------


def test_netconf_seed_destinations_parse_in_order() -> None:
    conf = parse_conf(make_conf(SEED_DESTINATIONS))
    assert [d.describe() for d in conf.destinations] == SEED_DESTINATIONS
    assert [str(d.address) for d in conf.destinations] == ["10.0.0.99", "203.0.113.26", "203.0.113.27"]


def test_netconf_ipv6_destination_needs_an_ipv6_address() -> None:
    with pytest.raises(InvalidConfig) as exc:
        parse_conf(make_conf(["80 tcp 2001:db8::26 8080"]))
    assert "'80 tcp 2001:db8::26 8080'" in str(exc.value)
    assert "IPv6" in str(exc.value)


def test_netconf_ipv6_destination_needs_an_ipv6_gateway() -> None:
    obj = make_conf(["80 tcp 2001:db8::26"], addresses=["192.168.12.99/24", "2001:db8:12::99/64"])
    with pytest.raises(InvalidConfig, match="IPv6"):
        parse_conf(obj)


def test_netconf_ipv4_destination_on_an_ipv6_only_router_is_refused() -> None:
    obj = make_conf(["80 tcp 10.0.0.1"], addresses=["2001:db8:12::99/64"], gateway="2001:db8:12::1")
    with pytest.raises(InvalidConfig) as exc:
        parse_conf(obj)
    assert "'80 tcp 10.0.0.1' is IPv4" in str(exc.value)


def test_netconf_dual_stack_destinations_parse() -> None:
    conf = parse_conf(dual_conf(["80 tcp 10.0.0.1", "80 tcp 2001:db8::26 8080"]))
    assert [d.version for d in conf.destinations] == [4, 6]


def test_netconf_fallback_ip_is_appended_as_the_final_fallback() -> None:
    conf = parse_conf(make_conf(SEED_DESTINATIONS, fallback="10.0.0.200"))
    last = conf.destinations[-1]
    assert len(conf.destinations) == len(SEED_DESTINATIONS) + 1
    assert last.is_fallback
    assert last.address == ip_address("10.0.0.200")


def test_netconf_fallback_ip_alone_sends_everything_there() -> None:
    conf = parse_conf(make_conf(None, fallback="10.0.0.200"))
    assert [(str(d.address), d.is_fallback) for d in conf.destinations] == [("10.0.0.200", True)]


def test_netconf_empty_fallback_ip_is_ignored() -> None:
    conf = parse_conf(make_conf(SEED_DESTINATIONS, fallback=""))
    assert len(conf.destinations) == len(SEED_DESTINATIONS)


def test_netconf_fallback_ip_conflicts_with_a_bare_ip_destination() -> None:
    with pytest.raises(InvalidConfig) as exc:
        parse_conf(make_conf(["80 tcp 10.4.5.6", "10.1.2.3"], fallback="10.0.0.200"))
    assert "'10.1.2.3'" in str(exc.value)
    assert "fallbackIP" in str(exc.value)


def test_netconf_fallback_ip_of_the_other_family_does_not_conflict() -> None:
    conf = parse_conf(dual_conf(["10.1.2.3"], fallback="2001:db8::99"))
    assert [(d.version, d.is_fallback) for d in conf.destinations] == [(4, True), (6, True)]


@pytest.mark.parametrize(
    ("fallback", "fragment"),
    [
        pytest.param("not an IP address", "'not an IP address'", id="garbage"),
        pytest.param("10.0.0.0/24", "'10.0.0.0/24'", id="cidr"),
        pytest.param(5, "5 is not an IP address", id="number"),
        pytest.param(["10.0.0.1"], "is not an IP address", id="list"),
        pytest.param("2001:db8::99", "IPv6", id="ipv6-without-ipv6-address"),
    ],
)
def test_netconf_invalid_fallback_ip_is_a_config_error(fallback: Any, fragment: str) -> None:
    with pytest.raises(InvalidConfig) as exc:
        parse_conf(make_conf(SEED_DESTINATIONS, fallback=fallback))
    assert fragment in str(exc.value)


LEGACY_BAD_DESTINATIONS = [
    pytest.param(["not an IP address"], id="garbage"),
    pytest.param(["10.1.2.3", "80 tcp 10.4.5.6"], id="fallback-first"),
    pytest.param(["10.1.2.3", "10.4.5.6"], id="two-fallbacks"),
    pytest.param(["80 tcp 10.4.5.6", "10.1.2.3", "8080 tcp 10.7.8.9 80"], id="fallback-middle"),
    pytest.param(["80 tcp 10.4.5.6", "invalid", "8080 tcp 10.7.8.9 80"], id="garbage-line"),
    pytest.param(["800000 tcp 10.4.5.6"], id="port-800000"),
    pytest.param(["80 tcp 10.4.5.6", "8080 tcp 10.7.8.9 80", "80 tcp 10.7.8.9 900"], id="duplicate-port"),
]


@pytest.mark.parametrize("destinations", LEGACY_BAD_DESTINATIONS)
def test_netconf_legacy_bad_destinations_are_code_7(destinations: List[str]) -> None:
    with pytest.raises(CniError) as exc:
        parse_conf(make_conf(destinations))
    assert exc.value.code == ErrorCode.INVALID_CONFIG


def test_netconf_empty_destination_list_is_valid() -> None:
    # The legacy image required at least one destination; the operator may render none (only fallbackIP).
    assert parse_conf(make_conf([])).destinations == ()


def test_netconf_sctp_is_accepted_unlike_the_legacy_router() -> None:
    # The legacy image refused "80 sctp 10.4.5.6"; the CNI grammar (and the EgressRouter CRD) allow SCTP.
    conf = parse_conf(make_conf(["80 sctp 10.4.5.6"]))
    assert conf.destinations[0].protocol == "sctp"


# --- regressions (bugs these tests found) ----------------------------------------


def test_netconf_fallback_ip_with_an_ipv6_zone_id_is_refused() -> None:
    """Regression: fallbackIP kept an IPv6 zone id ('%...'), which reached the nft batch."""
    obj = make_conf(None, fallback="2001:db8::9%x", addresses=["2001:db8:12::99/64"], gateway="2001:db8:12::1")
    with pytest.raises(InvalidConfig):
        parse_conf(obj)


def test_destination_with_an_ipv6_zone_id_is_refused() -> None:
    """Regression: a zone id in a destination was silently dropped instead of refused."""
    with pytest.raises(InvalidConfig):
        parse_destination("80 tcp fe80::1%eth0")
