"""A plain rtnetlink socket with its own small codec for the messages the plugin uses.

The plugin sends and reads a handful of rtnetlink messages (links, addresses,
routes). pyroute2's message classes encode them too, but importing them costs
~20 ms per exec (about 530 classes, `logging`, `multiprocessing`, `platform`);
this codec is a table of the attributes we use and `struct`. Its bytes are
checked against pyroute2's classes in both directions by tests/unit/test_netlink_codec.py.

Messages keep pyroute2's shape where the plugin reads them: `msg["index"]` for
a header field and `msg.get_attr("IFLA_IFNAME")` for an attribute, with the
same decoded value types (str for names and addresses, int for numbers).

A netlink socket belongs to the network namespace it was created in, so a
`Netlink()` made while the process is inside the pod's namespace keeps acting
on the pod even after the process switches back.
"""

from __future__ import annotations

import errno
import os
import sys
from _socket import (
    AF_INET,
    AF_INET6,
    AF_NETLINK,
    MSG_TRUNC,
    SO_RCVBUF,
    SOCK_CLOEXEC,
    SOCK_RAW,
    SOL_SOCKET,
    inet_ntop,
    inet_pton,
)
from _socket import socket as _raw_socket
from _struct import Struct, pack, unpack_from

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
NETLINK_ADD_MEMBERSHIP = 1
RTNLGRP_LINK = 1  # the multicast group of link notifications
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP_INTR = 0x10
NLM_F_ACK_TLVS = 0x200
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_APPEND = 0x800
NLM_F_DUMP = 0x300
NLMSGERR_ATTR_MSG = 1
NLA_F_NESTED = 0x8000

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26

HEADER = Struct("=IHHII")
_DUMP_RETRIES = 5


class NetlinkError(OSError):
    """A request the kernel refused; .errno is the errno, .extack the kernel's own words."""

    def __init__(self, code: int, extack: str = "") -> None:
        text = os.strerror(code) + (f" ({extack})" if extack else "")
        super().__init__(code, text)
        self.extack = extack


if TYPE_CHECKING:
    # --- attribute codec -------------------------------------------------------------------------
    # An attribute table maps name -> (type code, value kind); kinds: "str" (NUL-terminated),
    # "u8", "u16", "u32", "s32", "mac", "ip" (the message family's address), "raw" (bytes as is),
    # or a nested table (a dict).
    Table = Dict[str, Tuple[int, Any]]

MACVLAN_DATA: Table = {"IFLA_MACVLAN_MODE": (1, "u32"), "IFLA_MACVLAN_FLAGS": (2, "u16")}
LINKINFO: Table = {"IFLA_INFO_KIND": (1, "str"), "IFLA_INFO_DATA": (2, MACVLAN_DATA)}
IFLA: Table = {
    "IFLA_ADDRESS": (1, "mac"),
    "IFLA_BROADCAST": (2, "mac"),
    "IFLA_IFNAME": (3, "str"),
    "IFLA_MTU": (4, "u32"),
    "IFLA_LINK": (5, "u32"),
    "IFLA_MASTER": (10, "u32"),
    "IFLA_LINKINFO": (18, LINKINFO),
    "IFLA_IFALIAS": (20, "str"),
    "IFLA_NET_NS_FD": (28, "u32"),
}
IFA: Table = {
    "IFA_ADDRESS": (1, "ip"),
    "IFA_LOCAL": (2, "ip"),
    "IFA_LABEL": (3, "str"),
    "IFA_FLAGS": (8, "u32"),
}
RTA: Table = {
    "RTA_DST": (1, "ip"),
    "RTA_SRC": (2, "ip"),
    "RTA_OIF": (4, "u32"),
    "RTA_GATEWAY": (5, "ip"),
    "RTA_PRIORITY": (6, "u32"),
    "RTA_PREFSRC": (7, "ip"),
    "RTA_TABLE": (15, "u32"),
    "RTA_VIA": (18, "raw"),
    "RTA_PREF": (20, "u8"),
}
_NATIVE = sys.byteorder
_BY_CODE: Dict[int, Dict[int, Tuple[str, Any]]] = {}


