"""netlink.Socket.receive: whole datagrams up to RECV_SIZE, a refusal beyond (no root: a UNIX socket pair)."""

from __future__ import annotations

import errno
import socket

import pytest

from egress_router_cni import netlink
from egress_router_cni.netlink import RECV_SIZE, NetlinkError


def _socket_pair() -> tuple[netlink.Socket, socket.socket]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock = netlink.Socket.__new__(netlink.Socket)  # the reading half only: no netlink socket needed
    sock.sock = ours
    sock.seq = 0
    return sock, theirs


@pytest.mark.parametrize("size", [20, 4096, 32768, RECV_SIZE])
def test_whole_datagrams_up_to_the_limit(size: int) -> None:
    sock, peer = _socket_pair()
    try:
        payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
        peer.send(payload)
        peer.send(b"next")
        assert sock.receive() == payload
        assert sock.receive() == b"next"  # one datagram per read
    finally:
        sock.sock.close()
        peer.close()


def test_a_larger_datagram_is_refused_not_cut_short() -> None:
    sock, peer = _socket_pair()
    try:
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * RECV_SIZE)
        peer.send(b"\1" * (RECV_SIZE + 1))
        with pytest.raises(NetlinkError) as raised:
            sock.receive()
        assert raised.value.errno == errno.EMSGSIZE
        assert str(RECV_SIZE) in str(raised.value)
    finally:
        sock.sock.close()
        peer.close()
