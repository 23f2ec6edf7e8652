"""IP addresses, interfaces and networks for the CNI hot path, without the ipaddress module.

`import ipaddress` costs ~5 ms CPU per exec (it imports functools and
collections, and builds a few dozen classes and networks); ADD, CHECK, DEL
and the node policy need only a little of it: parse an address, an
'address/prefix' or a network, its version, prefix length, packed bytes,
containment, the canonical text, and four properties the config validation
asks. This module does that with str methods and int arithmetic.

It accepts exactly what ipaddress accepts for a string (IPv4 octets without
leading zeros, an IPv4 netmask or hostmask after the '/', IPv6 '::', an IPv4
suffix and a '%scope' zone id) and spells every address as ipaddress does:
the longest run of two or more zero hextets compressed (the first one on a
tie), lower-case hex, and an IPv4-mapped address as the running interpreter
prints it (::ffff:a.b.c.d from Python 3.13 on, ::ffff:xxxx:xxxx before).
is_multicast, is_unspecified, is_loopback and is_link_local of an IPv4-mapped
address are those of its IPv4 address, as in CPython 3.13.5 (3.13.0 for
is_loopback only; 3.9-3.12 judge the IPv6 address itself).
tests/unit/test_ipaddr.py checks all of it against the running interpreter's
ipaddress with hypothesis.

Only strings are parsed: ipaddress also takes ints, bytes and tuples, which
the plugin's inputs never are (their types are checked before parsing).
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Optional, Tuple

_BITS = {4: 32, 6: 128}
_ALL_ONES = {4: (1 << 32) - 1, 6: (1 << 128) - 1}
_V6_CHARS = frozenset("0123456789abcdefABCDEF:.")
# CPython 3.13 (gh-87799) prints ::ffff:0:0/96 addresses with a dotted IPv4 tail.
_DOTTED_MAPPED = sys.version_info >= (3, 13)


class IPAddress:
    """An IPv4 or IPv6 address: version 4 or 6, value the address as an int, scope an IPv6 zone id or None."""

    __slots__ = ("scope", "value", "version")

    def __init__(self, version: int, value: int, scope: Optional[str] = None) -> None:
        if version not in _BITS or not 0 <= value <= _ALL_ONES[version]:
            raise ValueError(f"{value!r} is not an IPv{version} address value")
        self.version = version
        self.value = value
        self.scope = scope if version == 6 else None

    @classmethod
    def from_packed(cls, data: bytes) -> IPAddress:
        """The address in 4 or 16 bytes, network order (as the kernel and inet_pton hand it)."""
        if len(data) not in (4, 16):
            raise ValueError(f"{len(data)} bytes are not an IP address")
        return cls(4 if len(data) == 4 else 6, int.from_bytes(data, "big"))

    @property
    def packed(self) -> bytes:
        """The address in network byte order: 4 or 16 bytes."""
        return self.value.to_bytes(4 if self.version == 4 else 16, "big")

    @property
    def max_prefixlen(self) -> int:
        """32 or 128."""
        return _BITS[self.version]

    @property
    def ipv4_mapped(self) -> Optional[IPAddress]:
        """For ::ffff:a.b.c.d, the IPv4 address a.b.c.d; otherwise None."""
        if self.version == 6 and self.value >> 32 == 0xFFFF:
            return IPAddress(4, self.value & 0xFFFFFFFF)
        return None

    def _v4(self) -> Optional[int]:
        """The IPv4 value the properties below judge: the address's own, or the one an IPv6 address maps."""
        if self.version == 4:
            return self.value
        return self.value & 0xFFFFFFFF if self.value >> 32 == 0xFFFF else None

    @property
    def is_multicast(self) -> bool:
        """224.0.0.0/4 or ff00::/8."""
        v4 = self._v4()
        return v4 >> 28 == 0xE if v4 is not None else self.value >> 120 == 0xFF

    @property
    def is_unspecified(self) -> bool:
        """0.0.0.0 or ::."""
        v4 = self._v4()
        return v4 == 0 if v4 is not None else self.value == 0

    @property
    def is_loopback(self) -> bool:
        """127.0.0.0/8 or ::1."""
        v4 = self._v4()
        return v4 >> 24 == 127 if v4 is not None else self.value == 1

    @property
    def is_link_local(self) -> bool:
        """169.254.0.0/16 or fe80::/10."""
        v4 = self._v4()
        return v4 >> 16 == 0xA9FE if v4 is not None else self.value >> 118 == 0x3FA

    def __str__(self) -> str:
        if self.version == 4:
            return _v4_text(self.value)
        if _DOTTED_MAPPED and self.value >> 32 == 0xFFFF:
            text = "::ffff:" + _v4_text(self.value & 0xFFFFFFFF)
        else:
            text = _v6_text(self.value)
        return text if self.scope is None else f"{text}%{self.scope}"

    def __repr__(self) -> str:
        return f"IPAddress({str(self)!r})"

    def _key(self) -> Tuple[int, int, Optional[str]]:
        return (self.version, self.value, self.scope)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IPAddress):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


