"""RFC 5227 probe frames and what counts as a conflict (the AF_PACKET side is tested end to end)."""

from __future__ import annotations

import ipaddress
import struct

from egress_router_cni.arp_probe import ARP_REPLY, ARP_REQUEST, Conflict, conflict_in, probe_frame

OURS = bytes.fromhex("020000000001")
THEIRS = bytes.fromhex("0a0b0c0d0e0f")
WANTED = ipaddress.IPv4Address("192.168.12.99")


def arp(op: int, sha: bytes, spa: str, tpa: str, tha: bytes = b"\0" * 6) -> bytes:
    body = struct.pack(
        "!HHBBH6s4s6s4s",
        1,
        0x0800,
        6,
        4,
        op,
        sha,
        ipaddress.IPv4Address(spa).packed,
        tha,
        ipaddress.IPv4Address(tpa).packed,
    )
    return OURS + sha + b"\x08\x06" + body


def test_probe_frame_is_a_broadcast_request_from_0_0_0_0() -> None:
    frame = probe_frame(OURS, WANTED)
    assert frame[:6] == b"\xff" * 6 and frame[6:12] == OURS and frame[12:14] == b"\x08\x06"
    assert frame[14:] == arp(ARP_REQUEST, OURS, "0.0.0.0", "192.168.12.99")[14:]


def test_a_reply_from_the_holder_is_a_conflict_naming_its_mac() -> None:
    frame = arp(ARP_REPLY, THEIRS, "192.168.12.99", "0.0.0.0", OURS)
    assert conflict_in(frame, OURS, [WANTED]) == Conflict(WANTED, "0a:0b:0c:0d:0e:0f")


def test_someone_probing_for_the_same_address_is_a_conflict() -> None:
    assert conflict_in(arp(ARP_REQUEST, THEIRS, "0.0.0.0", "192.168.12.99"), OURS, [WANTED]) is not None


def test_unrelated_arp_and_our_own_frames_are_not_conflicts() -> None:
    assert conflict_in(arp(ARP_REQUEST, THEIRS, "192.168.12.1", "192.168.12.7"), OURS, [WANTED]) is None
    assert conflict_in(arp(ARP_REQUEST, THEIRS, "0.0.0.0", "192.168.12.7"), OURS, [WANTED]) is None
    assert conflict_in(probe_frame(OURS, WANTED), OURS, [WANTED]) is None
    assert conflict_in(b"\x00" * 20, OURS, [WANTED]) is None
