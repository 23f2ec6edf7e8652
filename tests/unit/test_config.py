"""parse_netconf, decode_json, check_version and friends: valid and invalid config tables.

The destination grammar has its own file (test_destinations.py); this one is
about every other key of the plugin config and the JSON/version envelope.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Callable, Dict, List

import pytest

from egress_router_cni.config import (
    DEFAULT_LOG_FILE,
    MAX_ADDRESSES_PER_FAMILY,
    MAX_CONFIG_BYTES,
    MAX_DESTINATIONS,
    SUPPORTED_VERSIONS,
    check_version,
    decode_json,
    parse_cni_args,
    parse_netconf,
    valid_ifname,
)
from egress_router_cni.errors import CniError, ErrorCode
from egress_router_cni.ipaddr import ip_address, ip_interface
from tests.samples import seed_plugin_conf

Mutation = Callable[[Dict[str, Any]], None]


def seed_conf() -> Dict[str, Any]:
    """The product page's router: 192.168.12.99/24 via 192.168.12.1, three redirect rules."""
    return seed_plugin_conf(log_file="/tmp/egress-router-log", log_level="debug")


def mutated(mutation: Mutation) -> Dict[str, Any]:
    obj = copy.deepcopy(seed_conf())
    mutation(obj)
    return obj


