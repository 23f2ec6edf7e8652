"""DEL, and the rollback of a failed ADD: undo what an attachment did, from the pod's kernel state.

Rollback and DEL share this one path, so DEL also finishes the job after an
ADD was killed half-way: the link's alias, the saved-routes table and the NAT
rules' note say what to undo, and whose it is.
"""

from __future__ import annotations

from . import sysctl
from .cmdargs import CmdArgs
from .config import NetConf, parse_netconf
from .errors import CniError, NotAvailable
from .invocation import logged, open_log
from .link import LinkInfo, find_owned_links
from .log import PluginLog
from .nat import NatBackend, get_backend
from .netlink import Netlink
from .route import MAIN_TABLE, restore_default_routes, saved_table
from .state import FAMILIES, RouterState, backend_named, decode_note
from .unlink import LinkDeletion

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import TracebackType
    from typing import Any, Callable, Dict, List, Optional, Type

    from .state import BackendName
    from .unlink import FoundRouter

    # One undo action: a step of the cleanup; a CniError it raises is logged and the rest still run.
    Undo = Callable[[], None]


def _backends_for_del(configured: str, links: List[LinkInfo], log: PluginLog) -> List[NatBackend]:
    """The backends whose rules this owner may have installed: the recorded one, the configured one."""
    names: List[BackendName] = []
    for link in links:
        state = link.state()
        if state is not None and state.nat is not None:
            names.append(state.nat)
    chosen = backend_named(configured)
    if chosen is not None:
        names.append(chosen)
    backends: List[NatBackend] = []
    for name in dict.fromkeys(names) or ["auto"]:
        try:
            backends.append(get_backend(name))
        except NotAvailable as e:
            log.debug(f"NAT backend {name} not usable here ({e}): nothing of it to remove")
    return backends


def teardown(
    pod: Netlink,
    backends: List[NatBackend],
    owner: str,
    log: PluginLog,
    forwarding: Optional[Dict[int, str]] = None,
    deleting: Optional[LinkDeletion] = None,
) -> None:
    """Undo everything an ADD of this owner may have done, from kernel state.

    Every undo action runs even when an earlier one fails; each failure is
    logged and the first is raised at the end. forwarding is what ADD read
    before changing the sysctls (rollback knows it before the alias exists).
    deleting is the deletion of the owner's links when the caller started it
    (DEL, see delete.py); otherwise it starts here, before the NAT removal, so
    that the two overlap. pod is the deletion's until it has returned.
    """
    if deleting is None:
        deleting = LinkDeletion(pod, find_owned_links(pod, owner))
    try:
        links = deleting.links
        notes = {backend.name: decode_note(backend.note(list(FAMILIES))) for backend in backends}
        original = _original_forwarding(owner, links, list(notes.values()), forwarding or {})
        undo: List[Undo] = [_later(_remove_nat, backend, notes[backend.name], owner, log) for backend in backends]
        # Waits for the link's deletion: the lines keep their order, and the routes need the link gone.
        refused: List[LinkInfo] = []
        undo += [_later(_remove_link, deleting, link, log, refused) for link in links]
        undo += [_later(_restore_routes, pod, family, owner, log, refused) for family in FAMILIES]
        undo += [_later(_reset_forwarding, family, value, log) for family, value in original.items()]
        run_undo(undo, log)
    finally:
        deleting.close()


def _later(action: Callable[..., None], *args: Any) -> Undo:
    """action(*args), to be called later (functools.partial without functools' imports on the hot path)."""
    return lambda: action(*args)


def run_undo(undo: List[Undo], log: PluginLog) -> None:
    """Run every action; log each CniError and raise the first once all have run."""
    errors: List[CniError] = []
    for action in undo:
        try:
            action()
        except CniError as e:
            errors.append(e)
            log.error(str(e))
    if errors:
        raise errors[0]


def _original_forwarding(
    owner: str, links: List[LinkInfo], notes: List[Optional[RouterState]], known: Dict[int, str]
) -> Dict[int, str]:
    """The forwarding sysctls to restore: the link's record, else the NAT note's (the link may be gone)."""
    original = dict(known)
    for link in links:
        state = link.state()
        if state is not None:
            original.update(state.forwarding)
    if not links:
        for note in notes:
            if note is not None and note.owner == owner:
                original.update({k: v for k, v in note.forwarding.items() if k not in original})
    return original


