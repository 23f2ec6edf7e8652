"""The router's links deleted in a second thread: the longest kernel wait of a teardown, overlapped.

RTM_DELLINK returns only once unregister_netdevice has waited out RCU grace
periods (an rcu_barrier, after RTNL is released): 18-23 ms on the development
machine, all of it inside the sendto, with the process otherwise idle. A
teardown therefore starts the deletion as soon as it knows the links, and
imports and runs the rest meanwhile (DEL: its config, log, NAT backends and
the NAT removal). What needs a link gone waits for it: restoring the default
route via eth0 (the link's own default route goes with the link).

`_thread`, not `threading`: it is built in, `threading` costs imports. The
netlink socket belongs to the pod's namespace whichever thread uses it, and
its sendto releases the GIL. The socket is the thread's until join() returns.
"""

from __future__ import annotations

import _thread

from .link import delete_link, find_owned_links
from .netlink import Netlink
from .netns import open_optional
from .state import owner_id

# typing costs ~15 ms to import on a cold interpreter: annotations only.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List, Optional, Union

    from .link import LinkInfo
    from .netns import NetNS


class LinkDeletion:
    """delete_link for each of links, in order, in a thread started at once; outcome(link) waits for it."""

    def __init__(self, nl: Netlink, links: List[LinkInfo]) -> None:
        self.links = links
        self._outcomes: Dict[int, Union[bool, BaseException]] = {}
        self._done = _thread.allocate_lock()
        self._done.acquire()
        if not links:
            self._done.release()
            return
        # A new thread runs only once it holds the GIL, which the busy main thread gives up
        # only every 5 ms (sys.getswitchinterval), or later inside a long C call such as an
        # import's unmarshalling: 5-20 ms late. So the main thread waits, without the GIL,
        # until the thread is on its way to the sendto, which releases the GIL in the kernel.
        self._started = _thread.allocate_lock()
        self._started.acquire()
        _thread.start_new_thread(self._run, (nl,))
        self._started.acquire()

    def _run(self, nl: Netlink) -> None:
        self._started.release()
        try:
            for link in self.links:
                try:
                    self._outcomes[link.index] = delete_link(nl, link.index)
                except BaseException as e:  # raised in the main thread, by outcome(): as if it had deleted the link
                    self._outcomes[link.index] = e
        finally:
            self._done.release()

    def join(self) -> None:
        """Wait until every deletion has returned; the socket is the caller's again."""
        with self._done:
            pass

    def outcome(self, link: LinkInfo) -> bool:
        """What delete_link answered for link (True: deleted, False: already gone); what it raised is raised here."""
        self.join()
        outcome = self._outcomes[link.index]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


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
                self.deleting.join()
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
