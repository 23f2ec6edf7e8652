"""Result codecs: the ADD result in exactly the format of each cniVersion (cni-contract.md §3)."""

from __future__ import annotations

import json
from typing import Any, Dict

import pytest

from egress_router_cni.config import SUPPORTED_VERSIONS
from egress_router_cni.errors import CniError, ErrorCode
from egress_router_cni.result import Interface, IPConfig, Result, Route, chained_result, parse_result

NETNS = "/var/run/netns/cni-1234"
MAC = "0a:58:c0:a8:0c:63"
DNS = {"nameservers": ["10.0.0.10"], "domain": "cluster.local", "search": ["svc.cluster.local"], "options": ["ndots:5"]}
V4_ROUTE = {"dst": "0.0.0.0/0", "gw": "192.168.12.1"}
V6_ROUTE = {"dst": "::/0", "gw": "2001:db8:12::1"}
LEGACY = ("0.1.0", "0.2.0")
VERSIONED_IPS = ("0.3.0", "0.3.1", "0.4.0")
CURRENT = ("1.0.0", "1.1.0")


def router_result(dns: Any = DNS) -> Result:
    """What ADD reports for the seed router: net1 in the pod, 192.168.12.99/24 via 192.168.12.1."""
    return Result(
        interfaces=[Interface(name="net1", mac=MAC, sandbox=NETNS)],
        ips=[IPConfig(address="192.168.12.99/24", gateway="192.168.12.1", interface=0)],
        routes=[Route(dst="0.0.0.0/0", gw="192.168.12.1")],
        dns=dns,
    )


def dual_result() -> Result:
    return Result(
        interfaces=[Interface(name="net1", mac=MAC, sandbox=NETNS)],
        ips=[
            IPConfig(address="192.168.12.99/24", gateway="192.168.12.1", interface=0),
            IPConfig(address="192.168.12.98/24", gateway="192.168.12.1", interface=0),
            IPConfig(address="2001:db8:12::99/64", gateway="2001:db8:12::1", interface=0),
        ],
        routes=[Route(dst="0.0.0.0/0", gw="192.168.12.1"), Route(dst="::/0", gw="2001:db8:12::1")],
        dns=DNS,
    )


def expected_rich(version: str, with_ip_version: bool) -> Dict[str, Any]:
    ip: Dict[str, Any] = {"address": "192.168.12.99/24", "gateway": "192.168.12.1", "interface": 0}
    if with_ip_version:
        ip = {"version": "4", **ip}
    return {
        "cniVersion": version,
        "interfaces": [{"name": "net1", "mac": MAC, "sandbox": NETNS}],
        "ips": [ip],
        "routes": [V4_ROUTE],
        "dns": DNS,
    }


@pytest.mark.parametrize("version", LEGACY)
def test_result_0_2_style_has_ip4_and_no_interfaces(version: str) -> None:
    assert router_result().to_dict(version) == {
        "cniVersion": version,
        "ip4": {"ip": "192.168.12.99/24", "gateway": "192.168.12.1", "routes": [V4_ROUTE]},
        "dns": DNS,
    }


@pytest.mark.parametrize("version", VERSIONED_IPS)
def test_result_0_3_and_0_4_have_ips_version(version: str) -> None:
    assert router_result().to_dict(version) == expected_rich(version, with_ip_version=True)


@pytest.mark.parametrize("version", CURRENT)
def test_result_1_x_has_no_ips_version(version: str) -> None:
    assert router_result().to_dict(version) == expected_rich(version, with_ip_version=False)


def test_result_covers_every_supported_version() -> None:
    assert set(LEGACY + VERSIONED_IPS + CURRENT) == set(SUPPORTED_VERSIONS)


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_result_echoes_the_cni_version_string(version: str) -> None:
    assert router_result().to_dict(version)["cniVersion"] == version


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_result_is_json_serialisable(version: str) -> None:
    doc = router_result().to_dict(version)
    assert json.loads(json.dumps(doc)) == doc


@pytest.mark.parametrize("version", VERSIONED_IPS + CURRENT)
def test_result_sandbox_is_the_literal_netns_path(version: str) -> None:
    assert router_result().to_dict(version)["interfaces"][0]["sandbox"] == NETNS


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_result_dns_is_a_copy(version: str) -> None:
    dns = {"nameservers": ["10.0.0.10"]}
    doc = router_result(dns).to_dict(version)
    doc["dns"]["domain"] = "changed"
    assert dns == {"nameservers": ["10.0.0.10"]}


@pytest.mark.parametrize("version", CURRENT + VERSIONED_IPS)
def test_result_without_dns_has_an_empty_dns_object(version: str) -> None:
    assert router_result(dns=None).to_dict(version)["dns"] == {}