def _remove_nat(backend: NatBackend, note: Optional[RouterState], owner: str, log: PluginLog) -> None:
    if note is not None and note.owner != owner:
        log.debug(f"{backend.name} NAT rules belong to another attachment: left in place")
        return
    if backend.installed(list(FAMILIES)) is not None:
        backend.remove(list(FAMILIES))
        log.debug(f"Deleted {backend.name} NAT rules")


def _remove_link(deleting: LinkDeletion, link: LinkInfo, log: PluginLog, refused: List[LinkInfo]) -> None:
    try:
        gone = deleting.outcome(link)
    except CniError:
        refused.append(link)
        raise
    if gone:
        log.debug(f"Deleted interface {link.name!r}")


def _restore_routes(pod: Netlink, family: int, owner: str, log: PluginLog, refused: List[LinkInfo]) -> None:
    if refused:
        # The link's own default route is still there: putting the saved one back would
        # meet EEXIST and empty the saved table. It stays saved for the runtime's retry.
        return
    for route in restore_default_routes(pod, family, saved_table(owner)):
        log.debug(f"Restored default route {route.go_string(table=MAIN_TABLE)}")


def _reset_forwarding(family: int, value: str, log: PluginLog) -> None:
    key = sysctl.FORWARDING[family]
    if sysctl.read(key) != value:
        sysctl.write(key, value)
        log.debug(f"Restored {key.replace('/', '.')}={value}")


def run_del(args: CmdArgs, found: FoundRouter) -> None:
    """DEL's rest, once delete.py has started deleting the router's links: config, log, NAT, routes, sysctls."""
    conf: Optional[NetConf] = None
    problem = ""
    try:
        conf = parse_netconf(args.config)
    except CniError as e:
        # The runtime sends DEL after a failed ADD too, with the same (maybe
        # invalid) config: cleaning up must not depend on it.
        problem = str(e)
    # Without a readable config, DEL's lines still land next to ADD's, where `egress-router inspect` looks.
    log = open_log(conf, args, None if conf is not None else found.recorded_log())
    logged("DEL", log, lambda: _del(args, conf, log, problem, found))


def _del(args: CmdArgs, conf: Optional[NetConf], log: PluginLog, problem: str, found: FoundRouter) -> None:
    log.debug("Called CNI DEL")
    log.debug(f"Container ID: {args.container_id} Netns: {args.netns} Interface: {args.ifname}")
    if problem:
        log.debug(f"config is invalid ({problem}); cleaning up what this container owns anyway")
    if found.error is not None:
        raise found.error  # met while finding the router, reported where DEL always reported it
    if found.pod is None or found.deleting is None:
        log.debug("network namespace is gone or not given: nothing left to clean up")
        log.verbose("CNI DEL done")
        return
    for line in found.notes:
        log.debug(line)
    links = found.deleting.links
    backends = _backends_for_del(conf.nat_backend if conf else "auto", links, log)
    with _Open(backends) as opened:
        teardown(found.pod, opened, found.owner, log, deleting=found.deleting)
    log.verbose("CNI DEL done")


class _Open:
    """Every backend entered, and exited in reverse order however the block ends.

    contextlib.ExitStack's job, without contextlib's import on the hot path: an
    exit that raises does not keep the others from closing; the first error wins.
    """

    def __init__(self, backends: List[NatBackend]) -> None:
        self.backends = backends
        self.entered: List[NatBackend] = []

    def __enter__(self) -> List[NatBackend]:
        opened = []
        try:
            for backend in self.backends:
                opened.append(backend.__enter__())
                self.entered.append(backend)
        except BaseException as e:
            self.__exit__(type(e), e, e.__traceback__)
            raise
        return opened

    def __exit__(
        self, kind: Optional[Type[BaseException]], value: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        failure: Optional[BaseException] = None
        while self.entered:
            try:
                self.entered.pop().__exit__(kind, value, tb)
            except BaseException as e:  # re-raised below, once the other backends are closed
                failure = failure or e
        if failure is not None:
            raise failure
