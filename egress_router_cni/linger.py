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

The child is /bin/cat reading a pipe until this process's end closes it
(posix_spawn: the kernel copies no page tables for it). A forked copy of this
process did the same for about twice the CPU: 0.4 ms to fork here and 0.6 ms
more in the child, mostly tearing down its copy of the address space. Without
cat, the forked child still does the job.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, List, Optional, Set, Tuple

_deferred: Optional[List[int]] = None  # None: close at once
# The program that holds the descriptors: it reads its standard input (our pipe) to
# the end, which comes when this process has exited, then exits and closes them.
HOLDER = "/bin/cat"


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
    if not _spawn_holder(fds, read_end):
        _fork_holder(fds, read_end, write_end)
        return
    # The parent: its copies are not the last references, so these closes do not wait.
    # write_end stays open until exit: the child's signal to close.
    os.close(read_end)
    _close_all(fds)


def _spawn_holder(fds: List[int], read_end: int) -> bool:
    """Start HOLDER with fds and the pipe's read end as its standard input; False if it cannot run.

    HOLDER gets the deferred descriptors (made inheritable for it), the pipe
    on 0 and /dev/null on 1 and 2. Every other descriptor of this process is
    close-on-exec (Python's default) or closed for it, so it holds nothing else.
    """
    keep = {*fds, read_end}
    # The standard streams are closed: the pipe is most likely 0 and 1 itself.
    actions: List[Tuple[Any, ...]] = [] if read_end == 0 else [(os.POSIX_SPAWN_DUP2, read_end, 0)]
    actions += [(os.POSIX_SPAWN_OPEN, 1, "/dev/null", os.O_WRONLY, 0), (os.POSIX_SPAWN_DUP2, 1, 2)]
    try:
        os.set_inheritable(read_end, True)
        for name in os.listdir("/proc/self/fd"):  # left inheritable by whoever started us
            number = int(name)
            if number > 2 and number not in keep and _inheritable(number):
                actions.append((os.POSIX_SPAWN_CLOSE, number))
        for fd in fds:
            os.set_inheritable(fd, True)
        os.posix_spawn(HOLDER, [HOLDER], {}, file_actions=actions)
    except OSError:
        for fd in fds:
            _set_cloexec_quietly(fd)
        return False
    return True


def _inheritable(fd: int) -> bool:
    try:
        return os.get_inheritable(fd)
    except OSError:
        return False  # the listing's own descriptor, closed by now


def _set_cloexec_quietly(fd: int) -> None:
    try:  # noqa: SIM105 (no contextlib import for this)
        os.set_inheritable(fd, False)
    except OSError:
        pass


def _fork_holder(fds: List[int], read_end: int, write_end: int) -> None:
    """finish() without HOLDER: a forked copy of this process holds fds until it has exited."""
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
