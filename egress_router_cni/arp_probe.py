"""IPv4 address conflict detection: RFC 5227 ARP probes before a reserved address is taken.

Opt-in (`"addressConflictDetection": true`, or the node policy's default):
the README warns that a reserved address must be free, and nothing else checks
it. ADD brings the new interface up *without* any IPv4 address, sends
PROBE_NUM ARP requests "who has ADDRESS? tell 0.0.0.0" spread over a bounded
window, and listens. Anyone that answers for the address, or probes for it
at the same time, holds it: ADD fails with code 101 naming the address and
the answering MAC, and the rollback removes the interface. The link is taken
down again before the addresses are added, so the kernel's arp_notify still
announces them when ADD brings it up for good.

Imported only when detection is on: it needs an AF_PACKET socket, whose close
costs an RCU grace period (15-28 ms measured), on top of the window.
"""

from __future__ import annotations

import select
import socket
import struct
import time

from .errors import LinkError, RouteError
from .ipaddr import IPAddress
from .record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Iterable, List, Optional

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
ARP_REQUEST, ARP_REPLY = 1, 2
PACKET_OUTGOING = 4
PROBE_NUM = 3  # RFC 5227 section 1.1
BROADCAST = b"\xff" * 6
_ARP = struct.Struct("!HHBBH6s4s6s4s")  # htype, ptype, hlen, plen, op, sha, spa, tha, tpa
_ZERO_IP = b"\0" * 4


class Conflict(Record):
    address: IPAddress
    mac: str


def _mac_text(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def probe_frame(src_mac: bytes, address: IPAddress) -> bytes:
    """An Ethernet broadcast ARP probe: who has ADDRESS? tell 0.0.0.0 (sender hardware address: ours)."""
    arp = _ARP.pack(1, ETH_P_IP, 6, 4, ARP_REQUEST, src_mac, _ZERO_IP, b"\0" * 6, address.packed)
    return BROADCAST + src_mac + struct.pack("!H", ETH_P_ARP) + arp


def conflict_in(frame: bytes, own_mac: bytes, wanted: Iterable[IPAddress]) -> Optional[Conflict]:
    """The conflict an ARP frame reveals (RFC 5227 2.1.1), or None.

    Someone else uses the address when it is the sender address of any ARP
    packet, or probes for it too (a request with sender 0.0.0.0 for it).
    """
    if len(frame) < 14 + _ARP.size or frame[12:14] != b"\x08\x06":
        return None
    htype, ptype, hlen, plen, op, sha, spa, _tha, tpa = _ARP.unpack_from(frame, 14)
    if (htype, ptype, hlen, plen) != (1, ETH_P_IP, 6, 4) or sha == own_mac:
        return None
    for address in wanted:
        packed = address.packed
        if spa == packed or (op == ARP_REQUEST and spa == _ZERO_IP and tpa == packed):
            return Conflict(address, _mac_text(sha))
    return None


def probe(ifname: str, mac: str, addresses: List[IPAddress], window_ms: int) -> Optional[Conflict]:
    """Probe ADDRESSES on IFNAME (up, in the current namespace) for WINDOW_MS; the first conflict, or None."""
    own_mac = bytes.fromhex(mac.replace(":", ""))
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    except OSError as e:
        raise LinkError("cannot probe for address conflicts", f"AF_PACKET socket: {e.strerror}") from None
    with sock:
        sock.bind((ifname, ETH_P_ARP))
        frames = [probe_frame(own_mac, a) for a in addresses]
        start = time.monotonic()
        deadline = start + window_ms / 1000
        # PROBE_NUM rounds spread over the window; the last third is only listened to.
        send_at = [start + i * (window_ms / 1000) / PROBE_NUM for i in range(PROBE_NUM)]
        while True:
            now = time.monotonic()
            while send_at and send_at[0] <= now:
                send_at.pop(0)
                for frame in frames:
                    sock.send(frame)
            if now >= deadline:
                return None
            wait = min(deadline, send_at[0] if send_at else deadline) - now
            readable, _, _ = select.select([sock], [], [], max(wait, 0))
            if not readable:
                continue
            data, meta = sock.recvfrom(2048)
            if meta[2] == PACKET_OUTGOING:
                continue
            found = conflict_in(data, own_mac, addresses)
            if found is not None:
                return found


def check_free(ifname: str, mac: str, addresses: List[IPAddress], window_ms: int) -> None:
    """Raise RouteError (101) naming the address and the MAC that answered, when any address is taken."""
    found = probe(ifname, mac, addresses, window_ms)
    if found is not None:
        raise RouteError(
            "address conflict",
            f"{found.address} is already in use on the network: {found.mac} answered an ARP probe on "
            f"{ifname} (RFC 5227); choose a free reserved address",
        )


def probe_new_link(pod: Any, link: Any, addresses: List[IPAddress], window_ms: int) -> None:
    """Bring LINK up without addresses, probe, and take it down again (so arp_notify announces later)."""
    from .link import set_down, set_up

    set_up(pod, link)
    try:
        check_free(link.name, link.mac, addresses, window_ms)
    finally:
        set_down(pod, link)