class IPNetwork:
    """An address block: network_address (host bits zero) and prefixlen."""

    __slots__ = ("network_address", "prefixlen")

    def __init__(self, network_address: IPAddress, prefixlen: int) -> None:
        self.network_address = network_address
        self.prefixlen = prefixlen

    @property
    def version(self) -> int:
        """4 or 6."""
        return self.network_address.version

    @property
    def netmask(self) -> int:
        """The mask as an int (prefixlen one bits, then zeros)."""
        return _mask(self.version, self.prefixlen)

    def __contains__(self, address: object) -> bool:
        """True for an address of the same family inside the block (a zone id plays no part, as in ipaddress)."""
        if not isinstance(address, IPAddress) or address.version != self.version:
            return False
        return address.value & self.netmask == self.network_address.value

    def __str__(self) -> str:
        return f"{self.network_address}/{self.prefixlen}"

    def __repr__(self) -> str:
        return f"IPNetwork({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IPNetwork):
            return NotImplemented
        return (self.network_address, self.prefixlen) == (other.network_address, other.prefixlen)

    def __hash__(self) -> int:
        return hash((self.network_address, self.prefixlen))


class IPInterface:
    """An address with the prefix length of its link, as in 'ip.addresses': '192.168.12.99/24'.

    A zone id ('fe80::1%eth0/64') is part of its text and equality but not of
    `ip`, as in ipaddress (the plugin's config refuses zone ids anyway).
    """

    __slots__ = ("ip", "prefixlen", "scope")

    def __init__(self, ip: IPAddress, prefixlen: int, scope: Optional[str] = None) -> None:
        self.ip = ip if ip.scope is None else IPAddress(ip.version, ip.value)
        self.prefixlen = prefixlen
        self.scope = scope if scope is not None else ip.scope

    @property
    def version(self) -> int:
        """4 or 6."""
        return self.ip.version

    @property
    def network(self) -> IPNetwork:
        """The block the prefix covers (host bits cleared; the zone id kept when there were none, as ipaddress)."""
        masked = self.ip.value & _mask(self.ip.version, self.prefixlen)
        scope = self.scope if masked == self.ip.value else None
        return IPNetwork(IPAddress(self.ip.version, masked, scope), self.prefixlen)

    def __str__(self) -> str:
        ip = self.ip if self.scope is None else IPAddress(self.ip.version, self.ip.value, self.scope)
        return f"{ip}/{self.prefixlen}"

    def __repr__(self) -> str:
        return f"IPInterface({str(self)!r})"

    def _key(self) -> Tuple[IPAddress, int, Optional[str]]:
        return (self.ip, self.prefixlen, self.scope)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IPInterface):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


def ip_address(text: str) -> IPAddress:
    """Parse an IPv4 or IPv6 address; raise ValueError (with ipaddress's message) otherwise."""
    address = _address(text)
    if address is None:
        raise ValueError(f"{text!r} does not appear to be an IPv4 or IPv6 address")
    return address


def ip_interface(text: str) -> IPInterface:
    """Parse 'ADDRESS[/PREFIX]' (host bits allowed; an IPv4 PREFIX may be a netmask or hostmask)."""
    parsed = _with_prefix(text)
    if parsed is None:
        raise ValueError(f"{text!r} does not appear to be an IPv4 or IPv6 interface")
    return IPInterface(*parsed)


def ip_network(text: str) -> IPNetwork:
    """Parse 'ADDRESS[/PREFIX]' as a network, host bits cleared (ipaddress's ip_network(text, strict=False))."""
    parsed = _with_prefix(text)
    if parsed is None:
        raise ValueError(f"{text!r} does not appear to be an IPv4 or IPv6 network")
    return IPInterface(*parsed).network


# --- parsing: each returns None for text ipaddress refuses ---------------------------------------


def _address(text: str) -> Optional[IPAddress]:
    if "/" in text:
        return None
    v4 = _parse_v4(text)
    if v4 is not None:
        return IPAddress(4, v4)
    addr, sep, scope = text.partition("%")
    if sep and (not scope or "%" in scope):
        return None
    v6 = _parse_v6(addr)
    return IPAddress(6, v6, scope if sep else None) if v6 is not None else None