def setter(path: str, value: Any) -> Mutation:
    """A mutation setting a dotted key, e.g. setter('ip.gateway', '10.0.0.1')."""

    def apply(obj: Dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = obj
        for key in parents:
            target = target.setdefault(key, {})
        target[last] = value

    return apply


def deleter(path: str) -> Mutation:
    def apply(obj: Dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = obj
        for key in parents:
            target = target[key]
        del target[last]

    return apply


# --- valid configs ---------------------------------------------------------------------------


def test_netconf_seed_example_parses() -> None:
    conf = parse_netconf(seed_conf())
    assert conf.cni_version == "0.4.0"
    assert conf.name == "egress-router-cni-nad"
    assert conf.addresses == (ip_interface("192.168.12.99/24"),)
    assert conf.gateways == (ip_address("192.168.12.1"),)
    assert len(conf.destinations) == 3


def test_netconf_defaults_match_the_upstream_plugin() -> None:
    obj = seed_conf()
    del obj["log_file"], obj["log_level"]
    conf = parse_netconf(obj)
    assert (conf.master, conf.mode, conf.mtu, conf.pod_interface) == (None, "bridge", 0, "eth0")
    assert (conf.log_file, conf.log_level, conf.log_format) == (DEFAULT_LOG_FILE, "debug", "text")
    assert DEFAULT_LOG_FILE == "/tmp/egress-router-log"


def test_netconf_operator_rendered_nad_parses() -> None:
    # What CNO renders into egress-router-cni-nad (landscape doc §2.3), with the fallbackIP it adds.
    rendered = (
        '{"cniVersion":"0.4.0","type":"egress-router","name":"egress-router-cni-nad",'
        '"ip":{"addresses":["192.168.12.99/24"],"destinations":["8080 TCP 203.0.113.26 80"],'
        '"fallbackIP":"203.0.113.40","gateway":"192.168.12.1"},'
        '"log_file":"/tmp/egress-router-log","log_level":"debug"}'
    )
    conf = parse_netconf(decode_json(rendered.encode()))
    assert [str(d.address) for d in conf.destinations] == ["203.0.113.26", "203.0.113.40"]


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_netconf_every_supported_version_is_accepted(version: str) -> None:
    assert parse_netconf(mutated(setter("cniVersion", version))).cni_version == version


@pytest.mark.parametrize("missing", [deleter("cniVersion"), setter("cniVersion", ""), setter("cniVersion", None)])
def test_netconf_missing_version_means_0_1_0(missing: Mutation) -> None:
    # libcni decodes a missing cniVersion as "0.1.0".
    assert parse_netconf(mutated(missing)).cni_version == "0.1.0"


@pytest.mark.parametrize(
    ("mode", "expected"), [("bridge", "bridge"), ("Private", "private"), ("VEPA", "vepa"), ("passthru", "passthru")]
)
def test_netconf_mode_is_accepted_in_any_case(mode: str, expected: str) -> None:
    assert parse_netconf(mutated(setter("interfaceArgs.mode", mode))).mode == expected


@pytest.mark.parametrize(("mtu", "expected"), [("1500", 1500), (9000, 9000), ("68", 68), (65535, 65535), ("", 0)])
def test_netconf_mtu_accepts_numbers_and_numeric_strings(mtu: Any, expected: int) -> None:
    # The upstream plugin reads interfaceArgs.mtu as a string (Atoi); NADs written by hand use numbers too.
    assert parse_netconf(mutated(setter("interfaceArgs.mtu", mtu))).mtu == expected


@pytest.mark.parametrize("level", ["debug", "verbose", "error", "panic", "ERROR"])
def test_netconf_log_level_is_honoured(level: str) -> None:
    assert parse_netconf(mutated(setter("log_level", level))).log_level == level.lower()


def test_netconf_master_and_pod_interface_are_kept() -> None:
    conf = parse_netconf(mutated(lambda o: o.update(interfaceArgs={"master": "ens3"}, podInterface="eth1")))
    assert (conf.master, conf.pod_interface) == ("ens3", "eth1")


def test_netconf_interface_type_macvlan_is_accepted() -> None:
    assert parse_netconf(mutated(setter("interfaceType", "macvlan"))).mode == "bridge"


def test_netconf_dual_stack_takes_one_gateway_per_family() -> None:
    conf = parse_netconf(
        mutated(
            lambda o: o["ip"].update(
                addresses=["192.168.12.99/24", "2001:db8:12::99/64"], gateway=["192.168.12.1", "2001:db8:12::1"]
            )
        )
    )
    assert conf.families() == (4, 6)
    assert str(conf.gateway_for(6)) == "2001:db8:12::1"
    assert str(conf.address_for(6)) == "2001:db8:12::99/64"


def test_netconf_family_without_gateway_is_not_routed() -> None:
    conf = parse_netconf(mutated(setter("ip.addresses", ["192.168.12.99/24", "2001:db8:12::99/64"])))
    assert conf.families() == (4, 6)
    assert conf.routed_families() == (4,)


def test_netconf_ipv6_only_router_parses() -> None:
    conf = parse_netconf(
        mutated(
            lambda o: o["ip"].update(
                addresses=["2001:db8:12::99/64"], gateway="2001:db8:12::1", destinations=["80 tcp 2001:db8::26 8080"]
            )
        )
    )
    assert conf.routed_families() == (6,)


def test_netconf_first_address_of_a_family_is_the_snat_source() -> None:
    conf = parse_netconf(mutated(setter("ip.addresses", ["192.168.12.99/24", "192.168.12.98/24"])))
    assert str(conf.address_for(4)) == "192.168.12.99/24"


def test_netconf_dns_and_prev_result_are_carried() -> None:
    dns = {"nameservers": ["10.0.0.10"], "search": ["svc.cluster.local"]}
    prev = {"cniVersion": "0.4.0", "interfaces": [{"name": "eth0"}]}
    conf = parse_netconf(mutated(lambda o: o.update(dns=dns, prevResult=prev)))
    assert (conf.dns, conf.prev_result) == (dns, prev)


def test_netconf_unknown_keys_are_ignored() -> None:
    # Runtimes add capabilities, runtimeConfig, args and cni.dev/* keys.
    extra = {"capabilities": {"portMappings": True}, "args": {"cni": {}}, "cni.dev/valid-attachments": []}
    assert parse_netconf(mutated(lambda o: o.update(extra))).name == "egress-router-cni-nad"


# --- invalid configs -------------------------------------------------------------------------

INVALID = [
    # code 2: fields the upstream README promised but never implemented
    pytest.param(setter("podIP", {"192.168.12.99": "x"}), 2, ["'podIP'", "192.168.12.99"], id="podIP"),
    pytest.param(setter("ipConfig", {"namespace": "ns", "name": "cm"}), 2, ["'ipConfig'", '"cm"'], id="ipConfig"),
    # the ip object
    pytest.param(deleter("ip"), 7, ["'ip'"], id="missing-ip"),
    pytest.param(setter("ip", ["192.168.12.99/24"]), 7, ["'ip'"], id="ip-not-object"),
    pytest.param(deleter("ip.addresses"), 7, ["ip.addresses"], id="missing-addresses"),
    pytest.param(setter("ip.addresses", []), 7, ["ip.addresses"], id="empty-addresses"),
    pytest.param(setter("ip.addresses", "192.168.12.99/24"), 7, ["ip.addresses"], id="addresses-not-list"),
    pytest.param(setter("ip.addresses", ["192.168.12.99"]), 7, ['"192.168.12.99"', "CIDR"], id="address-no-prefix"),
    pytest.param(setter("ip.addresses", ["not an IP/24"]), 7, ["'not an IP/24'"], id="address-garbage"),
    pytest.param(setter("ip.addresses", ["192.168.12.99/33"]), 7, ["'192.168.12.99/33'"], id="address-prefix-33"),
    pytest.param(setter("ip.addresses", [24]), 7, ["24"], id="address-number"),
    pytest.param(setter("ip.addresses", ["224.0.0.5/24"]), 7, ["'224.0.0.5/24'"], id="address-multicast"),
    pytest.param(setter("ip.addresses", ["127.0.0.5/8"]), 7, ["'127.0.0.5/8'"], id="address-loopback"),
    pytest.param(setter("ip.addresses", ["0.0.0.0/0"]), 7, ["'0.0.0.0/0'"], id="address-unspecified"),
    pytest.param(
        setter("ip.addresses", ["192.168.12.99/24", "192.168.12.99/24"]), 7, ["twice"], id="address-duplicate"
    ),
    pytest.param(deleter("ip.gateway"), 7, ["ip.gateway"], id="missing-gateway"),
    pytest.param(setter("ip.gateway", ""), 7, ["ip.gateway"], id="empty-gateway"),
    pytest.param(setter("ip.gateway", "not an IP address"), 7, ['"not an IP address"'], id="gateway-garbage"),
    pytest.param(setter("ip.gateway", "192.168.12.1/24"), 7, ['"192.168.12.1/24"'], id="gateway-cidr"),
    pytest.param(setter("ip.gateway", 5), 7, ["5 in 'ip.gateway'"], id="gateway-number"),
    pytest.param(setter("ip.gateway", "2001:db8:12::1"), 7, ["2001:db8:12::1", "IPv6"], id="gateway-family-mismatch"),
    pytest.param(setter("ip.gateway", "192.168.12.99"), 7, ["192.168.12.99", "reserved"], id="gateway-is-reserved"),
    pytest.param(
        setter("ip.gateway", ["192.168.12.1", "192.168.12.2"]), 7, ["more than one IPv4"], id="two-ipv4-gateways"
    ),
    # interface
    pytest.param(setter("interfaceType", "ipvlan"), 7, ['"ipvlan"', "macvlan"], id="interfaceType-ipvlan"),
    pytest.param(setter("interfaceType", "aws-elastic-ip"), 7, ['"aws-elastic-ip"'], id="interfaceType-aws"),
    pytest.param(setter("interfaceArgs", "ens3"), 7, ["interfaceArgs"], id="interfaceArgs-not-object"),
    pytest.param(setter("interfaceArgs.mode", "macvtap"), 7, ['"macvtap"', "bridge"], id="mode-unknown"),
    pytest.param(setter("interfaceArgs.mode", 1), 7, ["interfaceArgs.mode"], id="mode-number"),
    pytest.param(setter("interfaceArgs.mtu", 67), 7, ["67", "68-65535"], id="mtu-67"),
    pytest.param(setter("interfaceArgs.mtu", "65536"), 7, ["65536"], id="mtu-65536"),
    pytest.param(setter("interfaceArgs.mtu", "abc"), 7, ['"abc"'], id="mtu-word"),
    pytest.param(setter("interfaceArgs.mtu", "-1500"), 7, ['"-1500"'], id="mtu-negative"),
    pytest.param(setter("interfaceArgs.mtu", 1500.5), 7, ["1500.5"], id="mtu-float"),
    pytest.param(setter("interfaceArgs.mtu", True), 7, ["true"], id="mtu-bool"),
    pytest.param(setter("interfaceArgs.master", "eth0/x"), 7, ['"eth0/x"'], id="master-slash"),
    pytest.param(setter("interfaceArgs.master", "a" * 16), 7, ["a" * 16], id="master-16-chars"),
    pytest.param(setter("interfaceArgs.master", 3), 7, ["3 is not"], id="master-number"),
    pytest.param(setter("podInterface", "eth 0"), 7, ['"eth 0"'], id="podInterface-space"),
    pytest.param(setter("podInterface", ".."), 7, ['".."'], id="podInterface-dotdot"),
    pytest.param(setter("podInterface", "e" * 16), 7, ["e" * 16], id="podInterface-too-long"),
    pytest.param(setter("podInterface", ["eth0"]), 7, ["podInterface"], id="podInterface-list"),
    # logging
    pytest.param(setter("log_level", "info"), 7, ['"info"', "debug, verbose, error, panic"], id="log_level-info"),
    pytest.param(setter("log_level", 3), 7, ["log_level"], id="log_level-number"),
    pytest.param(setter("log_format", "xml"), 7, ['"xml"'], id="log_format-xml"),
    pytest.param(setter("log_file", ["/tmp/x"]), 7, ["log_file"], id="log_file-list"),
    pytest.param(setter("log_file", "/tmp/a\0b"), 7, ["log_file"], id="log_file-nul"),
    # envelope
    pytest.param(deleter("name"), 7, ["'name'", "null"], id="name-missing"),
    pytest.param(setter("name", ""), 7, ["'name'"], id="name-empty"),
    pytest.param(setter("name", "-net"), 7, ['"-net"'], id="name-leading-dash"),
    pytest.param(setter("name", "my net"), 7, ['"my net"'], id="name-space"),
    pytest.param(setter("name", "a/b"), 7, ['"a/b"'], id="name-slash"),
    pytest.param(setter("name", 5), 7, ["'name' is 5"], id="name-number"),
    pytest.param(setter("type", "macvlan"), 7, ['"macvlan"', "egress-router"], id="type-other-plugin"),
    pytest.param(setter("dns", ["10.0.0.10"]), 7, ["'dns'"], id="dns-list"),
    pytest.param(setter("prevResult", []), 7, ["prevResult"], id="prevResult-list"),
    pytest.param(setter("cniVersion", "0.5.0"), 1, ["'0.5.0'", "1.1.0"], id="version-0.5.0"),
    pytest.param(setter("cniVersion", "1.0.1"), 1, ["'1.0.1'"], id="version-1.0.1"),
    pytest.param(setter("cniVersion", "v1.0.0"), 1, ["'v1.0.0'"], id="version-v-prefix"),
    pytest.param(setter("cniVersion", "1.0.0 "), 1, ["'1.0.0 '"], id="version-trailing-space"),
    pytest.param(setter("cniVersion", 1.0), 6, ["1.0"], id="version-number"),
    pytest.param(setter("cniVersion", ["1.0.0"]), 6, ['["1.0.0"]'], id="version-list"),
    pytest.param(
        setter("ip.destinations", ["10.0.0.1"] * (MAX_DESTINATIONS + 1)), 7, ["too many"], id="too-many-destinations"
    ),
]


@pytest.mark.parametrize(("mutation", "code", "fragments"), INVALID)
def test_netconf_invalid_config_is_refused_naming_the_value(
    mutation: Mutation, code: int, fragments: List[str]
) -> None:
    with pytest.raises(CniError) as exc:
        parse_netconf(mutated(mutation))
    assert int(exc.value.code) == code
    for fragment in fragments:
        assert fragment in str(exc.value)


def test_netconf_ipvlan_error_is_code_7_not_2() -> None:
    # The upstream README advertised ipvlan; asking for it is a config error, not an "unsupported field".
    with pytest.raises(CniError) as exc:
        parse_netconf(mutated(setter("interfaceType", "ipvlan")))
    assert exc.value.code == ErrorCode.INVALID_CONFIG


def test_netconf_version_error_lists_what_the_plugin_supports() -> None:
    with pytest.raises(CniError) as exc:
        check_version({"cniVersion": "0.5.0"})
    for version in SUPPORTED_VERSIONS:
        assert version in exc.value.details


def test_netconf_huge_version_string_is_truncated_in_the_message() -> None:
    with pytest.raises(CniError) as exc:
        check_version({"cniVersion": "9" * 100_000})
    assert exc.value.code == ErrorCode.INCOMPATIBLE_VERSION
    assert len(str(exc.value)) < 500


# --- decode_json -----------------------------------------------------------------------------


def test_decode_json_returns_the_object() -> None:
    assert decode_json(json.dumps(seed_conf()).encode()) == seed_conf()


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"{", id="truncated"),
        pytest.param(b"{'cniVersion': '1.0.0'}", id="single-quotes"),
        pytest.param(b'{"a": 1} {"b": 2}', id="two-documents"),
        pytest.param(b"\xff\xfe{}", id="not-utf8"),
        pytest.param(b"[]", id="array"),
        pytest.param(b'"string"', id="string"),
        pytest.param(b"null", id="null"),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, id="deep-nesting"),
    ],
)
def test_decode_json_refuses_non_objects_with_code_6(data: bytes) -> None:
    with pytest.raises(CniError) as exc:
        decode_json(data)
    assert exc.value.code == ErrorCode.DECODING_FAILURE


