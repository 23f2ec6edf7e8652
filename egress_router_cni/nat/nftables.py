"""The default NAT backend: nftables, one atomic nfnetlink batch, a table the plugin owns.

The plugin talks to nf_tables over NETLINK_NETFILTER itself (see
nftables_netlink.py for the messages): no libnftables and no `nft` on the node,
no parser, no cache. The socket acts on the network namespace the process is in
when the backend method is called.
"""

from __future__ import annotations

import errno
import os

from .. import linger
from ..errors import NatError, NotAvailable
from ..netlink import NetlinkError, Socket
from ..state import Backend
from .nftables_netlink import Batch, decode_rule, dump_rules, get_table, message, nft_type, table_note
from .nftables_text import FAMILIES, TABLE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, List, Optional, Tuple, Union

    from ..state import BackendName
    from .rules import Rule

NETLINK_NETFILTER = 12
SO_SNDBUFFORCE = 32
_SOL_SOCKET, _SO_SNDBUF = 1, 7
NFT_MSG_GETGEN = 16
# Sockets are closed by release() when the CNI command ends, not after each
# batch: closing a netfilter socket right after a commit waits for nf_tables to
# free the transaction (an RCU grace period, 6-20 ms here); DEL deletes the
# link during that time instead of waiting.
_spent: List[Socket] = []
# The socket of the namespace the process is in, reused by every request there (the
# probe, the reads, the batch): one socket's set-up and release per command instead
# of one per request. A socket acts on the namespace it was opened in, so it is
# reused only while the process is still in that namespace.
_current: Optional[Tuple[Tuple[int, int], Socket]] = None
_NAMESPACE = "/proc/thread-self/ns/net"
__all__ = ["FAMILIES", "TABLE", "NftablesBackend", "nftables_present", "nftables_usable", "release"]


def release() -> None:
    """Close the netfilter sockets of this command (a CNI exec: after it has exited, see linger.py)."""
    global _current
    _current = None
    while _spent:
        linger.close(_spent.pop().sock.detach())


def _namespace() -> Optional[Tuple[int, int]]:
    """The network namespace this thread is in, or None when /proc cannot tell (no reuse then)."""
    try:
        st = os.stat(_NAMESPACE)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _socket() -> Socket:
    global _current
    namespace = _namespace()
    if _current is not None and namespace is not None and _current[0] == namespace:
        return _current[1]
    try:
        sock = Socket(NETLINK_NETFILTER)
    except OSError as e:
        raise NotAvailable("nftables is not available", f"no netfilter netlink socket: {e.strerror or e}") from e
    _spent.append(sock)
    _current = (namespace, sock) if namespace is not None else None
    return sock


def _raw(msg_type: int, chunk: bytes) -> Optional[bytes]:
    return chunk


def _request(build: Callable[[int], Tuple[bytes, int]], dump: bool = False) -> List[bytes]:
    """Send build(first sequence number) -> (data, last sequence number); the replies up to the last one.

    Each request takes fresh sequence numbers on the shared socket: a reply
    left over from an earlier request (one that failed half-way) is skipped,
    never taken for this one's.
    """
    sock = _socket()
    data, last = build(sock.seq + 1)
    first, sock.seq = sock.seq + 1, last
    if len(data) > 200_000:  # a batch must fit the send buffer in one message (1000 rules: ~400 kB)
        try:
            sock.sock.setsockopt(_SOL_SOCKET, SO_SNDBUFFORCE, len(data) + 4096)
        except OSError:
            sock.sock.setsockopt(_SOL_SOCKET, _SO_SNDBUF, len(data) + 4096)
    sock.sock.send(data)
    replies, _ = sock.collect(first, dump, _raw, last)
    return replies


def _single(build: Callable[..., bytes], *args: Any) -> Callable[[int], Tuple[bytes, int]]:
    """A one-message request for _request: build(seq, *args) -> its bytes."""
    return lambda seq: (build(seq, *args), seq)


def _batch(fill: Any) -> None:
    """Send one batch built by fill(batch); raise NatError with the kernel's reason if it is refused."""

    def build(first: int) -> Tuple[bytes, int]:
        batch = Batch(first)
        fill(batch)
        return batch.close()

    try:
        _request(build)
    except NetlinkError as e:
        raise NatError("nftables rejected the change", str(e)) from e


def _table(family: int) -> Optional[bytes]:
    """Our table's NEWTABLE message in this family, or None when there is none."""
    try:
        replies = _request(_single(get_table, family))
    except NetlinkError as e:
        if e.errno == errno.ENOENT:
            return None
        raise NatError("failed to read the nftables table", str(e)) from e
    return replies[0] if replies else None


class NftablesBackend:
    """Install, remove, list and verify the router's NAT rules with nftables."""

    name: BackendName = Backend.NFTABLES

    def __enter__(self) -> NftablesBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        release()  # the command's kernel work is done: closing the netfilter socket may wait now

    def install(self, rules: List[Rule], families: List[int], note: str = "") -> None:
        """Replace the plugin's table of each family with one holding rules and the note, in one batch."""
        if '"' in note or "\n" in note:
            raise ValueError("table note must not contain quotes or newlines")
        _batch(lambda batch: [batch.install(rules, family, note) for family in families])

    def note(self, families: List[int]) -> Optional[str]:
        """The note stored with the rules at install time (the table comment), if any."""
        for family in families:
            table = _table(family)
            note = table_note(table) if table is not None else None
            if note is not None:
                return note
        return None

    def remove(self, families: List[int]) -> None:
        """Delete the plugin's table of each family, in one batch; a missing table is not an error."""
        _batch(lambda batch: [batch.replace_table(family) for family in families])

    def installed(self, families: List[int]) -> Optional[List[Union[Rule, str]]]:
        """The rules in the plugin's tables (unrecognised ones as text), or None if no table exists."""
        found: List[Union[Rule, str]] = []
        any_table = False
        for family in families:
            if _table(family) is None:
                continue
            any_table = True
            try:
                replies = _request(_single(dump_rules, family), dump=True)
            except NetlinkError as e:
                raise NatError("failed to read the nftables rules", str(e)) from e
            found.extend(decode_rule(family, msg) for msg in replies)
        return found if any_table else None


def _generation() -> None:
    """Ask nf_tables for its ruleset generation: read-only, and it fails where nf_tables is missing."""
    try:
        _request(_single(lambda seq: message(nft_type(NFT_MSG_GETGEN), 1 | 0x4, seq, 0, b"")))
    except NetlinkError as e:
        raise NotAvailable("nftables is not available", f"the kernel refused nf_tables requests: {e}") from e


def nftables_present() -> bool:
    """True when the kernel answers nf_tables requests, without touching any ruleset."""
    try:
        _generation()
    except NotAvailable:
        return False
    return True


def nftables_problem() -> Optional[str]:
    """Why nftables does not work in the current namespace (None when it does), and what to do about it."""
    try:
        _generation()
    except NotAvailable as e:
        return f"{e.details} (the node's kernel needs nf_tables: modprobe nf_tables)"
    return None


def nftables_usable() -> bool:
    """True when nftables works in the current namespace (the kernel may lack nf_tables)."""
    return nftables_problem() is None
