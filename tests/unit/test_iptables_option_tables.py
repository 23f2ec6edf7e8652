"""The iptables backend reads libxtables' option tables in both layouts (pure: ctypes arrays in memory).

iptables 1.8.11 grew `struct xt_option_entry` by `unsigned int base` (48 -> 56
bytes on 64-bit); python-iptables' ctypes copy has the old size, so it found
only the first option of a table: `udp` refused `dport` (ldx/python-iptables#353).
The end-to-end proof is tests/netns/test_iptables_backend.py (UDP rules) on
Debian 13; these tests pin the layout detection on synthetic tables.
"""

from __future__ import annotations

import ctypes
import mmap
import types
from typing import Any, Dict, List, Tuple

import pytest

from egress_router_cni.nat.iptables import _fix_option_tables, option_entry_stride

pytestmark = pytest.mark.skipif(ctypes.sizeof(ctypes.c_void_p) != 8, reason="64-bit layout")

_COMMON: List[Tuple[str, Any]] = [
    ("name", ctypes.c_char_p),
    ("type", ctypes.c_int),
    ("id", ctypes.c_uint),
    ("excl", ctypes.c_uint),
    ("also", ctypes.c_uint),
    ("flags", ctypes.c_uint),
    ("ptroff", ctypes.c_uint),
    ("size", ctypes.c_size_t),
    ("min", ctypes.c_uint),
    ("max", ctypes.c_uint),
]


class OldEntry(ctypes.Structure):
    """iptables <= 1.8.10, and python-iptables' copy."""

    _fields_ = _COMMON


class NewEntry(ctypes.Structure):
    """iptables >= 1.8.11."""

    _fields_ = [*_COMMON, ("base", ctypes.c_uint)]


# udp's options as 1.8.11 declares them (guided parser), ids as in libxt_udp.c
UDP = [(b"source-port", 0), (b"sport", 0), (b"destination-port", 1), (b"dport", 1)]


# The option names live in an anonymous mapping, as an extension's strings live in its mapped
# .rodata: above 4 GiB on 64-bit Linux (the interpreter's own heap may be below).
_STRINGS = mmap.mmap(-1, 4096)
_STRINGS_AT = ctypes.addressof(ctypes.c_char.from_buffer(_STRINGS))


_MAPPED: Dict[bytes, int] = {}


def mapped(name: bytes) -> int:
    """The address of name, NUL-terminated, in the mapping."""
    if name not in _MAPPED:
        offset = sum(len(n) + 1 for n in _MAPPED)
        _STRINGS[offset : offset + len(name) + 1] = name + b"\0"
        _MAPPED[name] = _STRINGS_AT + offset
    return _MAPPED[name]


def table(cls: Any, options: List[Tuple[bytes, int]], base: int = 0, mandatory: int = -1) -> Any:
    entries = [cls(id=oid, flags=2 if oid == mandatory else 0) for _, oid in options]
    for entry, (name, _) in zip(entries, options):
        ctypes.c_void_p.from_address(ctypes.addressof(entry)).value = mapped(name)
    if cls is NewEntry:
        for entry in entries:
            entry.base = base
    array = (cls * (len(entries) + 1))(*entries)  # the last one zeroed: XTOPT_TABLEEND
    return array


def address(array: Any) -> int:
    return ctypes.addressof(array)


def fake_xtables() -> Any:
    """What _fix_option_tables patches: python-iptables' xtables module, reduced to what it touches."""

    class XTablesError(Exception):
        pass

    class Xtables:
        pass

    return types.SimpleNamespace(xtables=Xtables, xt_option_entry=OldEntry, XTOPT_MAND=2, XTablesError=XTablesError)


def test_the_sizes_are_those_of_the_two_c_layouts() -> None:
    assert ctypes.sizeof(OldEntry) == 48
    assert ctypes.sizeof(NewEntry) == 56
    assert _STRINGS_AT >> 32, "the test's premise: mappings are above 4 GiB"


@pytest.mark.parametrize("base", [0, 16])
def test_a_new_layout_table_is_read_in_56_byte_steps(base: int) -> None:
    assert option_entry_stride(address(table(NewEntry, UDP, base=base)), OldEntry) == 56


def test_an_old_layout_table_is_read_in_48_byte_steps() -> None:
    assert option_entry_stride(address(table(OldEntry, UDP)), OldEntry) == 48


def test_an_old_table_with_one_option_ends_after_it_with_either_stride() -> None:
    xt = fake_xtables()
    _fix_option_tables(xt)
    one = table(OldEntry, [(b"comment", 0)])
    found = xt.xtables._option_lookup(None, ctypes.cast(one, ctypes.POINTER(OldEntry)), b"comment")
    assert found is not None and found.name == b"comment"
    assert xt.xtables._option_lookup(None, ctypes.cast(one, ctypes.POINTER(OldEntry)), b"x") is None


@pytest.mark.parametrize("cls", [OldEntry, NewEntry], ids=["iptables-1.8.9", "iptables-1.8.11"])
def test_every_option_is_found_in_both_layouts(cls: Any) -> None:
    xt = fake_xtables()
    _fix_option_tables(xt)
    udp = table(cls, UDP)
    pointer = ctypes.cast(udp, ctypes.POINTER(OldEntry))  # python-iptables always hands over its own type
    for name, oid in UDP:
        entry = xt.xtables._option_lookup(None, pointer, name)
        assert entry is not None and entry.name == name and entry.id == oid
        # the entry handed to the extension's parser is the one in the table, at its real address
        assert ctypes.addressof(entry) == address(udp) + ctypes.sizeof(cls) * UDP.index((name, oid))
    assert xt.xtables._option_lookup(None, pointer, b"nope") is None


@pytest.mark.parametrize("cls", [OldEntry, NewEntry], ids=["iptables-1.8.9", "iptables-1.8.11"])
def test_a_missing_mandatory_option_is_reported_in_both_layouts(cls: Any) -> None:
    xt = fake_xtables()
    _fix_option_tables(xt)
    udp = table(cls, UDP, mandatory=1)
    pointer = ctypes.cast(udp, ctypes.POINTER(OldEntry))
    xt.xtables._options_fcheck(None, b"udp", 1 << 1, pointer)  # given: fine
    with pytest.raises(xt.XTablesError, match="destination-port"):
        xt.xtables._options_fcheck(None, b"udp", 0, pointer)
