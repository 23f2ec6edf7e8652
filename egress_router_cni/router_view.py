"""Read-only view of a running router: what the product page's eight manual steps show.

Runs in the node's namespace like the plugin; enters the router's namespace
only to read (links, addresses, routes, sysctls, NAT rules). Changes nothing.
"""

from __future__ import annotations

import base64
import contextlib
import glob
import json
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple, Union

from . import sysctl
from .config import DEFAULT_LOG_FILE, MACVLAN_MODES
from .errors import CniError, InvalidConfig, NotAvailable
from .link import list_links
from .log import open_for_reading
from .netlink import Netlink
from .netns import NetNS
from .route import MAIN_TABLE, RouteInfo, addresses_of, is_saved_table, list_routes
from .state import BACKENDS, FAMILIES, PREFIX, owner_id

if TYPE_CHECKING:
    from .nat.rules import Rule

CNI_CACHE_DIRS = ("/var/lib/cni/results",)
_MODE_NAMES = {v: k for k, v in MACVLAN_MODES.items()}
_CONTAINER_LINE = re.compile(r"\] Container ID: (\S+) Netns: (\S*) Interface: (\S+)$")


@dataclass
class RouterView:
    netns: str
    interfaces: List[Dict[str, Any]] = field(default_factory=list)
    routes: List[str] = field(default_factory=list)
    saved_routes: List[str] = field(default_factory=list)
    nat: Dict[str, List[str]] = field(default_factory=dict)
    forwarding: Dict[str, str] = field(default_factory=dict)
    log_file: Optional[str] = None
    log_lines: List[str] = field(default_factory=list)
    problems: Optional[List[str]] = None
    # What the text fields were made from, for the health verdict of `inspect --all` (not printed).
    main_routes: List[RouteInfo] = field(default_factory=list, repr=False)
    nat_rules: Dict[str, List[Union[Rule, str]]] = field(default_factory=dict, repr=False)
    link_names: Dict[int, str] = field(default_factory=dict, repr=False)  # the namespace's ifindex -> name

    def to_dict(self) -> Dict[str, Any]:
        """The view as JSON-able data; problems only when CHECK ran."""
        out = {k: v for k, v in self.__dict__.items() if k not in _RAW_FIELDS}
        if self.problems is None:
            out.pop("problems")
        return out


_RAW_FIELDS = ("main_routes", "nat_rules", "link_names")


@dataclass(frozen=True)
class CachedAttachment:
    """What libcni cached for an attachment: the config it ran and the result it got."""

    container_id: str
    ifname: str
    netns: str
    config: Dict[str, Any]
    result: Dict[str, Any]


def find_cached(container_id: str, cache_dirs: Tuple[str, ...] = CNI_CACHE_DIRS) -> List[CachedAttachment]:
    """libcni's result cache entries whose container id starts with container_id (crictl-style short ids)."""
    found = []
    for directory in cache_dirs:
        for path in sorted(glob.glob(os.path.join(directory, "*"))):
            try:
                with open(path, "rb") as f:
                    data = json.loads(f.read(1 << 20))
                cid = str(data.get("containerId", ""))
                if not cid.startswith(container_id):
                    continue
                config = json.loads(base64.b64decode(data.get("config", "")) or b"{}")
            except (OSError, ValueError):
                continue
            if config.get("type") != "egress-router" and not any(
                p.get("type") == "egress-router" for p in config.get("plugins", []) if isinstance(p, dict)
            ):
                continue
            result = data.get("result") or {}
            sandbox = next((i.get("sandbox", "") for i in result.get("interfaces", []) if i.get("sandbox")), "")
            found.append(CachedAttachment(cid, str(data.get("ifName", "")), sandbox, config, result))
    return found


def find_in_log(container_id: str, log_file: str) -> Optional[Tuple[str, str, str]]:
    """(container id, netns, ifname) of the latest ADD logged for container_id (prefix match)."""
    latest = None
    try:
        with open_for_reading(log_file) as f:
            for line in f:
                match = _CONTAINER_LINE.search(line.rstrip("\n"))
                if match and match.group(1).startswith(container_id) and match.group(2):
                    latest = (match.group(1), match.group(2), match.group(3))
    except OSError:
        return None
    return latest


def log_lines_for(owner: str, log_file: str, limit: int = 200) -> List[str]:
    """Log lines of the current attachment (from its latest ADD on) of the container hashing to owner.

    Invocations are blocks starting at a 'Called CNI' line; the second line
    names the container. Several routers may share the file.
    """
    blocks: List[List[str]] = []
    block: List[str] = []
    keep = False
    try:
        with open_for_reading(log_file) as f:
            for raw in f:
                line = raw.rstrip("\n")
                if "] Called CNI " in line:
                    if keep:
                        blocks.append(block)
                    block, keep = [line], False
                    continue
                block.append(line)
                match = _CONTAINER_LINE.search(line)
                if match and owner_id(match.group(1)) == owner:
                    keep = True
        if keep:
            blocks.append(block)
    except OSError:
        return []
    adds = [i for i, b in enumerate(blocks) if "] Called CNI ADD" in b[0]]
    recent = blocks[adds[-1] :] if adds else blocks
    return [line for b in recent for line in b][-limit:]


def _route_text(route: Any, names: Dict[int, str]) -> str:
    parts = [route.dst or "default"]
    if route.gateway:
        parts.append(f"via {route.gateway}")
    if route.oif:
        parts.append(f"dev {names.get(route.oif, route.oif)}")
    if route.priority:
        parts.append(f"metric {route.priority}")
    return " ".join(parts)