def _by_code(table: Table) -> Dict[int, Tuple[str, Any]]:
    found = _BY_CODE.get(id(table))
    if found is None:
        found = _BY_CODE[id(table)] = {code: (name, kind) for name, (code, kind) in table.items()}
    return found


def encode_attrs(table: Table, attrs: Iterable[Tuple[str, Any]], family: int = 0) -> bytes:
    """Netlink attributes (TLVs, 4-byte aligned) for (name, value) pairs named in table."""
    out = bytearray()
    for name, value in attrs:
        code, kind = table[name]
        if isinstance(kind, dict):
            inner = value["attrs"] if isinstance(value, dict) else value
            payload = encode_attrs(kind, inner, family)
            code |= NLA_F_NESTED
        elif kind == "str":
            payload = value.encode() + b"\0"
        elif kind == "u32":
            payload = pack("=I", value)
        elif kind == "s32":
            payload = pack("=i", value)
        elif kind == "u16":
            payload = pack("=H", value)
        elif kind == "u8":
            payload = pack("=B", value)
        elif kind == "mac":
            payload = bytes.fromhex(value.replace(":", ""))
        elif kind == "ip":
            payload = inet_pton(AF_INET6 if ":" in value else AF_INET, value)
        else:
            payload = bytes(value)
        out += pack("=HH", 4 + len(payload), code) + payload
        out += b"\0" * (-len(out) & 3)
    return bytes(out)


def _decode_value(kind: str, data: bytes, family: int) -> Any:
    # int.from_bytes rather than struct: a short or long payload (another link
    # kind's IFLA_INFO_DATA) decodes to something instead of raising.
    if kind == "str":
        return data.split(b"\0", 1)[0].decode("utf-8", "replace")
    if kind in ("u32", "u16", "u8"):
        return int.from_bytes(data, _NATIVE)
    if kind == "s32":
        return int.from_bytes(data, _NATIVE, signed=True)
    if kind == "mac":
        return ":".join(f"{b:02x}" for b in data)
    if kind == "ip":
        if len(data) not in (4, 16):
            return data
        return inet_ntop(AF_INET6 if len(data) == 16 else AF_INET, data)
    return data


def decode_attrs(table: Table, data: bytes, offset: int = 0, family: int = 0) -> List[Tuple[str, Any]]:
    """The (name, value) pairs of the attributes in data[offset:] that table knows; others are skipped."""
    codes = _by_code(table)
    attrs: List[Tuple[str, Any]] = []
    end = len(data)
    while offset + 4 <= end:
        length, code = unpack_from("=HH", data, offset)
        if length < 4:
            break
        known = codes.get(code & 0x3FFF)
        if known is not None:
            name, kind = known
            payload = data[offset + 4 : offset + length]
            if isinstance(kind, dict):
                attrs.append((name, Nested(decode_attrs(kind, payload, 0, family))))
            else:
                attrs.append((name, _decode_value(kind, payload, family)))
        offset += (length + 3) & ~3
    return attrs


class Nested:
    """A nested attribute: its own attributes, read with get_attr like a message's."""

    __slots__ = ("attrs",)

    def __init__(self, attrs: List[Tuple[str, Any]]) -> None:
        self.attrs = attrs

    def get_attr(self, name: str) -> Any:
        """The value of the attribute called name, or None when absent."""
        for key, value in self.attrs:
            if key == name:
                return value
        return None


class Message(Nested):
    """One rtnetlink message: the family header's fields (msg["index"]) and attributes (get_attr)."""

    __slots__ = ("fields", "kind")

    def __init__(self, kind: Kind, fields: Dict[str, int], attrs: List[Tuple[str, Any]]) -> None:
        super().__init__(attrs)
        self.kind = kind
        self.fields = fields

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]

    def encode(self, msg_type: int, flags: int, seq: int) -> bytes:
        """The message's bytes, with this type, flags and sequence number."""
        kind = self.kind
        body = kind.header.pack(*[self.fields.get(name, 0) for name in kind.names])
        body += encode_attrs(kind.table, self.attrs, self.fields.get("family", 0))
        return HEADER.pack(HEADER.size + len(body), msg_type, flags, seq, 0) + body


