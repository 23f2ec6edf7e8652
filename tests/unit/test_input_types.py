"""Every value a config or prevResult gives is type-checked before ipaddress, int() or str methods see it.

Property tests (hypothesis): take a valid document, put a value of the wrong
type (bool, int, float including inf/nan/1e999, null, list, object) where a
string is expected, and the parser must refuse it with the CNI error code of
that document (7 for the config, 6 for prevResult, cniVersion 6) naming the
key. Never another exception, and never silently accepted: `ipaddress` takes
an int (so False, True) as an address, `str()` turns anything into some text,
and `x or default` takes false, 0, [] and {} for the default.
"""

from __future__ import annotations

import copy
import json
from typing import Any, Dict, List, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from egress_router_cni.config import parse_netconf
from egress_router_cni.errors import CniError
from egress_router_cni.result import parse_result
from tests.samples import SEED_DESTINATIONS

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

# Not a string, and not null: every JSON type but string, with the numbers that break naive code.
NOT_STRING = st.one_of(
    st.booleans(),
    st.sampled_from([0, 1, -1, 2**64, 3232238691]),  # 3232238691 == 192.168.12.99 as an int
    st.integers(),
    st.sampled_from([0.0, 1.5, float("inf"), float("-inf"), float("nan"), 1e999, -0.0]),
    st.floats(),
    st.lists(st.one_of(st.text(max_size=8), st.integers()), max_size=3),
    st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
)
NOT_STRING_OR_NULL = st.one_of(NOT_STRING, st.none())


def valid_config() -> Dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": "egress-router-cni-nad",
        "type": "egress-router",
        "interfaceType": "macvlan",
        "ip": {
            "addresses": ["192.168.12.99/24", "2001:db8:12::99/64"],
            "gateway": ["192.168.12.1", "2001:db8:12::1"],
            "destinations": list(SEED_DESTINATIONS),
            "fallbackIP": "203.0.113.99",
        },
        "interfaceArgs": {"master": "ens4", "mode": "bridge", "mtu": 1500},
        "podInterface": "eth0",
        "log_file": "/tmp/egress-router-log",
        "log_level": "debug",
        "log_format": "text",
        "natBackend": "nftables",
        "prevResult": valid_prev_result(),
    }


def valid_prev_result() -> Dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "net1", "mac": "0a:58:0a:80:0a:12", "sandbox": "/var/run/netns/x"}],
        "ips": [{"address": "192.168.12.99/24", "gateway": "192.168.12.1", "interface": 0}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "192.168.12.1"}],
        "dns": {},
    }


def valid_prev_result_020() -> Dict[str, Any]:
    return {
        "cniVersion": "0.2.0",
        "ip4": {"ip": "192.168.12.99/24", "gateway": "192.168.12.1", "routes": [{"dst": "0.0.0.0/0"}]},
    }


Path = Tuple[Any, ...]

# Where the config expects a string. `optional`: null (and "") mean "the default" there.
CONFIG_STRINGS: List[Tuple[Path, bool]] = [
    (("name",), False),
    (("type",), True),
    (("interfaceType",), True),
    (("ip", "addresses", 0), False),
    (("ip", "addresses", 1), False),
    (("ip", "gateway"), False),
    (("ip", "gateway", 0), False),
    (("ip", "gateway", 1), False),
    (("ip", "destinations", 0), False),
    (("ip", "destinations", 2), False),
    (("ip", "fallbackIP"), True),
    (("interfaceArgs", "master"), True),
    (("interfaceArgs", "mode"), True),
    (("podInterface",), True),
    (("log_file",), True),
    (("log_level",), True),
    (("log_format",), True),
    (("natBackend",), True),
]
# Where a prevResult expects a string, in the current shape and in 0.1/0.2's.
PREV_STRINGS: List[Tuple[Path, bool]] = [
    (("interfaces", 0, "name"), False),
    (("interfaces", 0, "mac"), True),
    (("interfaces", 0, "sandbox"), True),
    (("ips", 0, "address"), False),
    (("ips", 0, "gateway"), True),
    (("routes", 0, "dst"), False),
    (("routes", 0, "gw"), True),
]
PREV_020_STRINGS: List[Tuple[Path, bool]] = [
    (("ip4", "ip"), False),
    (("ip4", "gateway"), True),
    (("ip4", "routes", 0, "dst"), False),
]


def put(doc: Any, path: Path, value: Any) -> Any:
    """A deep copy of doc with the value at path replaced."""
    out = copy.deepcopy(doc)
    target = out
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return out


def field_name(path: Path) -> str:
    return ".".join(str(p) for p in path if not isinstance(p, int))


def wrong_values(optional: bool) -> st.SearchStrategy[Any]:
    return NOT_STRING if optional else NOT_STRING_OR_NULL


def test_the_valid_documents_are_valid() -> None:
    conf = parse_netconf(valid_config())
    assert conf.master == "ens4" and len(conf.addresses) == 2
    assert [ip.address for ip in parse_result(valid_prev_result(), "1.0.0").ips] == ["192.168.12.99/24"]
    assert [ip.address for ip in parse_result(valid_prev_result_020(), "0.2.0").ips] == ["192.168.12.99/24"]


