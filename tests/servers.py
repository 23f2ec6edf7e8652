"""Echo-the-peer servers and a matching client, run inside test namespaces.

Stdlib only, and runnable as a plain script (`python3 tests/servers.py ...`)
so that `ip netns exec NS` can start it without any import path set up.

    serve --tcp 80,443 --udp 80      print "ready" once every socket listens, then
                                     answer each TCP connection / UDP datagram with
                                     "peer=IP:PORT local=IP:PORT proto=P"
    request tcp|udp HOST PORT        print the server's answer (exit 1 on timeout)

The peer address is the point: it is the source address the destination saw,
i.e. the router's reserved address when the redirect works.
"""

from __future__ import annotations

import argparse
import contextlib
import selectors
import socket
import sys
from typing import List, Sequence

REPLY_TIMEOUT = 5.0
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux value; the socket module has it from 3.12 on


def reply_text(proto: str, peer: tuple[str, int], local: tuple[str, int]) -> bytes:
    return f"peer={peer[0]}:{peer[1]} local={local[0]}:{local[1]} proto={proto}\n".encode()


def _listen(proto: str, port: int) -> socket.socket:
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    sock = socket.socket(socket.AF_INET, kind)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if proto == "udp":
        # Learn the destination address of each datagram: the server listens on
        # 0.0.0.0 but must report which of its addresses the router chose.
        sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    sock.bind(("0.0.0.0", port))
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
        _data, ancdata, _flags, peer = sock.recvmsg(2048, socket.CMSG_SPACE(12))
    except BlockingIOError:
        return
    local = sock.getsockname()
    for level, kind, payload in ancdata:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(payload) >= 12:
            # struct in_pktinfo { int ifindex; in_addr spec_dst; in_addr addr; }
            local = (socket.inet_ntoa(payload[8:12]), local[1])
            sock.sendmsg([reply_text("udp", peer, local)], [(level, kind, payload)], 0, peer)
            return
    sock.sendto(reply_text("udp", peer, local), peer)


def serve(tcp_ports: Sequence[int], udp_ports: Sequence[int]) -> None:
    """Serve forever; the caller kills the process."""
    sel = selectors.DefaultSelector()
    for port in tcp_ports:
        sel.register(_listen("tcp", port), selectors.EVENT_READ, _answer_tcp)
    for port in udp_ports:
        sel.register(_listen("udp", port), selectors.EVENT_READ, _answer_udp)
    print("ready", flush=True)
    while True:
        for key, _events in sel.select():
            key.data(key.fileobj)


def request(proto: str, host: str, port: int, timeout: float = REPLY_TIMEOUT) -> str:
    """Connect (TCP) or send one datagram (UDP) and return the server's one-line answer."""
    if proto == "tcp":
        with socket.create_connection((host, port), timeout=timeout) as conn:
            return conn.makefile("r").readline().strip()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
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
        print(f"request {args.proto} {args.host}:{args.port} failed: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