def inspect_netns(netns: str, log_file: Optional[str] = None) -> RouterView:
    """Collect the router's state from netns (read-only).

    The log read is log_file when given, else the one ADD recorded with the router, else the default.
    """
    view = _collect(netns, -1, log_file, routers_only=False)
    assert view is not None
    return view


def inspect_router(netns: str, fd: int, log_file: Optional[str] = None) -> Optional[RouterView]:
    """inspect_netns for an open nsfs descriptor fd (closed here); None when no egress router is in it."""
    return _collect(netns, fd, log_file, routers_only=True)


def _collect(netns: str, fd: int, log_file: Optional[str], routers_only: bool) -> Optional[RouterView]:
    view = RouterView(netns=netns)
    recorded_logs: List[str] = []
    with NetNS(netns, fd) as ns, Netlink() as host:
        host_names = {li.index: li.name for li in list_links(host)}
        ns.enter()
        with Netlink() as pod:
            links = list_links(pod)
            names = view.link_names = {li.index: li.name for li in links}
            owners = set()
            for link in links:
                state = link.state()
                if state is None and not link.alias.startswith(PREFIX):
                    continue
                owners.add(state.owner if state is not None else "")
                if state is not None and state.log_file and readable_log(state.log_file):
                    recorded_logs.append(state.log_file)
                view.interfaces.append(
                    {
                        "name": link.name,
                        "type": link.kind,
                        "master": host_names.get(link.parent_index or -1, link.parent_index),
                        "mode": _MODE_NAMES.get(link.macvlan_mode or 0, link.macvlan_mode),
                        "mac": link.mac,
                        "mtu": link.mtu,
                        "state": "up" if link.up else "down",
                        "addresses": addresses_of(pod, link.index),
                        "nat_backend": state.nat if state is not None else None,
                    }
                )
            if routers_only and not view.interfaces:
                return None  # most namespaces on a node: nothing more to read
            for version in FAMILIES:
                main = list_routes(pod, version, MAIN_TABLE)
                view.main_routes += main
                view.routes += [_route_text(r, names) for r in main]
                view.saved_routes += [
                    _route_text(r, names) for r in list_routes(pod, version) if is_saved_table(r.table)
                ]
                with contextlib.suppress(CniError):  # IPv6 may be disabled in the pod
                    key = sysctl.FORWARDING[version]
                    view.forwarding[key.replace("/", ".")] = sysctl.read(key)
            view.nat_rules = _nat_rules()
            view.nat = {name: [rule_spelling(name, r) for r in found] for name, found in view.nat_rules.items()}
    view.log_file = log_file or next(iter(recorded_logs), None) or DEFAULT_LOG_FILE
    for owner in owners:
        view.log_lines += log_lines_for(owner, view.log_file)
    return view


def readable_log(path: str) -> bool:
    """True when path is one the plugin may have logged to (log.confine's rules).

    A path recorded in a pod's link alias is trusted no further than the config it came from.
    """
    from .log import LOG_DIRECTORIES, RefusedPath, confine

    try:
        dir_fd, _ = confine(path, LOG_DIRECTORIES)
    except (RefusedPath, OSError):
        return False
    os.close(dir_fd)
    return True


def rule_spelling(backend: str, rule: Union[Rule, str]) -> str:
    """A rule as the backend's log line spells it ('Added nftables rule: ...'); unparsed rules as they came."""
    from .nat import spell

    return rule if isinstance(rule, str) else spell(backend, rule)


def _nat_rules() -> Dict[str, List[Union[Rule, str]]]:
    """The plugin's rules from every backend that has some (call inside the router's namespace)."""
    from .nat import get_backend

    rules: Dict[str, List[Union[Rule, str]]] = {}
    for name in BACKENDS:
        try:
            with get_backend(name) as backend:
                found = backend.installed(list(FAMILIES))
        except (CniError, NotAvailable):
            continue
        if found:
            rules[name] = list(found)
    return rules


def resolve_target(
    netns: Optional[str], pid: Optional[int], container_id: Optional[str], log_file: Optional[str]
) -> Tuple[str, Optional[CachedAttachment]]:
    """Turn --netns/--pid/--container-id into a netns path (and libcni's cache entry when known)."""
    if netns:
        return netns, None
    if pid is not None:
        return f"/proc/{pid}/ns/net", None
    assert container_id
    cached = [c for c in find_cached(container_id) if c.netns]
    if len({c.container_id for c in cached}) > 1:
        raise InvalidConfig("ambiguous container id", f"{container_id!r} matches several containers; give more of it")
    if cached:
        return cached[0].netns, cached[0]
    # The log ADD wrote names the container and its namespace: the given one, or else the default one
    # and those the node's routers recorded at ADD.
    logs = [log_file] if log_file else list(dict.fromkeys([DEFAULT_LOG_FILE, *recorded_log_files()]))
    for path in logs:
        logged = find_in_log(container_id, path)
        if logged is not None:
            return logged[1], None
    raise InvalidConfig(
        "container not found",
        f"no libcni cache entry and no ADD in {', '.join(logs)} for container {container_id!r}; use --netns or --pid",
    )


def recorded_log_files() -> List[str]:
    """The log files the node's routers recorded at ADD (each router's link alias), in discovery order."""
    from .node_scan import find_netns

    found: List[str] = []
    for candidate in find_netns():
        try:
            with NetNS(candidate.path, candidate.fd) as ns:
                ns.enter()
                with Netlink() as pod:
                    for link in list_links(pod):
                        state = link.state()
                        recorded = state.log_file if state is not None else None
                        if recorded and recorded not in found and readable_log(recorded):
                            found.append(recorded)
        except CniError:
            continue  # gone meanwhile
    return found