@pytest.mark.parametrize(("path", "optional"), CONFIG_STRINGS, ids=[".".join(map(str, p)) for p, _ in CONFIG_STRINGS])
@SETTINGS
@given(data=st.data())
def test_a_config_string_of_another_type_is_a_code_7_error(path: Path, optional: bool, data: st.DataObject) -> None:
    value = data.draw(wrong_values(optional))
    doc = put(valid_config(), path, value)
    with pytest.raises(CniError) as raised:
        parse_netconf(doc)
    assert int(raised.value.code) == 7, raised.value
    key = field_name(path).split(".")[-1]
    assert key[:-1].lower() in str(raised.value).lower(), f"the error must name {key}: {raised.value}"


@SETTINGS
@given(value=NOT_STRING)
def test_cni_version_of_another_type_is_a_code_6_error(value: Any) -> None:
    with pytest.raises(CniError) as raised:
        parse_netconf(put(valid_config(), ("cniVersion",), value))
    assert int(raised.value.code) == 6


@SETTINGS
@given(value=st.one_of(st.booleans(), st.floats(), st.sampled_from([1e999, float("nan"), 1500.0]), st.lists(st.none())))
def test_an_mtu_that_is_not_a_whole_number_is_a_code_7_error(value: Any) -> None:
    """`false == 0`, so `mtu: false` used to pass for "the master's MTU"; `true` is not 1 either."""
    with pytest.raises(CniError) as raised:
        parse_netconf(put(valid_config(), ("interfaceArgs", "mtu"), value))
    assert int(raised.value.code) == 7 and "mtu" in str(raised.value)


@pytest.mark.parametrize("key", ["interfaceArgs", "dns", "prevResult"])
@SETTINGS
@given(value=st.one_of(st.just(True), st.integers().filter(bool), st.text(min_size=1), st.lists(st.none(), min_size=1)))
def test_an_object_of_another_type_is_a_code_7_error(key: str, value: Any) -> None:
    with pytest.raises(CniError) as raised:
        parse_netconf(put(valid_config(), (key,), value))
    assert int(raised.value.code) == 7 and key in str(raised.value)


@pytest.mark.parametrize("value", [False, 0, [], {}])
def test_falsy_values_of_the_wrong_type_are_not_the_default(value: Any) -> None:
    """Only absent, null and "" mean "use the default"."""
    for path in (("interfaceArgs", "master"), ("podInterface",), ("log_level",), ("natBackend",)):
        with pytest.raises(CniError) as raised:
            parse_netconf(put(valid_config(), path, value))
        assert int(raised.value.code) == 7


@pytest.mark.parametrize(("path", "optional"), PREV_STRINGS, ids=[".".join(map(str, p)) for p, _ in PREV_STRINGS])
@pytest.mark.parametrize("version", ["0.3.1", "0.4.0", "1.0.0", "1.1.0"])
@SETTINGS
@given(data=st.data())
def test_a_prev_result_string_of_another_type_is_a_code_6_error(
    path: Path, optional: bool, version: str, data: st.DataObject
) -> None:
    value = data.draw(wrong_values(optional))
    doc = put(valid_prev_result(), path, value)
    with pytest.raises(CniError) as raised:
        parse_result(doc, version)
    assert int(raised.value.code) == 6, raised.value
    assert ".".join(map(str, path)).replace(".0.", "[0].") in str(raised.value), raised.value


@pytest.mark.parametrize(("path", "optional"), PREV_020_STRINGS, ids=["ip4.ip", "ip4.gateway", "ip4.routes.dst"])
@SETTINGS
@given(data=st.data())
def test_a_020_prev_result_string_of_another_type_is_a_code_6_error(
    path: Path, optional: bool, data: st.DataObject
) -> None:
    value = data.draw(wrong_values(optional))
    with pytest.raises(CniError) as raised:
        parse_result(put(valid_prev_result_020(), path, value), "0.2.0")
    assert int(raised.value.code) == 6, raised.value


@SETTINGS
@given(value=st.one_of(st.booleans(), st.floats(), st.text(max_size=5), st.lists(st.integers(), max_size=2)))
def test_a_prev_result_interface_index_that_is_not_an_integer_is_a_code_6_error(value: Any) -> None:
    with pytest.raises(CniError) as raised:
        parse_result(put(valid_prev_result(), ("ips", 0, "interface"), value), "1.0.0")
    assert int(raised.value.code) == 6 and "interface" in str(raised.value)


@pytest.mark.parametrize("key", ["interfaces", "ips", "routes"])
@pytest.mark.parametrize("value", [True, 5, "eth0", {"name": "eth0"}, 1e999])
def test_a_prev_result_list_of_another_type_is_a_code_6_error(key: str, value: Any) -> None:
    with pytest.raises(CniError) as raised:
        parse_result(put(valid_prev_result(), (key,), value), "1.0.0")
    assert int(raised.value.code) == 6 and key in str(raised.value)


def test_the_issue_example_address_false_is_refused_on_every_python() -> None:
    """On 3.11 ipaddress took False for 0.0.0.0/32; on 3.13 it raised ValueError from deep inside."""
    doc = json.loads('{"cniVersion": "1.0.0", "ips": [{"address": false}]}')
    with pytest.raises(CniError) as raised:
        parse_result(doc, "1.0.0")
    assert int(raised.value.code) == 6
    assert str(raised.value) == ("failed to parse prevResult: prevResult.ips[0].address is false; expected a string")