class Kind:
    """A message family: its fixed header (struct and field names) and its attribute table."""

    def __init__(self, fmt: str, names: Sequence[str], table: Table) -> None:
        self.header = Struct(fmt)
        self.names = tuple(names)
        self.table = table

    def decode(self, data: bytes) -> Message:
        """The message of this kind in data (one whole netlink message)."""
        values = self.header.unpack_from(data, HEADER.size)
        fields = dict(zip(self.names, values))
        attrs = decode_attrs(self.table, data, HEADER.size + self.header.size, fields.get("family", 0))
        return Message(self, fields, attrs)


# Field names are pyroute2's (ifinfmsg, ifaddrmsg, rtmsg).
IFINFMSG = Kind("=BxHiII", ("family", "ifi_type", "index", "flags", "change"), IFLA)
IFADDRMSG = Kind("=BBBBI", ("family", "prefixlen", "flags", "scope", "index"), IFA)
RTMSG = Kind("=BBBBBBBBI", ("family", "dst_len", "src_len", "tos", "table", "proto", "scope", "type", "flags"), RTA)
KINDS: Dict[int, Kind] = {
    RTM_NEWLINK: IFINFMSG,
    RTM_DELLINK: IFINFMSG,
    RTM_GETLINK: IFINFMSG,
    RTM_NEWADDR: IFADDRMSG,
    RTM_DELADDR: IFADDRMSG,
    RTM_GETADDR: IFADDRMSG,
    RTM_NEWROUTE: RTMSG,
    RTM_DELROUTE: RTMSG,
    RTM_GETROUTE: RTMSG,
}
# Replies the plugin decodes (a dump of links comes back as RTM_NEWLINK messages, and so on).
_REPLIES = (RTM_NEWLINK, RTM_DELLINK, RTM_NEWADDR, RTM_DELADDR, RTM_NEWROUTE, RTM_DELROUTE)


def message(msg_type: int, fields: Optional[Dict[str, Any]] = None, attrs: Any = ()) -> Message:
    """A message of msg_type's family with these header fields and (name, value) attributes."""
    return Message(KINDS[msg_type], dict(fields or {}), list(attrs))


# The largest datagram a read takes. The kernel cuts dumps into datagrams of at
# most 32 KiB and the plugin's other replies are a few kB. 64 KiB comes from the
# heap and is reused; a 1 MiB read made glibc map and unmap 1 MiB for every reply
# (mmap, mremap, munmap and a page fault, about 25 times per ADD).
RECV_SIZE = 1 << 16


class Socket:
    """A netlink socket of one protocol that sends requests and collects their replies."""

    def __init__(self, protocol: int) -> None:
        self.sock = _raw_socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, protocol)
        try:
            self.sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
            self.sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        except OSError:
            pass  # old kernels: errors come without the extended message
        self.sock.bind((0, 0))
        self.sock.setsockopt(SOL_SOCKET, SO_RCVBUF, 1 << 20)
        self.seq = 0

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()

    def receive(self) -> bytes:
        """The next datagram; one that does not fit RECV_SIZE is refused, not read cut short."""
        data, _, flags, _ = self.sock.recvmsg(RECV_SIZE)
        if flags & MSG_TRUNC:
            raise NetlinkError(errno.EMSGSIZE, f"a netlink reply larger than {RECV_SIZE} bytes")
        return data

    def next_seq(self) -> int:
        """The sequence number for the next request."""
        self.seq += 1
        return self.seq

    def collect(self, seq: int, dump: bool, decode: Any, last_seq: Optional[int] = None) -> Tuple[List[Any], bool]:
        """Replies to requests seq..last_seq: decoded messages until the ACK/DONE of last_seq.

        The first error among them is raised (the kernel acknowledges every
        message of a batch; the failing one carries the reason).
        """
        last = seq if last_seq is None else last_seq
        replies: List[Any] = []
        interrupted = False
        error: Optional[NetlinkError] = None
        while True:
            for msg_type, flags, msg_seq, chunk in _split(self.receive()):
                if not seq <= msg_seq <= last:
                    continue  # a stale reply to an earlier request
                if flags & NLM_F_DUMP_INTR:
                    interrupted = True
                if msg_type == NLMSG_DONE:
                    if msg_seq == last:
                        return replies, interrupted
                    continue
                if msg_type == NLMSG_ERROR:
                    code = -unpack_from("=i", chunk, HEADER.size)[0]
                    if code != 0 and error is None:
                        error = NetlinkError(code, _extack(chunk, flags))
                    if msg_seq == last:
                        if error is not None:
                            raise error
                        return replies, interrupted
                    continue
                msg = decode(msg_type, chunk)
                if msg is not None:
                    replies.append(msg)