def test_decode_json_refuses_more_than_1_mib_with_code_7() -> None:
    padding = " " * MAX_CONFIG_BYTES
    with pytest.raises(CniError) as exc:
        decode_json(f'{{"name": "n"{padding}}}'.encode())
    assert exc.value.code == ErrorCode.INVALID_CONFIG
    assert str(MAX_CONFIG_BYTES) in str(exc.value)


def test_decode_json_accepts_exactly_1_mib() -> None:
    head = b'{"name": "n"'
    data = head + b" " * (MAX_CONFIG_BYTES - len(head) - 1) + b"}"
    assert len(data) == MAX_CONFIG_BYTES
    assert decode_json(data) == {"name": "n"}


# --- CNI_ARGS and interface names ------------------------------------------------------------


def test_cni_args_kubernetes_keys_are_kept() -> None:
    value = "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=router-0;K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u-1"
    args = parse_cni_args(value)
    assert args["K8S_POD_NAME"] == "router-0"
    assert args["IgnoreUnknown"] == "1"
    assert len(args) == 5


def test_cni_args_empty_value_is_allowed() -> None:
    assert parse_cni_args("K8S_POD_NAMESPACE=") == {"K8S_POD_NAMESPACE": ""}


@pytest.mark.parametrize("value", ["K8S_POD_NAME", "=value", "A=1;B"])
def test_cni_args_malformed_pair_is_refused_quoting_it(value: str) -> None:
    bad = value.split(";")[-1]
    with pytest.raises(ValueError, match="KEY=VALUE") as exc:
        parse_cni_args(value)
    assert repr(bad) in str(exc.value)


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("eth0", True),
        ("net1", True),
        ("a", True),
        ("a" * 15, True),
        ("é" * 7, True),  # 14 bytes
        ("", False),
        (".", False),
        ("..", False),
        ("a" * 16, False),
        ("é" * 8, False),  # 16 bytes
        ("a/b", False),
        ("a:b", False),
        ("a b", False),
        ("a\tb", False),
        ("a\nb", False),
        ("a\0b", False),
        ("\udcff", False),  # a surrogate-escaped byte from os.environ
    ],
)
def test_valid_ifname_follows_the_kernel_rules(name: str, valid: bool) -> None:
    assert valid_ifname(name) is valid


