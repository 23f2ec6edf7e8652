"""A plain rtnetlink socket speaking pyroute2's message classes.

A netlink socket belongs to the network namespace it was created in, so a
`Netlink()` made while the process is inside the pod's namespace keeps acting
on the pod even after the process switches back.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from typing import Any, Dict, List, Optional, Tuple

from . import _pyroute2

NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP_INTR = 0x10
NLM_F_ACK_TLVS = 0x200
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLM_F_DUMP = 0x300
NLMSGERR_ATTR_MSG = 1

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26

_HEADER = struct.Struct("=IHHII")
_DUMP_RETRIES = 5


class NetlinkError(OSError):
    """A request the kernel refused; .errno is the errno, .extack the kernel's own words."""

    def __init__(self, code: int, extack: str = "") -> None:
        text = os.strerror(code) + (f" ({extack})" if extack else "")
        super().__init__(code, text)
        self.extack = extack


def _classes() -> Dict[int, Any]:
    pr = _pyroute2.load()
    return {
        RTM_NEWLINK: pr.ifinfmsg,
        RTM_DELLINK: pr.ifinfmsg,
        RTM_NEWADDR: pr.ifaddrmsg,
        RTM_DELADDR: pr.ifaddrmsg,
        RTM_NEWROUTE: pr.rtmsg,
        RTM_DELROUTE: pr.rtmsg,
    }


class Netlink:
    """One NETLINK_ROUTE socket; requests are synchronous and acknowledged."""

    def __init__(self) -> None:
        self.classes = _classes()
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        try:
            self.sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
            self.sock.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
        except OSError:
            pass  # old kernels: errors come without the extended message
        self.sock.bind((0, 0))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def message(self, msg_type: int, fields: Optional[Dict[str, Any]] = None, attrs: Any = ()) -> Any:
        msg = self.classes[msg_type if msg_type in self.classes else msg_type - 2]()
        for key, value in (fields or {}).items():
            msg[key] = value
        msg["attrs"] = list(attrs)
        return msg

    def _send(self, msg: Any, msg_type: int, flags: int) -> int:
        self.seq += 1
        msg["header"]["type"] = msg_type
        msg["header"]["flags"] = flags
        msg["header"]["sequence_number"] = self.seq
        msg["header"]["pid"] = 0
        msg.encode()
        self.sock.send(msg.data)
        return self.seq

    def request(self, msg_type: int, msg: Any, flags: int = 0) -> List[Any]:
        """Send one request and wait for its ACK; return any messages echoed before it."""
        seq = self._send(msg, msg_type, NLM_F_REQUEST | NLM_F_ACK | flags)
        replies, _ = self._collect(seq, dump=False)
        return replies

    def dump(self, msg_type: int, msg: Any) -> List[Any]:
        """Dump a table, retrying when the kernel flags the dump as interrupted (NLM_F_DUMP_INTR)."""
        for attempt in range(_DUMP_RETRIES):
            seq = self._send(msg, msg_type, NLM_F_REQUEST | NLM_F_DUMP)
            replies, interrupted = self._collect(seq, dump=True)
            if not interrupted:
                return replies
            if attempt == _DUMP_RETRIES - 1:
                raise NetlinkError(errno.EINTR, "dump interrupted by concurrent changes")
        return []

    def _collect(self, seq: int, dump: bool) -> Tuple[List[Any], bool]:
        replies: List[Any] = []
        interrupted = False
        while True:
            data = self.sock.recv(1 << 20)
            offset = 0
            while offset + _HEADER.size <= len(data):
                length, msg_type, flags, msg_seq, _ = _HEADER.unpack_from(data, offset)
                if length < _HEADER.size:
                    raise NetlinkError(errno.EPROTO, "truncated netlink message")
                chunk = data[offset : offset + length]
                offset += (length + 3) & ~3
                if msg_seq != seq:
                    continue  # a stale reply to an earlier request
                if flags & NLM_F_DUMP_INTR:
                    interrupted = True
                if msg_type == NLMSG_DONE:
                    return replies, interrupted
                if msg_type == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", chunk, _HEADER.size)[0]
                    if code == 0:
                        return replies, interrupted
                    raise NetlinkError(code, _extack(chunk, flags))
                cls = self.classes.get(msg_type)
                if cls is not None:
                    msg = cls(chunk)
                    msg.decode()
                    replies.append(msg)
                if not dump and not flags & NLM_F_MULTI:
                    continue


def _extack(chunk: bytes, flags: int) -> str:
    if not flags & NLM_F_ACK_TLVS:
        return ""
    # error int + the original header (payload capped by NETLINK_CAP_ACK), then TLVs.
    offset = _HEADER.size + 4 + _HEADER.size
    while offset + 4 <= len(chunk):
        length, kind = struct.unpack_from("=HH", chunk, offset)
        if length < 4:
            break
        if kind & 0x3FFF == NLMSGERR_ATTR_MSG:
            return chunk[offset + 4 : offset + length].split(b"\0", 1)[0].decode("utf-8", "replace")
        offset += (length + 3) & ~3
    return ""
