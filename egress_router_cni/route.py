"""Addresses and routes of the router: host route to the gateway, default route swap and restore.

The pod's original default routes are moved into a private routing table
rather than kept in memory, so that DEL can put them back even after the ADD
process was killed half-way. The table id is derived from the attachment's
owner id, so a DEL for some other container never touches them.
"""

from __future__ import annotations

import errno
import time
from _socket import AF_INET, AF_INET6

from .errors import RouteError
from .ipaddr import ip_interface
from .netlink import (
    NLM_F_CREATE,
    NLM_F_EXCL,
    RTM_DELROUTE,
    RTM_GETADDR,
    RTM_GETROUTE,
    RTM_NEWADDR,
    RTM_NEWROUTE,
    Netlink,
    NetlinkError,
)
from .record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, List, Optional

    from .config import IPAddress, IPInterface

MAIN_TABLE = 254
# Where the pod's original default routes wait while the router owns the
# default route: 0x4552xxxx ("ER"), the low 16 bits from the owner id.
SAVED_TABLE_BASE = 0x45520000


def saved_table(owner: str) -> int:
    """The private routing table holding the original default routes of this owner's pod."""
    return SAVED_TABLE_BASE + int(owner[:4], 16)


def is_saved_table(table: int) -> bool:
    """True for a table id saved_table() can return (any owner's)."""
    return SAVED_TABLE_BASE <= table <= SAVED_TABLE_BASE + 0xFFFF


RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RTN_UNICAST = 1
RTPROT_BOOT = 3
IFA_F_TENTATIVE = 0x40
IFA_F_DADFAILED = 0x08
_FAMILY = {4: AF_INET, 6: AF_INET6}
# Attributes that describe a route (as opposed to cache/statistics) and survive a copy.
_COPY_ATTRS = ("RTA_DST", "RTA_GATEWAY", "RTA_OIF", "RTA_PRIORITY", "RTA_PREFSRC", "RTA_PREF", "RTA_VIA")


# Record (a NamedTuple to mypy), not @dataclass: dataclasses imports inspect, ~12 ms of every plugin exec.
class RouteInfo(Record):
    family: int
    dst: Optional[str]  # None for default
    gateway: Optional[str]
    oif: Optional[int]
    table: int
    priority: Optional[int]
    msg: Any

    def go_string(self, table: Optional[int] = None) -> str:
        """The upstream (Go netlink) spelling used in the product page's log line."""
        return (
            f"{{Ifindex: {self.oif or 0} Dst: {self.dst or '<nil>'} Src: <nil> "
            f"Gw: {self.gateway or '<nil>'} Flags: [] Table: {self.table if table is None else table}}}"
        )


def _route_info(msg: Any, version: int) -> RouteInfo:
    table = msg.get_attr("RTA_TABLE") or msg["table"]
    dst = msg.get_attr("RTA_DST")
    return RouteInfo(
        family=version,
        dst=f"{dst}/{msg['dst_len']}" if dst else None,
        gateway=msg.get_attr("RTA_GATEWAY"),
        oif=msg.get_attr("RTA_OIF"),
        table=table,
        priority=msg.get_attr("RTA_PRIORITY"),
        msg=msg,
    )


def list_routes(nl: Netlink, version: int, table: Optional[int] = None) -> List[RouteInfo]:
    """The routes of one family, of one table or of every table."""
    msg = nl.message(RTM_NEWROUTE, {"family": _FAMILY[version]})
    routes = [_route_info(m, version) for m in nl.dump(RTM_GETROUTE, msg)]
    return [r for r in routes if table is None or r.table == table]


def default_routes(nl: Netlink, version: int, table: int = MAIN_TABLE) -> List[RouteInfo]:
    """The default routes of one family in table (the main table unless told)."""
    return [r for r in list_routes(nl, version, table) if r.msg["dst_len"] == 0 and r.msg["type"] == RTN_UNICAST]


def add_address(nl: Netlink, index: int, address: IPInterface) -> None:
    """Add address to the link (EXCL: an address already there is an error too); raise RouteError if refused."""
    attrs: List[Any] = [("IFA_LOCAL", str(address.ip)), ("IFA_ADDRESS", str(address.ip))]
    msg = nl.message(
        RTM_NEWADDR,
        {"family": _FAMILY[address.version], "prefixlen": address.prefixlen, "index": index},
        attrs,
    )
    try:
        nl.request(RTM_NEWADDR, msg, NLM_F_CREATE | NLM_F_EXCL)
    except NetlinkError as e:
        raise RouteError(f"failed to add address {address}", str(e)) from e


def wait_for_dad(nl: Netlink, index: int, timeout: float = 10.0) -> None:
    """Wait until the link's IPv6 addresses leave the tentative state; fail on a duplicate."""
    deadline = time.monotonic() + timeout
    while True:
        msg = nl.message(RTM_NEWADDR, {"family": AF_INET6})
        tentative = False
        for addr in nl.dump(RTM_GETADDR, msg):
            if addr["index"] != index:
                continue
            flags = addr.get_attr("IFA_FLAGS") or addr["flags"]
            if flags & IFA_F_DADFAILED:
                raise RouteError(
                    "duplicate address detected",
                    f"{addr.get_attr('IFA_ADDRESS')} is already in use on the external network",
                )
            if flags & IFA_F_TENTATIVE:
                tentative = True
        if not tentative:
            return
        if time.monotonic() > deadline:
            raise RouteError("IPv6 duplicate address detection did not finish", f"after {timeout:.0f}s")
        time.sleep(0.05)