# --- regressions (bugs these tests found) ----------------------------------------


def test_netconf_mtu_non_ascii_digit_is_a_config_error() -> None:
    """Regression: str.isdigit() accepted '²', then int() raised ValueError (code 999)."""
    with pytest.raises(CniError) as exc:
        parse_netconf(mutated(setter("interfaceArgs.mtu", "²")))
    assert exc.value.code == ErrorCode.INVALID_CONFIG


def test_netconf_name_with_trailing_newline_is_refused() -> None:
    """Regression: _NAME_RE used '$', which also matches before a trailing newline."""
    with pytest.raises(CniError):
        parse_netconf(mutated(setter("name", "egress-router-cni-nad\n")))


def test_netconf_reserved_address_with_a_zone_id_is_refused() -> None:
    """Regression: an IPv6 zone id ('%...') was kept in the reserved address."""
    obj = mutated(lambda o: o["ip"].update(addresses=['2001:db8:12::99%x"y/64'], gateway="2001:db8:12::1"))
    obj["ip"]["destinations"] = []
    with pytest.raises(CniError):
        parse_netconf(obj)


def test_netconf_gateway_with_a_zone_id_is_refused() -> None:
    """Regression: an IPv6 zone id was kept in the gateway and reached the route request."""
    obj = mutated(lambda o: o["ip"].update(addresses=["fe80::99/64"], gateway="fe80::1%eth0", destinations=[]))
    with pytest.raises(CniError):
        parse_netconf(obj)


