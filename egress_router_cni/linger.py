"""Close the netfilter sockets of a CNI exec after it has exited, in a child nobody waits for.

Releasing a netfilter socket after a commit waits for nf_tables to free the
transaction (nft_rcv_nl_event flushes the destroy work, which waits out an RCU
grace period: a median 9 ms per ADD here, up to 20 ms under load). The rules
are live once the commit is acknowledged, so the runtime need not wait for
that: the CNI entry point defers the close (defer()) and, once the answer is
written, closes its standard streams and hands the sockets to a child
(finish()) that closes them when this process has exited. The child holds
nothing else (never a standard stream: the runtime reads our stdout to its
end), lives a few milliseconds, and is reaped by whoever adopts it. Library
use and the tests close at once.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Optional, Set

_deferred: Optional[List[int]] = None  # None: close at once


def defer() -> None:
    """From now on, close() keeps the descriptors for finish() instead of closing them."""
    global _deferred
    if _deferred is None:
        _deferred = []


def close(fd: int) -> None:
    """Close fd now, or at finish() when defer() was called."""
    if _deferred is None:
        os.close(fd)
    else:
        _deferred.append(fd)


def finish() -> None:
    """Hand the deferred descriptors to a child that closes them after this process exits.

    Call it last, once the answer is written: it closes the standard streams
    first, so the runtime reads the end of our stdout now, whenever the child
    gets a CPU (the child never holds them).
    """
    global _deferred
    fds, _deferred = _deferred or [], None
    if not fds:
        return
    os.closerange(0, 3)
    try:
        read_end, write_end = os.pipe()
    except OSError:
        _close_all(fds)
        return
    try:
        pid = os.fork()
    except OSError:
        os.close(read_end)
        os.close(write_end)
        _close_all(fds)
        return
    if pid == 0:  # the child
        try:
            close_all_but({*fds, read_end})  # the log, the namespaces, the other sockets
            os.read(read_end, 1)  # end of file: the parent (holding write_end) has exited
            for fd in fds:
                os.close(fd)  # the last reference: the grace period is waited out here
        finally:
            os._exit(0)
    # The parent: its copies are not the last references, so these closes do not wait.
    # write_end stays open until exit: the child's signal to close.
    os.close(read_end)
    _close_all(fds)


def close_all_but(keep: Set[int]) -> None:
    """Close every open descriptor of this process not in keep.

    The open ones are read from /proc/self/fd: os.closerange() before Python
    3.10 calls close() once per number up to its bound (a million system calls
    for 1 << 20, seconds under strace, and the pod's namespace kept alive
    meanwhile). Without /proc, fall back to the soft limit of open files.
    """
    try:
        open_fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        import resource

        open_fds = list(range(resource.getrlimit(resource.RLIMIT_NOFILE)[0]))
    for fd in open_fds:
        if fd not in keep:
            try:  # noqa: SIM105 (no contextlib import for this)
                os.close(fd)
            except OSError:
                pass  # not open (or the listing's own descriptor, already closed)


def _close_all(fds: List[int]) -> None:
    for fd in fds:
        os.close(fd)
