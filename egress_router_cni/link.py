"""The router's macvlan link: created under a temporary name, moved and renamed, found again for DEL."""

from __future__ import annotations

import errno
import os

from .config import MACVLAN_MODES
from .errors import InterfaceExists, InvalidConfig, LinkError
from .netlink import (
    NLM_F_CREATE,
    NLM_F_EXCL,
    RTM_DELLINK,
    RTM_GETLINK,
    RTM_NEWLINK,
    Netlink,
    NetlinkError,
)
from .record import Record
from .state import PREFIX, RouterState, decode_alias

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, List, Optional

TEMP_PREFIX = "egr"  # + 8 hex digits: create_macvlan's temporary names
IFF_UP = 0x1


# Record (a NamedTuple to mypy), not @dataclass: dataclasses imports inspect, ~12 ms of every plugin exec.
class LinkInfo(Record):
    index: int  # type: ignore[assignment]  # shadows tuple.index on purpose: it is the ifindex
    name: str
    mac: str
    mtu: int
    kind: Optional[str]
    alias: str
    up: bool
    parent_index: Optional[int]
    macvlan_mode: Optional[int]

    def state(self) -> Optional[RouterState]:
        """The record ADD stored in the alias, or None when this link is not ours (or the record is malformed)."""
        return decode_alias(self.alias)


def is_temp_name(name: str) -> bool:
    """True for a name create_macvlan gives a new link before renaming it ("egr" + 8 hex digits)."""
    suffix = name[len(TEMP_PREFIX) :]
    return name.startswith(TEMP_PREFIX) and len(suffix) == 8 and all(c in "0123456789abcdef" for c in suffix)


def _info(msg: Any) -> LinkInfo:
    linkinfo = msg.get_attr("IFLA_LINKINFO")
    kind = mode = None
    if linkinfo is not None:
        kind = linkinfo.get_attr("IFLA_INFO_KIND")
        data = linkinfo.get_attr("IFLA_INFO_DATA")
        if kind == "macvlan" and data is not None:
            raw = data.get_attr("IFLA_MACVLAN_MODE")
            # pyroute2 decodes known modes to their names.
            mode = MACVLAN_MODES.get(raw) if isinstance(raw, str) else raw
    return LinkInfo(
        index=msg["index"],
        name=msg.get_attr("IFLA_IFNAME") or "",
        mac=msg.get_attr("IFLA_ADDRESS") or "",
        mtu=msg.get_attr("IFLA_MTU") or 0,
        kind=kind,
        alias=msg.get_attr("IFLA_IFALIAS") or "",
        up=bool(msg["flags"] & IFF_UP),
        parent_index=msg.get_attr("IFLA_LINK"),
        macvlan_mode=mode,
    )


def get_link(nl: Netlink, name: str) -> Optional[LinkInfo]:
    """The link called name in nl's namespace, or None."""
    msg = nl.message(RTM_NEWLINK, {"index": 0}, [("IFLA_IFNAME", name)])
    try:
        replies = nl.request(RTM_GETLINK, msg)
    except NetlinkError as e:
        if e.errno in (errno.ENODEV, errno.ENOENT):
            return None
        raise
    return _info(replies[0]) if replies else None


def list_links(nl: Netlink) -> List[LinkInfo]:
    """Every link in nl's namespace."""
    return [_info(m) for m in nl.dump(RTM_GETLINK, nl.message(RTM_NEWLINK, {"index": 0}))]


def find_owned_links(nl: Netlink, owner: str, note: Optional[Callable[[str], None]] = None) -> List[LinkInfo]:
    """Links of this attachment: alias names our owner id, or a temporary name left by a crash.

    A record that does not decode (a pod with NET_ADMIN can write any alias) is
    not ours: the link is left alone, and NOTE, when given, hears about it.
    """
    found = []
    for link in list_links(nl):
        state = link.state()
        if state is None and note is not None and link.alias.startswith(PREFIX):
            note(f"interface {link.name!r} carries a malformed egress-router record: not ours, left alone")
        if (state is not None and state.owner == owner) or (
            is_temp_name(link.name) and link.kind == "macvlan" and not link.alias
        ):
            found.append(link)
    return found


