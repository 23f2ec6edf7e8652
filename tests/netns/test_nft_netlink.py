"""The nfnetlink batch against nft itself: the same ruleset, byte for byte, for every rule shape.

Each case installs the rules twice in a throwaway namespace, once through the
plugin's backend (nfnetlink, no libnftables) and once with `nft -f` on
nftables_text.render_install's text, and compares `nft -j list ruleset`
(without handles) and the kernel's bytecode (`nft --debug=netlink`). The
backend must also read back both installs as the same rules and note.
"""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING, Any, Iterator, List, Tuple, Union

import pytest

from egress_router_cni.ipaddr import IPAddress, ip_address
from egress_router_cni.nat import nftables
from egress_router_cni.nat.nftables_text import render_install
from egress_router_cni.nat.rules import DnatRule, SnatRule
from egress_router_cni.netns import NetNS
from tests import oracle
from tests.topology import NETNS_DIR, add_netns, delete_netns, new_prefix

if TYPE_CHECKING:
    from egress_router_cni.nat.rules import Rule

A = ip_address
NOTE = "egress-router owner=0123456789abcdef fwd4=0 nat=nftables"
V4 = [
    DnatRule(4, "eth0", A("203.0.113.26"), "tcp", 8080, 80),
    DnatRule(4, "eth0", A("203.0.113.26"), "udp", 80, None),
    DnatRule(4, "eth0", A("203.0.113.27"), "sctp", 80, 90),
    DnatRule(4, "eth0", A("203.0.113.1")),  # the fallback: everything else
    SnatRule(4, "net1", A("192.168.12.99")),
]
V6 = [
    DnatRule(6, "eth0", A("2001:db8:ff::26"), "tcp", 8080, 80),
    DnatRule(6, "eth0", A("2001:db8:ff::27"), "sctp", 9000, None),
    DnatRule(6, "eth0", A("2001:db8:ff::1")),
    SnatRule(6, "eth1.long-name", A("2001:db8::99")),
]
MANY = [DnatRule(4, "eth0", IPAddress(4, 0xCB007100 + (i % 250)), "tcp", 1000 + i, 80 + i % 7) for i in range(1000)] + [
    SnatRule(4, "net1", A("192.168.12.99"))
]
CASES = {"ipv4": (V4, [4]), "ipv6": (V6, [6]), "dual-stack": (V4 + V6, [4, 6]), "1000-destinations": (MANY, [4])}


def _throwaway_ns(suffix: str) -> Iterator[str]:
    name = new_prefix() + suffix
    add_netns(name)
    try:
        yield name
    finally:
        delete_netns(name)


@pytest.fixture
def ns() -> Iterator[str]:
    yield from _throwaway_ns("-nft")


def _without_handles(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_handles(v) for k, v in value.items() if k != "handle"}
    if isinstance(value, list):
        return [_without_handles(v) for v in value]
    return value


def _bytecode(ns: str) -> str:
    return oracle.netns_exec(ns, "nft", "--debug=netlink", "list", "ruleset")


def _nft_file(ns: str, text: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=text, text=True, check=True, timeout=60)


def _backend(ns: str, method: str, *args: Any) -> Any:
    with NetNS(f"{NETNS_DIR}/{ns}") as handle:
        handle.enter()
        try:
            with nftables.NftablesBackend() as backend:  # releases its socket on the way out
                return getattr(backend, method)(*args)
        finally:
            handle.leave()


@pytest.mark.parametrize("case", list(CASES))
def test_batch_matches_nft(ns: str, case: str) -> None:
    """[nat] Our batch and `nft -f` of the text produce the same ruleset and bytecode; both read back."""
    rules, families = CASES[case]
    _backend(ns, "install", rules, families, NOTE)
    ours_json = _without_handles(oracle.nft_ruleset(ns))
    ours_bytecode = _bytecode(ns)
    assert _backend(ns, "installed", families) == rules
    assert _backend(ns, "note", [4, 6]) == NOTE
    _backend(ns, "remove", [4, 6])
    assert oracle.nft_ruleset(ns) == []
    assert _backend(ns, "installed", [4, 6]) is None

    _nft_file(ns, render_install(rules, families, NOTE))
    assert _without_handles(oracle.nft_ruleset(ns)) == ours_json
    assert _bytecode(ns) == ours_bytecode
    assert _backend(ns, "installed", families) == rules
    assert _backend(ns, "note", families) == NOTE
    text = oracle.netns_exec(ns, "nft", "list", "ruleset")
    assert f'comment "{NOTE}"' in text