# --- input limits (issue 13) ----------------------------------------------------------------------


def _addresses(v4: int, v6: int) -> List[str]:
    return [f"192.168.12.{100 + i}/24" for i in range(v4)] + [f"2001:db8:12::{100 + i:x}/64" for i in range(v6)]


def test_config_accepts_the_address_limit_of_each_family() -> None:
    conf = parse_netconf(
        mutated(setter("ip.addresses", _addresses(MAX_ADDRESSES_PER_FAMILY, MAX_ADDRESSES_PER_FAMILY)))
    )
    assert len(conf.addresses) == 2 * MAX_ADDRESSES_PER_FAMILY


@pytest.mark.parametrize(
    ("v4", "v6", "detail"),
    [
        (MAX_ADDRESSES_PER_FAMILY + 1, 0, f"more than {MAX_ADDRESSES_PER_FAMILY} IPv4 addresses"),
        (1, MAX_ADDRESSES_PER_FAMILY + 1, f"more than {MAX_ADDRESSES_PER_FAMILY} IPv6 addresses"),
        (20_000, 0, f"20000 entries in 'ip.addresses'; the limit is {MAX_ADDRESSES_PER_FAMILY} per address family"),
    ],
)
def test_config_refuses_more_reserved_addresses_than_the_limit(v4: int, v6: int, detail: str) -> None:
    with pytest.raises(CniError) as exc:
        parse_netconf(mutated(setter("ip.addresses", _addresses(v4, v6))))
    assert exc.value.code == ErrorCode.INVALID_CONFIG
    assert detail in str(exc.value)


def test_config_duplicate_check_is_by_value_not_spelling() -> None:
    with pytest.raises(CniError) as exc:
        parse_netconf(mutated(setter("ip.addresses", ["192.168.12.99/24", " 192.168.12.99/24"])))
    assert "appears twice" in str(exc.value)