def test_result_0_2_keeps_the_first_ip_of_each_family_and_splits_routes() -> None:
    assert dual_result().to_dict("0.2.0") == {
        "cniVersion": "0.2.0",
        "ip4": {"ip": "192.168.12.99/24", "gateway": "192.168.12.1", "routes": [V4_ROUTE]},
        "ip6": {"ip": "2001:db8:12::99/64", "gateway": "2001:db8:12::1", "routes": [V6_ROUTE]},
        "dns": DNS,
    }


def test_result_0_4_recomputes_ip_version_per_family() -> None:
    ips = dual_result().to_dict("0.4.0")["ips"]
    assert [ip["version"] for ip in ips] == ["4", "4", "6"]


def test_result_1_0_keeps_every_ip_in_order() -> None:
    ips = dual_result().to_dict("1.0.0")["ips"]
    assert [ip["address"] for ip in ips] == ["192.168.12.99/24", "192.168.12.98/24", "2001:db8:12::99/64"]


@pytest.mark.parametrize("version", LEGACY)
def test_result_without_ips_cannot_be_converted_to_0_2(version: str) -> None:
    l2_only = Result(interfaces=[Interface(name="net1", mac=MAC, sandbox=NETNS)])
    with pytest.raises(CniError, match="cannot convert: no valid IP addresses"):
        l2_only.to_dict(version)


@pytest.mark.parametrize("version", VERSIONED_IPS + CURRENT)
def test_result_without_ips_is_fine_from_0_3_on(version: str) -> None:
    doc = Result(interfaces=[Interface(name="net1")]).to_dict(version)
    assert "ips" not in doc
    assert doc["interfaces"] == [{"name": "net1"}]


def test_result_ip_without_gateway_or_interface_omits_them() -> None:
    doc = Result(ips=[IPConfig(address="192.168.12.99/24")]).to_dict("1.0.0")
    assert doc["ips"] == [{"address": "192.168.12.99/24"}]


def test_result_interface_index_zero_is_kept() -> None:
    # 0 is a valid index (the first interface); it must not be dropped as "falsy".
    assert router_result().to_dict("1.1.0")["ips"][0]["interface"] == 0


# --- parse_result (prevResult) ---------------------------------------------------------------


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_parse_result_round_trips_in_every_version(version: str) -> None:
    doc = dual_result().to_dict(version)
    assert parse_result(doc, version).to_dict(version) == doc


@pytest.mark.parametrize("version", VERSIONED_IPS + CURRENT)
def test_parse_result_restores_the_current_shape(version: str) -> None:
    assert parse_result(dual_result().to_dict(version), version) == dual_result()


def test_parse_result_0_2_up_converts_ip4_and_ip6() -> None:
    parsed = parse_result(dual_result().to_dict("0.2.0"), "0.2.0")
    assert [ip.address for ip in parsed.ips] == ["192.168.12.99/24", "2001:db8:12::99/64"]
    assert [r.dst for r in parsed.routes] == ["0.0.0.0/0", "::/0"]
    assert parsed.interfaces == []


def test_parse_result_accepts_an_ip4_style_document_under_a_newer_version() -> None:
    doc = {"cniVersion": "0.2.0", "ip4": {"ip": "10.1.0.5/16", "gateway": "10.1.0.1"}}
    assert [ip.address for ip in parse_result(doc, "1.0.0").ips] == ["10.1.0.5/16"]


def test_parse_result_tolerates_interface_minus_one_and_absent() -> None:
    doc = {"ips": [{"address": "10.1.0.5/16", "interface": -1}, {"address": "10.1.0.6/16"}]}
    assert [ip.interface for ip in parse_result(doc, "1.0.0").ips] == [-1, None]


def test_parse_result_empty_document_is_an_empty_result() -> None:
    assert parse_result({}, "1.0.0") == Result()


@pytest.mark.parametrize(
    ("doc", "version"),
    [
        pytest.param({"ips": [{"gateway": "10.1.0.1"}]}, "1.0.0", id="ip-without-address"),
        pytest.param({"ips": [{"address": "bogus"}]}, "1.0.0", id="bad-address"),
        pytest.param({"ips": [{"address": "10.1.0.5/16", "interface": "x"}]}, "1.0.0", id="bad-interface-index"),
        pytest.param({"ips": ["10.1.0.5/16"]}, "1.0.0", id="ip-not-object"),
        pytest.param({"interfaces": [{"mac": MAC}]}, "1.0.0", id="interface-without-name"),
        pytest.param({"interfaces": ["net1"]}, "0.4.0", id="interface-not-object"),
        pytest.param({"routes": [{"gw": "10.1.0.1"}]}, "1.0.0", id="route-without-dst"),
        pytest.param({"ip4": {"gateway": "10.1.0.1"}}, "0.2.0", id="ip4-without-ip"),
        pytest.param({"ip4": {"ip": "bogus"}}, "0.2.0", id="ip4-bad-ip"),
        pytest.param({"ip4": ["10.1.0.5/16"]}, "0.2.0", id="ip4-not-object"),
        pytest.param({"ip4": {"ip": "10.1.0.5/16", "routes": ["0.0.0.0/0"]}}, "0.2.0", id="ip4-route-not-object"),
    ],
)
def test_parse_result_malformed_prev_result_is_a_decoding_failure(doc: Dict[str, Any], version: str) -> None:
    with pytest.raises(CniError) as exc:
        parse_result(doc, version)
    assert exc.value.code == ErrorCode.DECODING_FAILURE


