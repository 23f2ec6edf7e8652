"""Echo-the-peer servers and a matching client, run inside test namespaces.

Stdlib only, and runnable as a plain script (`python3 tests/servers.py ...`)
so that `ip netns exec NS` can start it without any import path set up.

    serve --tcp 80,443 --udp 80      print "ready" once every socket listens (IPv4 and,
                                     separately, IPv6), then answer each TCP connection /
                                     UDP datagram with "peer=IP:PORT local=IP:PORT proto=P"
                                     (an IPv6 endpoint is written [IP]:PORT)
    request tcp|udp HOST PORT        print the server's answer (exit 1 on timeout);
                                     HOST is IPv4 or IPv6 (fd00:10::18 or [fd00:10::18])

The peer address is the point: it is the source address the destination saw,
i.e. the router's reserved address when the redirect works.
"""

from __future__ import annotations

import argparse
import contextlib
import selectors
import socket
import sys
from typing import Any, List, Sequence, Tuple

REPLY_TIMEOUT = 5.0
# Linux values; the socket module has IP_PKTINFO from 3.12 on.
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
IN6_PKTINFO_SIZE = 20  # struct in6_pktinfo { struct in6_addr ipi6_addr; int ipi6_ifindex; }


def endpoint(address: Tuple[Any, ...]) -> str:
    """(host, port[, flowinfo, scope_id]) as 'IP:PORT', or '[IP]:PORT' for IPv6."""
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def reply_text(proto: str, peer: Tuple[Any, ...], local: Tuple[Any, ...]) -> bytes:
    return f"peer={endpoint(peer)} local={endpoint(local)} proto={proto}\n".encode()


def _listen(proto: str, port: int, family: int = socket.AF_INET) -> socket.socket:
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(family, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        # Separate IPv4 and IPv6 sockets: a dual-stack one would report IPv4 peers as ::ffff:a.b.c.d.
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    if proto == "udp":
        # Learn the destination address of each datagram: the server listens on
        # the wildcard address but must report which of its addresses the router chose.
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVPKTINFO, 1)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", port))
    if proto == "tcp":
        sock.listen(64)
    sock.setblocking(False)
    return sock


def _answer_tcp(sock: socket.socket) -> None:
    try:
        conn, peer = sock.accept()
    except BlockingIOError:
        return
    with conn:
        conn.settimeout(REPLY_TIMEOUT)
        with contextlib.suppress(OSError):  # the client gave up: nothing to report to
            conn.sendall(reply_text("tcp", peer, conn.getsockname()))


def _answer_udp(sock: socket.socket) -> None:
    try:
        _data, ancdata, _flags, peer = sock.recvmsg(2048, socket.CMSG_SPACE(IN6_PKTINFO_SIZE))
    except BlockingIOError:
        return
    local = sock.getsockname()
    for level, kind, payload in ancdata:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(payload) >= 12:
            # struct in_pktinfo { int ifindex; in_addr spec_dst; in_addr addr; }
            local = (socket.inet_ntoa(payload[8:12]), local[1])
            sock.sendmsg([reply_text("udp", peer, local)], [(level, kind, payload)], 0, peer)
            return
        if level == socket.IPPROTO_IPV6 and kind == IPV6_PKTINFO and len(payload) >= IN6_PKTINFO_SIZE:
            # Answer from the address the datagram was sent to (the DNAT target), as for IPv4.
            local = (socket.inet_ntop(socket.AF_INET6, payload[:16]), local[1])
            sock.sendmsg([reply_text("udp", peer, local)], [(level, kind, payload[:IN6_PKTINFO_SIZE])], 0, peer)
            return
    sock.sendto(reply_text("udp", peer, local), peer)


def serve(tcp_ports: Sequence[int], udp_ports: Sequence[int]) -> None:
    """Serve forever on IPv4 and IPv6; the caller kills the process."""
    sel = selectors.DefaultSelector()
    for family in (socket.AF_INET, socket.AF_INET6):
        for port in tcp_ports:
            sel.register(_listen("tcp", port, family), selectors.EVENT_READ, _answer_tcp)
        for port in udp_ports:
            sel.register(_listen("udp", port, family), selectors.EVENT_READ, _answer_udp)
    print("ready", flush=True)
    while True:
        for key, _events in sel.select():
            key.data(key.fileobj)


def request(proto: str, host: str, port: int, timeout: float = REPLY_TIMEOUT) -> str:
    """Connect (TCP) or send one datagram (UDP) and return the server's one-line answer."""
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if proto == "tcp":
        with socket.create_connection((host, port), timeout=timeout) as conn:
            return conn.makefile("r").readline().strip()
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(b"hello\n", (host, port))
        data, _peer = sock.recvfrom(2048)
        return data.decode().strip()


def _ports(text: str) -> List[int]:
    return [int(p) for p in text.split(",") if p]


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_serve = sub.add_parser("serve")
    p_serve.add_argument("--tcp", type=_ports, default=[])
    p_serve.add_argument("--udp", type=_ports, default=[])
    p_req = sub.add_parser("request")
    p_req.add_argument("proto", choices=("tcp", "udp"))
    p_req.add_argument("host")
    p_req.add_argument("port", type=int)
    p_req.add_argument("--timeout", type=float, default=REPLY_TIMEOUT)
    args = parser.parse_args(argv)
    if args.cmd == "serve":
        serve(args.tcp, args.udp)
        return 0
    try:
        print(request(args.proto, args.host, args.port, args.timeout))
    except OSError as e:
        host = args.host.strip("[]")
        print(f"request {args.proto} {endpoint((host, args.port))} failed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
