"""DEL, and the rollback of a failed ADD: undo what an attachment did, from the pod's kernel state.

Rollback and DEL share this one path, so DEL also finishes the job after an
ADD was killed half-way: the link's alias, the saved-routes table and the NAT
rules' note say what to undo, and whose it is.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from . import sysctl
from .config import NetConf, parse_netconf
from .errors import CniError, NotAvailable
from .invocation import ALL_FAMILIES, logged, open_log
from .link import LinkInfo, delete_link, find_owned_links, owner_id
from .log import PluginLog
from .nat import NatBackend, get_backend
from .netlink import Netlink
from .netns import open_optional
from .protocol import CmdArgs
from .route import restore_default_routes, saved_table


def make_note(state: Dict[str, Any]) -> str:
    """The state record in the NAT table's comment: 'egress-router owner=ID fwd4=0 fwd6=1'."""
    fields = [f"owner={state['owner']}"] + [f"fwd{k}={v}" for k, v in sorted(state["forwarding"].items())]
    fields.append(f"nat={state['nat']}")
    return "egress-router " + " ".join(fields)


def parse_note(note: Optional[str]) -> Dict[str, Any]:
    if not note or not note.startswith("egress-router "):
        return {}
    parsed: Dict[str, Any] = {"forwarding": {}}
    for field in note.split()[1:]:
        key, _, value = field.partition("=")
        if key == "owner":
            parsed["owner"] = value
        elif key == "nat":
            parsed["nat"] = value
        elif key in ("fwd4", "fwd6") and value in ("0", "1"):
            parsed["forwarding"][key[3:]] = value
    return parsed


def _backends_for_del(configured: str, links: List[LinkInfo], log: PluginLog) -> List[NatBackend]:
    """The backends whose rules this owner may have installed: the recorded one, the configured one."""
    names: List[str] = []
    for link in links:
        recorded = (link.owner_state() or {}).get("nat")
        if recorded in ("nftables", "iptables"):
            names.append(recorded)
    if configured in ("nftables", "iptables"):
        names.append(configured)
    if not names:
        names.append("auto")
    backends: List[NatBackend] = []
    for name in dict.fromkeys(names):
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
    forwarding: Optional[Dict[str, str]] = None,
) -> None:
    """Undo everything an ADD of this owner may have done, from kernel state; continue past errors."""
    errors: List[CniError] = []
    links = find_owned_links(pod, owner)
    original = dict(forwarding or {})
    for link in links:
        state = link.owner_state() or {}
        saved = state.get("forwarding")
        if isinstance(saved, dict):
            original.update({k: v for k, v in saved.items() if v in ("0", "1")})
    notes = {backend.name: parse_note(backend.note(list(ALL_FAMILIES))) for backend in backends}
    if not links:
        # The link may have been deleted by hand: the NAT rules keep a copy of the state.
        for note in notes.values():
            if note.get("owner") == owner:
                original.update({k: v for k, v in note.get("forwarding", {}).items() if k not in original})

    def attempt(fn: Callable[[], Any]) -> None:
        try:
            fn()
        except CniError as e:
            errors.append(e)
            log.error(str(e))

    for backend in backends:

        def remove_nat(backend: NatBackend = backend) -> None:
            other = notes[backend.name].get("owner")
            if other not in (None, owner):
                log.debug(f"{backend.name} NAT rules belong to another attachment: left in place")
                return
            if backend.list(list(ALL_FAMILIES)) is not None:
                backend.remove(list(ALL_FAMILIES))
                log.debug(f"Deleted {backend.name} NAT rules")

        attempt(remove_nat)
    for link in links:

        def remove_link(link: LinkInfo = link) -> None:
            if delete_link(pod, link.index):
                log.debug(f"Deleted interface {link.name!r}")

        attempt(remove_link)
    for version in ALL_FAMILIES:

        def restore(version: int = version) -> None:
            for route in restore_default_routes(pod, version, saved_table(owner)):
                log.debug(f"Restored default route {route.go_string(table=254)}")

        attempt(restore)
    for family, value in original.items():

        def reset(family: str = family, value: str = value) -> None:
            key = sysctl.FORWARDING[int(family)]
            if sysctl.read(key) != value:
                sysctl.write(key, value)
                log.debug(f"Restored {key.replace('/', '.')}={value}")

        attempt(reset)
    if errors:
        raise errors[0]


def cmd_del(args: CmdArgs) -> None:
    conf: Optional[NetConf] = None
    problem = ""
    try:
        conf = parse_netconf(args.config)
    except CniError as e:
        # The runtime sends DEL after a failed ADD too, with the same (maybe
        # invalid) config: cleaning up must not depend on it.
        problem = str(e)
    log = open_log(conf, args)
    logged("DEL", log, lambda: _del(args, conf, log, problem))


def _del(args: CmdArgs, conf: Optional[NetConf], log: PluginLog, problem: str) -> None:
    log.debug("Called CNI DEL")
    log.debug(f"Container ID: {args.container_id} Netns: {args.netns} Interface: {args.ifname}")
    if problem:
        log.debug(f"config is invalid ({problem}); cleaning up what this container owns anyway")
    ns = open_optional(args.netns)
    if ns is None:
        log.debug("network namespace is gone or not given: nothing left to clean up")
        log.verbose("CNI DEL done")
        return
    owner = owner_id(args.container_id)
    with ns:
        ns.enter()
        with Netlink() as pod:
            backends = _backends_for_del(conf.nat_backend if conf else "auto", find_owned_links(pod, owner), log)
            teardown(pod, backends, owner, log)
    log.verbose("CNI DEL done")