def resolve_master(nl: Netlink, name: Optional[str], default_route_ifindex: Optional[int]) -> LinkInfo:
    """The node interface to attach the macvlan to: the configured one or the default route's."""
    if name:
        link = get_link(nl, name)
        if link is None:
            raise InvalidConfig(
                "master interface not found",
                f"interfaceArgs.master {name!r} does not exist in the node's network namespace",
            )
    else:
        if default_route_ifindex is None:
            raise InvalidConfig(
                "no master interface",
                "interfaceArgs.master is not set and the node has no default route to pick one from",
            )
        link = next((li for li in list_links(nl) if li.index == default_route_ifindex), None)
        if link is None:
            raise InvalidConfig("no master interface", "the node's default route points at no interface")
    if link.name == "lo":
        raise InvalidConfig("invalid master interface", "the loopback interface cannot carry a macvlan")
    return link


def create_macvlan(host: Netlink, pod: Netlink, master: LinkInfo, pod_fd: int, mode: str, mtu: int) -> LinkInfo:
    """Create a macvlan on master directly inside the pod namespace under a random temporary name.

    The final name is set afterwards by rename_link: a device is named in the
    namespace that creates it too, so creating it as "eth0"/"net1" would collide
    with the node's own interfaces (containernetworking/cni#32).
    """
    last: Optional[NetlinkError] = None
    for _ in range(10):
        temp = TEMP_PREFIX + os.urandom(4).hex()
        attrs: List[Any] = [
            ("IFLA_IFNAME", temp),
            ("IFLA_LINK", master.index),
            ("IFLA_NET_NS_FD", pod_fd),
            (
                "IFLA_LINKINFO",
                {
                    "attrs": [
                        ("IFLA_INFO_KIND", "macvlan"),
                        ("IFLA_INFO_DATA", {"attrs": [("IFLA_MACVLAN_MODE", MACVLAN_MODES[mode])]}),
                    ]
                },
            ),
        ]
        if mtu:
            attrs.append(("IFLA_MTU", mtu))
        msg = host.message(RTM_NEWLINK, {"index": 0, "family": 0}, attrs)
        try:
            host.request(RTM_NEWLINK, msg, NLM_F_CREATE | NLM_F_EXCL)
        except NetlinkError as e:
            if e.errno == errno.EEXIST:
                last = e
                continue  # the random name is taken: try another
            raise LinkError(f"failed to create macvlan on master {master.name!r}", str(e)) from e
        link = get_link(pod, temp)
        if link is None:
            raise LinkError("failed to create macvlan", f"{temp!r} did not appear in the pod namespace")
        return link
    raise LinkError("failed to create macvlan", f"no free temporary name after 10 tries: {last}")


def rename_link(pod: Netlink, link: LinkInfo, name: str, alias: str) -> LinkInfo:
    """Give the (down) link its final name and our ownership alias in one request."""
    msg = pod.message(RTM_NEWLINK, {"index": link.index}, [("IFLA_IFNAME", name), ("IFLA_IFALIAS", alias)])
    try:
        pod.request(RTM_NEWLINK, msg)
    except NetlinkError as e:
        if e.errno == errno.EEXIST:
            raise InterfaceExists(
                f"interface {name!r} already exists in the pod",
                "it was created concurrently; it is left untouched",
            ) from e
        raise LinkError(f"failed to rename macvlan to {name!r}", str(e)) from e
    renamed = get_link(pod, name)
    if renamed is None:
        raise LinkError(f"failed to rename macvlan to {name!r}", "the link vanished")
    return renamed


def set_up(pod: Netlink, link: LinkInfo) -> None:
    """Bring the link up; raise LinkError when the kernel refuses."""
    msg = pod.message(RTM_NEWLINK, {"index": link.index, "flags": IFF_UP, "change": IFF_UP})
    try:
        pod.request(RTM_NEWLINK, msg)
    except NetlinkError as e:
        raise LinkError(f"failed to bring {link.name!r} up", str(e)) from e


def set_down(pod: Netlink, link: LinkInfo) -> None:
    """Take the link down; raise LinkError when the kernel refuses."""
    msg = pod.message(RTM_NEWLINK, {"index": link.index, "flags": 0, "change": IFF_UP})
    try:
        pod.request(RTM_NEWLINK, msg)
    except NetlinkError as e:
        raise LinkError(f"failed to bring {link.name!r} down", str(e)) from e


def delete_link(nl: Netlink, index: int) -> bool:
    """Delete a link by index; False when it is already gone."""
    try:
        nl.request(RTM_DELLINK, nl.message(RTM_NEWLINK, {"index": index}))
    except NetlinkError as e:
        if e.errno in (errno.ENODEV, errno.ENOENT):
            return False
        raise LinkError("failed to delete link", str(e)) from e
    return True
