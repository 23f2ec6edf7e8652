"""egress_router_cni.ipaddr against the running interpreter's ipaddress: the same text accepted and
refused, the same canonical spelling, version, value, packed bytes, zone id, equality, prefix
length, network address and containment; for strings made at random, for mutations of valid
addresses and for the edge cases below.

One difference is deliberate (see the module docstring): the four properties of an IPv4-mapped
IPv6 address are those of its IPv4 address, as in CPython 3.13.5, where 3.9-3.12 (and 3.13.0 but
for is_loopback) judge the IPv6 address itself. `_expected_flag` asks ipaddress the newer way.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Optional, Union

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from egress_router_cni.ipaddr import IPAddress, IPInterface, IPNetwork, ip_address, ip_interface, ip_network

SETTINGS = settings(max_examples=600, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
FLAGS = ("is_multicast", "is_unspecified", "is_loopback", "is_link_local")
Ref = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


def _ref(parse: Any, text: str) -> Optional[Any]:
    try:
        return parse(text)
    except ValueError:
        return None


def _ours(parse: Any, text: str) -> Optional[Any]:
    try:
        return parse(text)
    except ValueError as e:
        assert "does not appear to be an IPv4 or IPv6" in str(e), e  # ipaddress's words, which prevResult errors show
        return None


def _expected_flag(ref: Ref, name: str) -> bool:
    mapped = getattr(ref, "ipv4_mapped", None)
    return bool(getattr(mapped if mapped is not None else ref, name))


def _same_address(ours: IPAddress, ref: Ref) -> None:
    assert str(ours) == str(ref)
    assert ours.version == ref.version
    assert ours.value == int(ref)
    assert ours.packed == ref.packed
    assert ours.max_prefixlen == ref.max_prefixlen
    assert ours.scope == getattr(ref, "scope_id", None)
    for name in FLAGS:
        assert getattr(ours, name) is _expected_flag(ref, name), name
    mapped = getattr(ref, "ipv4_mapped", None)
    assert (str(ours.ipv4_mapped) if ours.ipv4_mapped else None) == (str(mapped) if mapped else None)
    assert ip_address(str(ours)) == ours  # the spelling parses back to the same address


def check_address(text: str) -> None:
    ref, ours = _ref(ipaddress.ip_address, text), _ours(ip_address, text)
    assert (ours is None) == (ref is None), (text, ours, ref)
    if ours is not None:
        _same_address(ours, ref)


def check_interface(text: str) -> None:
    ref, ours = _ref(ipaddress.ip_interface, text), _ours(ip_interface, text)
    assert (ours is None) == (ref is None), (text, ours, ref)
    if ours is not None:
        assert str(ours) == str(ref)
        _same_address(ours.ip, ref.ip)
        assert ours.prefixlen == ref.network.prefixlen
        assert str(ours.network) == str(ref.network)
        assert ours.network == ip_network(text)


def check_network(text: str) -> None:
    ref, ours = _ref(lambda t: ipaddress.ip_network(t, strict=False), text), _ours(ip_network, text)
    assert (ours is None) == (ref is None), (text, ours, ref)
    if ours is not None:
        assert str(ours) == str(ref)
        assert ours.prefixlen == ref.prefixlen
        assert ours.version == ref.version
        assert ours.netmask == int(ref.netmask)
        _same_address(ours.network_address, ref.network_address)


def check_all(text: str) -> None:
    check_address(text)
    check_interface(text)
    check_network(text)


HEX = "0123456789abcdefABCDEF"
NOISE = HEX + ":.%/ x+-_\u0663\u00b2"


def _v6_spellings(value: int, compress_at: int, run: int, upper: bool, dotted: bool, pad: bool) -> str:
    """One of the many valid spellings of an IPv6 address (any run of zeros may be '::', leading zeros kept...)."""
    hextets = [(value >> s) & 0xFFFF for s in range(112, -1, -16)]
    words = [f"{h:04x}" if pad else f"{h:x}" for h in hextets]
    if dotted:
        words[6:] = [f"{hextets[6] >> 8}.{hextets[6] & 0xFF}.{hextets[7] >> 8}.{hextets[7] & 0xFF}"]
    end = min(compress_at + run, len(words))
    if run and all(h == 0 for h in hextets[compress_at:end]) and compress_at < len(words):
        head, tail = ":".join(words[:compress_at]), ":".join(words[end:])
        text = f"{head}::{tail}"
    else:
        text = ":".join(words)
    return text.upper() if upper else text


def _mutate(text: str, edits: Any) -> str:
    for position, char, kind in edits:
        i = position % (len(text) + 1)
        if kind == 0:
            text = text[:i] + char + text[i:]
        elif kind == 1:
            text = text[:i] + text[i + 1 :]
        else:
            text = text[:i] + char + text[i + 1 :]
    return text


SPARSE_V6 = st.lists(st.sampled_from([0, 0, 0, 1, 0xFFFF, 0xFE80, 0xFF02, 0x2001]), min_size=8, max_size=8).map(
    lambda hs: sum(h << (16 * (7 - i)) for i, h in enumerate(hs))
)
V6_VALUES = st.one_of(
    st.integers(0, (1 << 128) - 1),
    SPARSE_V6,
    st.integers(0, (1 << 32) - 1).map(lambda v: (0xFFFF << 32) | v),  # IPv4-mapped
    st.integers(0, (1 << 32) - 1),  # IPv4-compatible (::a.b.c.d)
)
V6_TEXT = st.builds(
    _v6_spellings, V6_VALUES, st.integers(0, 8), st.integers(0, 8), st.booleans(), st.booleans(), st.booleans()
)
V4_TEXT = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.lists(
        st.integers(0, 300).map(str) | st.sampled_from(["00", "01", "010", "0x1", "", "1 "]), min_size=1, max_size=5
    ).map(".".join),
)
SCOPED = st.builds(lambda a, s: f"{a}%{s}", V6_TEXT, st.text(alphabet="eth0%/", max_size=4))
ADDRESS_TEXT = st.one_of(
    V4_TEXT,
    V6_TEXT,
    SCOPED,
    st.ip_addresses().map(str),
    st.builds(
        _mutate,
        st.one_of(V4_TEXT, V6_TEXT),
        st.lists(st.tuples(st.integers(0, 60), st.sampled_from(NOISE), st.integers(0, 2)), max_size=3),
    ),
    st.text(alphabet=NOISE, max_size=24),
    st.text(max_size=8),
)
NETMASKS = st.one_of(
    st.integers(0, 32).map(lambda n: ((1 << 32) - 1) ^ ((1 << (32 - n)) - 1)),  # netmasks
    st.integers(0, 32).map(lambda n: (1 << (32 - n)) - 1),  # hostmasks
    st.integers(0, (1 << 32) - 1),  # mostly neither
).map(lambda m: f"{m >> 24}.{(m >> 16) & 0xFF}.{(m >> 8) & 0xFF}.{m & 0xFF}")
PREFIX_TEXT = st.one_of(
    st.integers(-1, 130).map(str),
    st.integers(0, 130).map(lambda n: f"0{n}"),
    NETMASKS,
    st.text(alphabet="0123456789./+ x", max_size=6),
)
WITH_PREFIX = st.one_of(
    st.builds(lambda a, p: f"{a}/{p}", ADDRESS_TEXT, PREFIX_TEXT),
    st.builds(lambda a, p: f"{a}/{p}", st.ip_addresses().map(str), PREFIX_TEXT),
    ADDRESS_TEXT,
)


@SETTINGS
@given(ADDRESS_TEXT)
def test_address_text_matches_ipaddress(text: str) -> None:
    check_all(text)


@SETTINGS
@given(WITH_PREFIX)
def test_prefixed_text_matches_ipaddress(text: str) -> None:
    check_all(text)


@SETTINGS
@given(st.integers(0, (1 << 32) - 1), V6_VALUES)
def test_values_and_packed_match_ipaddress(v4: int, v6: int) -> None:
    _same_address(IPAddress(4, v4), ipaddress.IPv4Address(v4))
    _same_address(IPAddress(6, v6), ipaddress.IPv6Address(v6))
    assert IPAddress.from_packed(ipaddress.IPv4Address(v4).packed) == IPAddress(4, v4)
    assert IPAddress.from_packed(ipaddress.IPv6Address(v6).packed) == IPAddress(6, v6)


@SETTINGS
@given(WITH_PREFIX, WITH_PREFIX)
def test_equality_and_hash_match_ipaddress(a: str, b: str) -> None:
    for ours_parse, ref_parse in ((ip_address, ipaddress.ip_address), (ip_interface, ipaddress.ip_interface)):
        ours = [_ours(ours_parse, t) for t in (a, b)]
        refs = [_ref(ref_parse, t) for t in (a, b)]
        if None in ours or None in refs:
            continue
        assert (ours[0] == ours[1]) == (refs[0] == refs[1]), (a, b)
        if ours[0] == ours[1]:
            assert hash(ours[0]) == hash(ours[1])


@SETTINGS
@given(
    st.one_of(st.ip_addresses().map(str), V6_TEXT, SCOPED),
    st.integers(0, 128),
    st.one_of(st.ip_addresses().map(str), V6_TEXT, SCOPED),
)
def test_containment_matches_ipaddress(base: str, prefixlen: int, candidate: str) -> None:
    text = f"{base}/{prefixlen}"
    ours_net, ref_net = _ours(ip_network, text), _ref(lambda t: ipaddress.ip_network(t, strict=False), text)
    ours_addr, ref_addr = _ours(ip_address, candidate), _ref(ipaddress.ip_address, candidate)
    if ours_net is None or ours_addr is None:
        assert (ours_net, ours_addr).count(None) == (ref_net, ref_addr).count(None)
        return
    assert (ours_addr in ours_net) == (ref_addr in ref_net), (text, candidate)
    assert ours_net.network_address in ours_net
    assert (ip_address(str(ours_net.network_address)) in ours_net) is True


EDGES = [
    "", "0", "::", ":", ":::", "::1", "1::", "::1:2:3:4:5:6:7", "1:2:3:4:5:6:7::", "1::2:3:4:5:6:7:8",
    "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7::8", ":1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8:",
    "1::2::3", "12345::", "1:0:0:1:0:0:0:1", "1:0:0:1:1:0:0:1", "0:0:1:0:0:0:0:0", "1:0:1:0:1:0:1:0",
    "0:0:0:0:0:0:0:0", "0:0:0:0:0:0:0:1", "FE80::ABCD", "fe80::1%eth0", "fe80::1%", "fe80::1%a%b", "fe80::1%%",
    "::ffff:1.2.3.4", "::ffff:0.0.0.0", "::ffff:127.0.0.1", "::ffff:224.0.0.1", "::ffff:169.254.1.1",
    "::1.2.3.4", "::0.0.0.1", "1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:7:1.2.3.4", "::1.2.3", "::1.2.3.04",
    "::ffff:1.2.3.4%x", "1.2.3.4%x", "0000:0000:0000:0000:0000:ffff:255.255.255.255", "0" * 46 + "::",
    "00000::", "0.0.0.0", "255.255.255.255", "1.2.3.04", "01.2.3.4", "1.2.3.256", "1.2.3", "1.2.3.4.5",
    "1..2.3", "1.2.3.4 ", " 1.2.3.4", "\u0663.2.3.4", "1.2.3.\u00b2", "+1.2.3.4", "1.2.3.4\n", "127.0.0.1",
    "224.0.0.1", "239.255.255.255", "240.0.0.0", "169.254.0.1", "ff02::1", "fe80::", "febf:ffff::", "fec0::",
    "1.2.3.4/24", "1.2.3.4/255.255.255.0", "1.2.3.4/0.0.0.255", "1.2.3.4/255.0.255.0", "1.2.3.4/0.0.0.0",
    "1.2.3.4/255.255.255.255", "1.2.3.4/033", "1.2.3.4/33", "1.2.3.4/", "/24", "1.2.3.4/24/24", "1.2.3.4/+24",
    "1.2.3.4/ 24", "1.2.3.4/-1", "1.2.3.4/24 ", "::/129", "::/0128", "::/ffff::", "::/0", "::1/128",
    "fe80::1%eth0/64", "fe80::%eth0/64", "fe80::1/64%eth0", "2001:db8::1/64", "2001:db8::/32",
    "1.2:3::", "::1.2:3", "1:2:3:4:5:6:1.2.3.4:8", "1::2::", "::1::", "1:2:3:4:5:6:7:8%",
    "1.2.3.4/\u0663", "1.2.3.4/1.2.3.04", "10.0.0.1/8", "::ffff:10.0.0.1/104",
]  # fmt: skip


@pytest.mark.parametrize("text", EDGES)
def test_edges_match_ipaddress(text: str) -> None:
    check_all(text)


def test_mapped_flags_follow_the_ipv4_address() -> None:
    assert ip_address("::ffff:224.0.0.1").is_multicast
    assert ip_address("::ffff:127.0.0.1").is_loopback
    assert ip_address("::ffff:0.0.0.0").is_unspecified
    assert ip_address("::ffff:169.254.1.1").is_link_local
    assert not ip_address("::ffff:1.2.3.4").is_multicast


def test_compression_picks_the_longest_then_the_first_run() -> None:
    assert str(ip_address("1:0:0:1:0:0:0:1")) == "1:0:0:1::1"
    assert str(ip_address("1:0:0:1:1:0:0:1")) == "1::1:1:0:0:1"
    assert str(ip_address("1:0:1:0:1:0:1:0")) == "1:0:1:0:1:0:1:0"
    assert str(ip_address("2001:DB8:0:0:0:0:0:1")) == "2001:db8::1"


def test_interface_network_and_types() -> None:
    iface = ip_interface("192.168.12.99/255.255.255.0")
    assert str(iface) == "192.168.12.99/24"
    assert iface.network == IPNetwork(ip_address("192.168.12.0"), 24)
    assert iface == IPInterface(ip_address("192.168.12.99"), 24)
    assert iface != ip_interface("192.168.12.99/25")
    assert ip_address("192.168.12.99") in iface.network
    assert ip_address("::ffff:192.168.12.99") not in iface.network  # another family
    assert "192.168.12.99" not in iface.network  # type: ignore[operator]  # only addresses are contained
    assert ip_address("1.2.3.4") != "1.2.3.4"
    with pytest.raises(ValueError):
        IPAddress(4, 1 << 32)
    with pytest.raises(ValueError):
        IPAddress.from_packed(b"\0" * 5)
