"""Tell the external network where the reserved address now lives (gratuitous ARP)."""

from __future__ import annotations

import ipaddress
import socket
import struct

ETH_P_ARP = 0x0806


def gratuitous_arp(ifname: str, mac: str, address: ipaddress.IPv4Address) -> None:
    """Broadcast one gratuitous ARP request for address from mac on ifname (current netns).

    arp_notify=1 on the link makes the kernel send one when the link comes up;
    this explicit one covers switches that missed it while the port was
    settling, as the legacy router's `arping -U` did.
    """
    hw = bytes.fromhex(mac.replace(":", ""))
    ip = address.packed
    frame = (
        b"\xff" * 6
        + hw
        + struct.pack("!H", ETH_P_ARP)
        + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1)  # Ethernet, IPv4, request
        + hw
        + ip
        + b"\x00" * 6
        + ip
    )
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind((ifname, ETH_P_ARP))
        s.send(frame)