def _route_msg(nl: Netlink, version: int, table: int, attrs: List[Any], dst_len: int, scope: int) -> Any:
    return nl.message(
        RTM_NEWROUTE,
        {
            "family": _FAMILY[version],
            "dst_len": dst_len,
            "table": table if table < 256 else 252,  # RT_TABLE_COMPAT; the attribute holds the real id
            "proto": RTPROT_BOOT,
            "scope": scope,
            "type": RTN_UNICAST,
        },
        [("RTA_TABLE", table), *attrs],
    )


def add_host_route(nl: Netlink, gateway: IPAddress, index: int) -> None:
    """`GATEWAY dev IFNAME`: the gateway is on-link even if it lies outside the reserved prefix."""
    version = gateway.version
    msg = _route_msg(
        nl,
        version,
        MAIN_TABLE,
        [("RTA_DST", str(gateway)), ("RTA_OIF", index)],
        32 if version == 4 else 128,
        RT_SCOPE_LINK,
    )
    try:
        nl.request(RTM_NEWROUTE, msg, NLM_F_CREATE | NLM_F_EXCL)
    except NetlinkError as e:
        if e.errno != errno.EEXIST:
            raise RouteError(f"failed to add route to gateway {gateway}", str(e)) from e
        host_dst = f"{gateway}/{32 if version == 4 else 128}"
        conflict = [r for r in list_routes(nl, version, MAIN_TABLE) if r.dst == host_dst and r.oif != index]
        if conflict:
            # Keeping it would send the gateway's traffic elsewhere and break the router silently.
            raise RouteError(
                f"the pod already has a route to the gateway {gateway}",
                f"{conflict[0].go_string()} conflicts with the router's route on its macvlan; remove it or "
                "choose another gateway",
            ) from e


def add_default_route(nl: Netlink, gateway: IPAddress, index: int) -> None:
    """A default route via gateway through the link, in the main table; raise RouteError if refused."""
    msg = _route_msg(
        nl,
        gateway.version,
        MAIN_TABLE,
        [("RTA_GATEWAY", str(gateway)), ("RTA_OIF", index)],
        0,
        RT_SCOPE_UNIVERSE,
    )
    try:
        nl.request(RTM_NEWROUTE, msg, NLM_F_CREATE | NLM_F_EXCL)
    except NetlinkError as e:
        raise RouteError(f"failed to add default route via {gateway}", str(e)) from e


def _copy(nl: Netlink, route: RouteInfo, table: int) -> Any:
    src = route.msg
    attrs = [(name, src.get_attr(name)) for name in _COPY_ATTRS if src.get_attr(name) is not None]
    msg = nl.message(
        RTM_NEWROUTE,
        {
            "family": src["family"],
            "dst_len": src["dst_len"],
            "src_len": src["src_len"],
            "tos": src["tos"],
            "table": table if table < 256 else 252,
            "proto": src["proto"],
            "scope": src["scope"],
            "type": src["type"],
            "flags": src["flags"] & 0x4,  # keep RTNH_F_ONLINK only
        },
        [("RTA_TABLE", table), *attrs],
    )
    return msg


def _delete(nl: Netlink, route: RouteInfo) -> bool:
    try:
        nl.request(RTM_DELROUTE, _copy(nl, route, route.table))
    except NetlinkError as e:
        if e.errno == errno.ESRCH:
            return False
        raise RouteError(f"failed to delete route {route.go_string()}", str(e)) from e
    return True


def save_and_remove_default_routes(nl: Netlink, version: int, table: int) -> List[RouteInfo]:
    """Move the main table's default routes into the private table; return what was moved.

    Copy first, delete second: a crash in between leaves a copy, never a loss.
    """
    moved = []
    for route in default_routes(nl, version):
        try:
            nl.request(RTM_NEWROUTE, _copy(nl, route, table), NLM_F_CREATE | NLM_F_EXCL)
        except NetlinkError as e:
            if e.errno != errno.EEXIST:
                raise RouteError(f"failed to save default route {route.go_string()}", str(e)) from e
        _delete(nl, route)
        moved.append(route)
    return moved


def restore_default_routes(nl: Netlink, version: int, table: int) -> List[RouteInfo]:
    """Put saved default routes back into the main table and empty the private table; return those restored.

    Called once the router link is gone: its default route went with it, so
    the originals can take their place again.
    """
    saved = list_routes(nl, version, table)
    if not saved:
        return []
    restored = []
    for route in saved:
        try:
            nl.request(RTM_NEWROUTE, _copy(nl, route, MAIN_TABLE), NLM_F_CREATE | NLM_F_EXCL)
            restored.append(route)
        except NetlinkError as e:
            # EEXIST: already back. ENETUNREACH/ENODEV: its interface is gone;
            # nothing sensible to restore it to.
            if e.errno not in (errno.EEXIST, errno.ENETUNREACH, errno.ENODEV):
                raise RouteError(f"failed to restore default route {route.go_string()}", str(e)) from e
        _delete(nl, route)
    return restored


def addresses_of(nl: Netlink, index: int) -> List[str]:
    """CIDRs configured on a link (both families), for CHECK."""
    out = []
    for family in (AF_INET, AF_INET6):
        for addr in nl.dump(RTM_GETADDR, nl.message(RTM_NEWADDR, {"family": family})):
            if addr["index"] == index:
                local = addr.get_attr("IFA_LOCAL") or addr.get_attr("IFA_ADDRESS")
                out.append(str(ip_interface(f"{local}/{addr['prefixlen']}")))
    return out
