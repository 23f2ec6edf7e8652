"""The router's links deleted by a child process: DEL goes on as soon as they are gone from the namespace.

RTM_DELLINK returns only once unregister_netdevice has waited out RCU grace
periods (an rcu_barrier, after RTNL is released): 18-23 ms on the development
machine, all of it inside the sendto. The link is gone well before that: the
kernel unlists it, flushes its routes and announces RTM_DELLINK to the link
group first, then waits. So a child process sends the request and waits in its
place, and this process watches the group: once the announcement arrives, the
link is gone and the undo list goes on (the default route via eth0 can come
back: the link's own default route went with it). The child exits on its own
after the kernel's wait; the runtime waits for this process only.

Meanwhile DEL imports and runs the rest (its config, log, NAT backends and the
NAT removal). A refusal (the kernel's error, before it unregisters anything)
comes back from the child and is raised by outcome(), as delete_link raises it.
A child, not a thread: a thread inside that sendto would hold the process's
exit until the kernel's wait ends.
"""

from __future__ import annotations

import os
import select

from .errors import LinkError
from .linger import close_all_but
from .link import delete_link, find_owned_links
from .netlink import RTM_DELLINK, Netlink
from .netns import open_optional
from .state import owner_id

# typing costs ~15 ms to import on a cold interpreter: annotations only.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List, NoReturn, Optional, Union

    from .link import LinkInfo
    from .netns import NetNS

DELETED, GONE, FAILED = "deleted", "gone", "failed"  # the child's answer per link, one line each


class LinkDeletion:
    """RTM_DELLINK for each of links, sent by a child started at once; outcome(link) waits until link is gone."""

    def __init__(self, nl: Netlink, links: List[LinkInfo]) -> None:
        """nl: the caller's socket in the links' namespace (the child opens its own there: replies never cross)."""
        self.links = links
        self._outcomes: Dict[int, Union[bool, LinkError]] = {}
        self._watch: Optional[Netlink] = None
        self._answers = -1
        self._child = 0
        self._pending = b""
        if links:
            self._start(nl)

    def _start(self, nl: Netlink) -> None:
        watch = Netlink()
        watch.watch_links()  # before the request: the announcement cannot be missed
        read_end, write_end = os.pipe()
        try:
            pid = os.fork()
        except OSError:
            for fd in (read_end, write_end):
                os.close(fd)
            watch.close()
            self._delete_here(nl)  # no child to be had: the kernel's wait is ours, as before
            return
        if pid == 0:
            _child(self.links, write_end)
        os.close(write_end)
        self._watch, self._answers, self._child = watch, read_end, pid

    def _delete_here(self, nl: Netlink) -> None:
        for link in self.links:
            try:
                self._outcomes[link.index] = delete_link(nl, link.index)
            except LinkError as e:
                self._outcomes[link.index] = e

    def outcome(self, link: LinkInfo) -> bool:
        """True once link is gone by our request, False when it already was; the child's LinkError raised here."""
        while link.index not in self._outcomes:
            self._wait()
        outcome = self._outcomes[link.index]
        if isinstance(outcome, LinkError):
            raise outcome
        return outcome

    def _wait(self) -> None:
        """Take in the next announcement or answer, whichever comes first."""
        assert self._watch is not None
        watch = self._watch.sock.fileno()
        readable, _, _ = select.select([watch, self._answers], [], [])
        if watch in readable:
            try:
                notifications = self._watch.notifications()
            except OSError:  # ENOBUFS: announcements were dropped; the child's answer still comes
                notifications = []
            for msg_type, msg in notifications:
                if msg_type == RTM_DELLINK:
                    self._outcomes.setdefault(msg["index"], True)
        if self._answers in readable:
            self._read_answers()

    def _read_answers(self) -> None:
        data = os.read(self._answers, 4096)
        if not data:  # the child has exited: whatever it did not answer, it did not delete
            for link in self.links:
                self._outcomes.setdefault(link.index, LinkError("failed to delete link", "no answer from the child"))
            return
        *lines, self._pending = (self._pending + data).split(b"\n")
        for line in lines:
            index, answer, details = line.decode().split(" ", 2)
            if answer == FAILED:
                self._outcomes[int(index)] = LinkError("failed to delete link", details)
            else:
                self._outcomes.setdefault(int(index), answer == DELETED)

    def close(self) -> None:
        """Stop watching; the child finishes the kernel's wait on its own (reaped here if it is done already)."""
        if self._watch is not None:
            self._watch.close()
            os.close(self._answers)
            self._watch = None
            try:  # noqa: SIM105 (no contextlib import on the hot path)
                os.waitpid(self._child, os.WNOHANG)
            except ChildProcessError:
                pass  # reaped by someone else (a test harness)


def _child(links: List[LinkInfo], answers: int) -> NoReturn:
    """Delete links in order, answering one line each on answers, then exit (never returns)."""
    try:
        close_all_but({answers})  # the standard streams, the log, the parent's sockets
        with Netlink() as nl:  # in the namespace the parent is in
            for link in links:
                try:
                    answer = f"{DELETED if delete_link(nl, link.index) else GONE} -"
                except LinkError as e:
                    answer = f"{FAILED} {' '.join(str(e.details).split())}"  # one line
                os.write(answers, f"{link.index} {answer}\n".encode())
    finally:
        os._exit(0)


class FoundRouter:
    """DEL's first step: the pod's namespace entered, this container's links read and their deletion started.

    A context manager: inside it the process is in the pod's namespace; on
    exit it waits for the deletion, closes the socket and leaves. Nothing is
    logged here (the log is opened later, while the kernel deletes): what
    find_owned_links had to say is kept in notes, and an error in error, for
    teardown.run_del to log and raise where DEL always has.
    """

    def __init__(self, netns: str, container_id: str) -> None:
        self.netns = netns
        self.owner = owner_id(container_id)
        self.ns: Optional[NetNS] = None
        self.pod: Optional[Netlink] = None
        self.deleting: Optional[LinkDeletion] = None
        self.notes: List[str] = []
        self.error: Optional[Exception] = None

    def __enter__(self) -> FoundRouter:
        try:
            self.ns = open_optional(self.netns)  # None: the namespace is gone, nothing to delete
            if self.ns is not None:
                self.ns.enter()
                self.pod = Netlink()
                self.deleting = LinkDeletion(self.pod, find_owned_links(self.pod, self.owner, self.notes.append))
        except Exception as e:  # raised again by run_del, after DEL's first log lines
            self.error = e
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.deleting is not None:
                self.deleting.close()
            if self.pod is not None:
                self.pod.close()
        finally:
            if self.ns is not None:
                self.ns.close()

    def recorded_log(self) -> Optional[str]:
        """The log path ADD recorded with this container's router, if it still has a link."""
        for link in self.deleting.links if self.deleting is not None else []:
            state = link.state()
            if state is not None and state.log_file:
                return state.log_file
        return None