def _split(data: bytes) -> Iterator[Tuple[int, int, int, bytes]]:
    """(type, flags, seq, the whole message) for each netlink message in one datagram."""
    offset = 0
    while offset + HEADER.size <= len(data):
        length, msg_type, flags, msg_seq, _ = HEADER.unpack_from(data, offset)
        if length < HEADER.size:
            raise NetlinkError(errno.EPROTO, "truncated netlink message")
        yield msg_type, flags, msg_seq, data[offset : offset + length]
        offset += (length + 3) & ~3


class Netlink(Socket):
    """One NETLINK_ROUTE socket; requests are synchronous and acknowledged."""

    def __init__(self) -> None:
        super().__init__(NETLINK_ROUTE)

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def message(self, msg_type: int, fields: Optional[Dict[str, Any]] = None, attrs: Any = ()) -> Message:
        """A request of msg_type's family (see the module-level message())."""
        return message(msg_type, fields, attrs)

    def _send(self, msg: Message, msg_type: int, flags: int) -> int:
        seq = self.next_seq()
        self.sock.send(msg.encode(msg_type, flags, seq))
        return seq

    def request(self, msg_type: int, msg: Message, flags: int = 0) -> List[Message]:
        """Send one request and wait for its ACK; return any messages echoed before it."""
        seq = self._send(msg, msg_type, NLM_F_REQUEST | NLM_F_ACK | flags)
        replies, _ = self.collect(seq, False, _decode_reply)
        return replies

    def watch_links(self) -> None:
        """Receive the kernel's link notifications from now on (RTM_NEWLINK, RTM_DELLINK as links change)."""
        self.sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, RTNLGRP_LINK)

    def notifications(self) -> List[Tuple[int, Message]]:
        """(type, message) for each message of the next datagram: on a watching socket, notifications."""
        found = []
        for msg_type, _flags, _seq, chunk in _split(self.receive()):
            msg = _decode_reply(msg_type, chunk)
            if msg is not None:
                found.append((msg_type, msg))
        return found

    def dump(self, msg_type: int, msg: Message) -> List[Message]:
        """Dump a table, retrying when the kernel flags the dump as interrupted (NLM_F_DUMP_INTR)."""
        for attempt in range(_DUMP_RETRIES):
            seq = self._send(msg, msg_type, NLM_F_REQUEST | NLM_F_DUMP)
            replies, interrupted = self.collect(seq, True, _decode_reply)
            if not interrupted:
                return replies
            if attempt == _DUMP_RETRIES - 1:
                raise NetlinkError(errno.EINTR, "dump interrupted by concurrent changes")
        return []


def _decode_reply(msg_type: int, chunk: bytes) -> Optional[Message]:
    return KINDS[msg_type].decode(chunk) if msg_type in _REPLIES else None


def _extack(chunk: bytes, flags: int) -> str:
    if not flags & NLM_F_ACK_TLVS:
        return ""
    # error int + the original header (payload capped by NETLINK_CAP_ACK), then TLVs.
    offset = HEADER.size + 4 + HEADER.size
    while offset + 4 <= len(chunk):
        length, kind = unpack_from("=HH", chunk, offset)
        if length < 4:
            break
        if kind & 0x3FFF == NLMSGERR_ATTR_MSG:
            return chunk[offset + 4 : offset + length].split(b"\0", 1)[0].decode("utf-8", "replace")
        offset += (length + 3) & ~3
    return ""