def test_install_replaces_the_table_and_spares_others(ns: str) -> None:
    """[nat] A second install leaves exactly the new rules; foreign tables and chains stay untouched."""
    _nft_file(ns, "add table ip other\nadd chain ip other c { type nat hook prerouting priority 10; }\n")
    foreign = oracle.nft_ruleset(ns)
    _backend(ns, "install", V4, [4], NOTE)
    _backend(ns, "install", V4[:1] + V4[-1:], [4], "")
    assert _backend(ns, "installed", [4]) == V4[:1] + V4[-1:]
    assert _backend(ns, "note", [4]) is None
    assert oracle.nft_rule_lines(ns, "ip", "egress_cni", "prerouting") == [
        'iifname "eth0" tcp dport 8080 dnat to 203.0.113.26:80'
    ]
    _backend(ns, "remove", [4, 6])
    assert oracle.nft_ruleset(ns) == foreign


def test_foreign_rule_in_our_table_is_reported_as_text(ns: str) -> None:
    """[nat] A rule the plugin did not write (here with a counter) is listed as text, not mistaken for ours."""
    _backend(ns, "install", V4, [4], NOTE)
    _nft_file(ns, 'add rule ip egress_cni prerouting iifname "eth0" counter dnat to 203.0.113.9\n')
    found: List[Union[Rule, str]] = _backend(ns, "installed", [4])
    assert found[:4] + found[5:] == V4  # the dump lists prerouting's rules, then postrouting's
    assert isinstance(found[4], str) and found[4].startswith("prerouting: ") and "[counter]" in found[4]


def test_refused_batch_changes_nothing(ns: str) -> None:
    """[nat] When the kernel refuses one message (SNAT in prerouting), the whole batch is rolled back."""
    from egress_router_cni.nat import nftables_netlink as nfnl
    from egress_router_cni.netlink import NetlinkError

    _backend(ns, "install", V4, [4], NOTE)
    before = oracle.nft_ruleset(ns)
    snat = nfnl.rule_expressions(SnatRule(4, "net1", A("192.168.12.7")))
    body = nfnl.string(nfnl.NFTA_RULE_TABLE, "egress_cni") + nfnl.string(nfnl.NFTA_RULE_CHAIN, "prerouting")

    def build(first: int) -> Tuple[bytes, int]:
        batch = nfnl.Batch(first)
        batch.install(V4[:2], 4, "")
        batch.add(nfnl.NFT_MSG_NEWRULE, 0x400 | 0x800, 4, body + nfnl.nested(nfnl.NFTA_RULE_EXPRESSIONS, snat))
        return batch.close()

    with NetNS(f"{NETNS_DIR}/{ns}") as handle:
        handle.enter()
        try:
            with pytest.raises(NetlinkError):
                nftables._request(build)
        finally:
            nftables.release()
            handle.leave()
    assert oracle.nft_ruleset(ns) == before
    assert _backend(ns, "installed", [4]) == V4


@pytest.fixture
def other_ns() -> Iterator[str]:
    yield from _throwaway_ns("-nft2")


def test_one_socket_per_namespace(ns: str, other_ns: str) -> None:
    """[nat] A command's requests in one namespace share a socket; another namespace gets its own.

    The probe, the reads and the batch of an ADD go over one socket (one set-up,
    one release); a socket acts on the namespace it was opened in, so after
    switching namespaces the rules must land in the new one, not the first.
    """
    with NetNS(f"{NETNS_DIR}/{ns}") as first, NetNS(f"{NETNS_DIR}/{other_ns}") as second:
        first.enter()
        try:
            backend = nftables.NftablesBackend()
            assert nftables.nftables_problem() is None
            assert backend.installed([4, 6]) is None
            backend.install(V4, [4], NOTE)
            assert backend.installed([4]) == V4
            assert len(nftables._spent) == 1  # probe, 2 table reads, batch, table read + dump: one socket
            first.leave()
            second.enter()
            backend.install(V6, [6], NOTE)
            assert len(nftables._spent) == 2
            second.leave()
            first.enter()
            assert backend.installed([4]) == V4  # back in the first namespace: a socket there again
            assert len(nftables._spent) == 3
        finally:
            nftables.release()
            first.leave()
            second.leave()
    assert nftables._spent == [] and nftables._current is None
    assert _backend(ns, "installed", [4, 6]) == V4
    assert _backend(other_ns, "installed", [4, 6]) == V6


def test_stale_reply_on_the_shared_socket_is_skipped(ns: str) -> None:
    """[nat] A reply left unread by an earlier request is not taken for the next request's answer."""
    from egress_router_cni.nat import nftables_netlink as nfnl

    _backend(ns, "install", V4, [4], NOTE)
    with NetNS(f"{NETNS_DIR}/{ns}") as handle:
        handle.enter()
        try:
            sock = nftables._socket()
            sock.seq += 1  # a request whose replies nobody reads: our table, as if a read failed half-way
            sock.sock.send(nfnl.get_table(sock.seq, 4))
            backend = nftables.NftablesBackend()
            assert backend.note([6]) is None  # ip6 has no table: the stale ip reply must not answer this
            assert backend.note([4]) == NOTE
        finally:
            nftables.release()
            handle.leave()