# --- regressions (bugs these tests found) ----------------------------------------


def test_result_0_2_conversion_accepts_a_route_with_host_bits() -> None:
    """Regression: 0.2 conversion used a strict ip_network(), so a route dst with host bits raised (999)."""
    # Go's net.ParseCIDR accepts "10.1.2.3/24"; a prevResult may carry such a route.
    result = Result(ips=[IPConfig(address="10.1.2.3/24")], routes=[Route(dst="10.1.2.3/24")])
    assert result.to_dict("0.2.0")["ip4"]["routes"] == [{"dst": "10.1.2.3/24"}]


@pytest.mark.parametrize("version", ["0.2.0", "0.4.0", "1.0.0"])
@pytest.mark.parametrize("dst", ["0.0.04.0/0", "default", "10.0.0.0/33", ""])
def test_parse_result_bad_route_destination_is_a_decoding_failure(version: str, dst: str) -> None:
    # Found by the fuzzer: a chained ADD at 0.2.0 with this prevResult ended in code 999.
    doc: Dict[str, Any] = {"ips": [{"address": "10.128.10.18/23"}], "routes": [{"dst": dst}]}
    if version == "0.2.0":
        doc = {"ip4": {"ip": "10.128.10.18/23", "routes": [{"dst": dst}]}}
    with pytest.raises(CniError) as exc:
        parse_result(doc, version)
    assert exc.value.code == ErrorCode.DECODING_FAILURE


@pytest.mark.parametrize("version", ["0.2.0", "1.0.0"])
def test_parse_result_bad_gateway_is_a_decoding_failure(version: str) -> None:
    doc: Dict[str, Any] = {"ips": [{"address": "10.128.10.18/23", "gateway": "10.128.10.1; x"}]}
    if version == "0.2.0":
        doc = {"ip4": {"ip": "10.128.10.18/23", "gateway": "10.128.10.1; x"}}
    with pytest.raises(CniError) as exc:
        parse_result(doc, version)
    assert exc.value.code == ErrorCode.DECODING_FAILURE


# --- chained_result: prevResult of ADD, checked before any change (issue 13) -----------------------


def test_chained_result_refuses_a_sandbox_that_is_not_the_pod() -> None:
    prev = {"interfaces": [{"name": "eth0", "sandbox": "/tmp/fifo"}], "ips": [{"address": "10.1.0.5/16"}]}
    with pytest.raises(CniError) as exc:
        chained_result(prev, "1.0.0", NETNS)
    assert exc.value.code == ErrorCode.INVALID_CONFIG
    assert "/tmp/fifo" in str(exc.value) and NETNS in str(exc.value)


def test_chained_result_keeps_a_previous_plugin_in_the_same_pod() -> None:
    prev = {"interfaces": [{"name": "eth0", "sandbox": NETNS}], "ips": [{"address": "10.1.0.5/16", "interface": 0}]}
    result = chained_result(prev, "1.0.0", NETNS)
    assert result is not None and result.interfaces == [Interface(name="eth0", sandbox=NETNS)]


@pytest.mark.parametrize("index", [1, -1])
def test_chained_result_refuses_an_interface_index_outside_its_list(index: int) -> None:
    prev = {"interfaces": [{"name": "eth0"}], "ips": [{"address": "10.1.0.5/16", "interface": index}]}
    with pytest.raises(CniError) as exc:
        chained_result(prev, "1.0.0", NETNS)
    assert exc.value.code == ErrorCode.INVALID_CONFIG


def test_chained_result_infinite_interface_index_is_a_decoding_failure() -> None:
    prev = json.loads('{"ips": [{"address": "10.1.0.5/16", "interface": 1e999}]}')
    with pytest.raises(CniError) as exc:
        chained_result(prev, "1.0.0", NETNS)
    assert exc.value.code == ErrorCode.DECODING_FAILURE


@pytest.mark.parametrize("version", LEGACY)
def test_chained_result_is_ignored_before_chains_existed(version: str) -> None:
    assert chained_result({"ip4": {"ip": "bogus"}}, version, NETNS) is None
