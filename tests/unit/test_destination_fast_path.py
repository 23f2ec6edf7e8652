"""parse_destination's fast paths (no regular expression for ports, ip_address without a prefix)
accept and refuse exactly what the former code did: the regex [0-9]{1,5} and ipaddress.ip_interface
(an IPv4-mapped address judged by its IPv4 address, as egress_router_cni.ipaddr and current CPython do)."""

from __future__ import annotations

import ipaddress
import re
from typing import Optional

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from egress_router_cni.config import _dest_address, _port
from egress_router_cni.errors import InvalidConfig

SETTINGS = settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
_FORMER_PORT_RE = re.compile(r"[0-9]{1,5}")


def _former_port(text: str) -> Optional[int]:
    if not _FORMER_PORT_RE.fullmatch(text) or not 1 <= int(text) <= 65535:
        return None
    return int(text)


def _former_address(text: str) -> Optional[str]:
    if "%" in text:
        return None
    try:
        ip = ipaddress.ip_interface(text).ip
    except ValueError:
        return None
    # An IPv4-mapped address is judged by its IPv4 address, as current CPython does (egress_router_cni.ipaddr).
    mapped = getattr(ip, "ipv4_mapped", None)
    judged = mapped if mapped is not None else ip
    if judged.is_unspecified or judged.is_multicast:
        return None
    return str(ip)


def _port_now(text: str) -> Optional[int]:
    try:
        return _port("e", text, "port")
    except InvalidConfig:
        return None


def _address_now(text: str) -> Optional[str]:
    try:
        return str(_dest_address("e", text))
    except InvalidConfig:
        return None


PORT_TEXT = st.one_of(
    st.integers(-5, 700000).map(str),
    st.text(alphabet="0123456789+-_ \u00b2\u0663\uff10x", max_size=7),
    st.text(max_size=6),
)


@SETTINGS
@given(PORT_TEXT)
def test_port_parsing_matches_the_former_regex(text: str) -> None:
    assert _port_now(text) == _former_port(text)


ADDRESS_TEXT = st.one_of(
    st.ip_addresses().map(str),
    st.builds(lambda ip, p: f"{ip}/{p}", st.ip_addresses(), st.integers(-1, 130)),
    st.text(alphabet="0123456789abcdef.:/%", max_size=20),
    st.text(max_size=12),
)


@SETTINGS
@given(ADDRESS_TEXT)
def test_address_parsing_matches_ip_interface(text: str) -> None:
    assert _address_now(text) == _former_address(text)


# The edges, always run: the port range and its leading zeros, a non-ASCII digit, the
# prefix form of the upstream docs, refused targets, zone ids, IPv4-mapped IPv6.
@pytest.mark.parametrize("text", ["65535", "65536", "00080", "000080", "\u0663", "", "0"])
def test_port_edges_match_the_former_regex(text: str) -> None:
    assert _port_now(text) == _former_port(text)


@pytest.mark.parametrize(
    "text",
    ["203.0.113.26/30", "0.0.0.0", "224.0.0.1", "fe80::1%eth0", "::ffff:1.2.3.4", "::ffff:0:0", "1.2.3.04", " 1.2.3.4"],
)
def test_address_edges_match_ip_interface(text: str) -> None:
    assert _address_now(text) == _former_address(text)


@pytest.mark.parametrize("text", ["1.2.3.4", "2001:db8::1", "203.0.113.26/30"])
def test_address_accepts_plain_and_prefixed(text: str) -> None:
    assert _address_now(text) == text.split("/")[0]