def _with_prefix(text: str) -> Optional[Tuple[IPAddress, int]]:
    """(address, prefix length) of 'ADDRESS[/PREFIX]'; without PREFIX, the family's full length."""
    pieces = text.split("/")
    if len(pieces) > 2:
        return None
    address = _address(pieces[0])
    if address is None:
        return None
    if len(pieces) == 1:
        return address, _BITS[address.version]
    prefixlen = _prefixlen(address.version, pieces[1])
    return (address, prefixlen) if prefixlen is not None else None


def _prefixlen(version: int, text: str) -> Optional[int]:
    """A prefix length in decimal (leading zeros allowed); for IPv4 also a netmask or a hostmask."""
    if text.isascii() and text.isdigit():
        length = int(text)
        return length if length <= _BITS[version] else None
    if version != 4:
        return None
    mask = _parse_v4(text)
    if mask is None:
        return None
    # As ipaddress: a netmask (ones then zeros) first, so all-ones and all-zeros are netmasks.
    netmask = _ones_then_zeros(mask)
    return netmask if netmask is not None else _ones_then_zeros(mask ^ _ALL_ONES[4])


def _ones_then_zeros(mask: int) -> Optional[int]:
    """The number of leading one bits of a 32-bit mask made of ones then zeros; None for any other mask."""
    inverted = mask ^ _ALL_ONES[4]
    if inverted & (inverted + 1):  # the zeros, inverted, must be one run of low bits
        return None
    return 32 - inverted.bit_length()


def _mask(version: int, prefixlen: int) -> int:
    bits = _BITS[version]
    return _ALL_ONES[version] ^ ((1 << (bits - prefixlen)) - 1)


def _parse_v4(text: str) -> Optional[int]:
    octets = text.split(".")
    if len(octets) != 4:
        return None
    value = 0
    for octet in octets:
        # ASCII digits only (int() takes '+1', ' 1', Arabic-Indic digits), at most 3, no leading zero (bpo-36384).
        if not (octet.isascii() and octet.isdigit()) or len(octet) > 3 or (octet[0] == "0" and octet != "0"):
            return None
        number = int(octet)
        if number > 255:
            return None
        value = (value << 8) | number
    return value


def _parse_v6(text: str) -> Optional[int]:
    hextets = _v6_hextets(text)
    if hextets is None:
        return None
    value = 0
    for hextet in hextets:
        # Only hex digits are left (_v6_hextets checked the characters and took out the dotted tail).
        if not 1 <= len(hextet) <= 4 or "." in hextet:
            return None
        value = (value << 16) | int(hextet, 16)
    return value


def _v6_hextets(text: str) -> Optional[List[str]]:
    """The eight hextets of an IPv6 text, unchecked, with '::' expanded and a dotted IPv4 tail in hex."""
    # 45: the longest valid spelling (six full hextets and a dotted quad); CPython refuses longer too.
    if not text or len(text) > 45 or not _V6_CHARS.issuperset(text):
        return None
    parts = text.split(":")
    if len(parts) < 3:
        return None
    if "." in parts[-1]:
        v4 = _parse_v4(parts.pop())
        if v4 is None:
            return None
        parts += [f"{v4 >> 16:x}", f"{v4 & 0xFFFF:x}"]
    if len(parts) > 9:
        return None
    # '::' is an empty part between the ends; an empty end belongs to a '::' at that end. A
    # second '::' leaves an empty hextet behind, which _parse_v6 refuses.
    if "" not in parts[1:-1]:
        return parts if len(parts) == 8 else None
    skip = parts.index("", 1)
    high, low = parts[:skip], parts[skip + 1 :]
    high = [] if high == [""] else high
    low = [] if low == [""] else low
    zeros = 8 - len(high) - len(low)
    return high + ["0"] * zeros + low if zeros >= 1 else None


# --- text ----------------------------------------------------------------------------------------


def _v4_text(value: int) -> str:
    return f"{value >> 24}.{(value >> 16) & 0xFF}.{(value >> 8) & 0xFF}.{value & 0xFF}"


def _v6_text(value: int) -> str:
    """RFC 5952 as ipaddress spells it: lower-case hex, the longest run (>1, first on a tie) of zeros as '::'."""
    hextets: List[str] = [f"{(value >> shift) & 0xFFFF:x}" for shift in range(112, -1, -16)]
    best_start, best_len, start = -1, 0, -1
    for i, hextet in enumerate(hextets):
        if hextet != "0":
            start = -1
            continue
        if start < 0:
            start = i
        if i - start + 1 > best_len:
            best_start, best_len = start, i - start + 1
    if best_len < 2:
        return ":".join(hextets)
    head = ":".join(hextets[:best_start])
    tail = ":".join(hextets[best_start + best_len :])
    return f"{head}::{tail}"
