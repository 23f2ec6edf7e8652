"""One row per egress router, with a health verdict: what `egress-router inspect --all` prints.

Built from a RouterView (router_view.py) and the router's own log lines, with
no config: the router's kernel state and its ADD's log say what it should be.
Healthy means the interface is up; each gateway (the log's "Gateway:" line, or
the host routes ADD adds on the router interface) carries the default route
of its family on the router interface, with forwarding on; and the NAT rules
of the backend recorded at ADD are there and are exactly the ones ADD logged
(without the log: one SNAT per gateway family to a reserved address, nothing
unrecognised).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Union

from .ipaddr import ip_address, ip_interface
from .nat.rules import SnatRule
from .record import Record
from .route import RouteInfo
from .router_view import RouterView, rule_spelling

if TYPE_CHECKING:
    from .nat.rules import Rule

_CONTAINER = re.compile(r"\] Container ID: (\S+) Netns: \S* Interface: \S+$")
_POD = re.compile(r"\] Pod: (.*)$")
_GATEWAY = re.compile(r"\] Gateway: (.*)$")
_ADDED = re.compile(r"\] Added (nftables|iptables) rule: (.*)$")


class RouterRow(Record):
    netns: str
    container_id: Optional[str]
    pod: Optional[str]  # NAMESPACE/NAME from CNI_ARGS at ADD
    interface: str
    master: str
    addresses: List[str]
    gateways: List[str]
    nat_backend: Optional[str]
    nat_rules: int
    healthy: bool
    problems: List[str]
    log_file: Optional[str]

    def to_dict(self) -> Dict[str, Any]:
        """The row as a JSON-able dict (field name -> value)."""
        return self._asdict()


def _from_log(lines: List[str]) -> Dict[str, Any]:
    """Container id, pod, gateways and installed rules from the latest ADD's lines (router_view.log_lines_for)."""
    found: Dict[str, Any] = {"rules": []}
    for line in lines:
        if "] Called CNI ADD" in line:
            found = {"rules": []}  # a later ADD of the same owner replaces what an earlier one said
        for key, pattern in (("container_id", _CONTAINER), ("pod", _POD), ("gateways", _GATEWAY)):
            match = pattern.search(line)
            if match:
                found[key] = match.group(1)
        added = _ADDED.search(line)
        if added:
            found["rules"].append((added.group(1), added.group(2)))
    return found


def _gateways(view: RouterView, ifindex: Optional[int], logged: Optional[str]) -> List[str]:
    if logged:
        return [g.strip() for g in logged.split(",") if g.strip()]
    # ADD's host route to each gateway: "GW/32 dev IFACE" (or /128), no via, in the main table.
    return [
        r.dst.split("/")[0]
        for r in view.main_routes
        if r.dst and r.dst.endswith(("/32", "/128")) and r.gateway is None and r.oif == ifindex
    ]


def rows(view: RouterView) -> List[RouterRow]:
    """One row per egress-router interface in the namespace of view."""
    out = []
    for iface in view.interfaces:
        log = _from_log(view.log_lines)
        ifindex = _index(view, iface["name"])
        gateways = _gateways(view, ifindex, log.get("gateways"))
        backend = iface.get("nat_backend")
        rules = view.nat_rules.get(backend, []) if backend else []
        problems = _problems(view, iface, gateways, backend, rules, log["rules"])
        out.append(
            RouterRow(
                netns=view.netns,
                container_id=log.get("container_id"),
                pod=log.get("pod"),
                interface=iface["name"],
                master=str(iface["master"]),
                # The reserved ones: the kernel's own IPv6 link-local address is not.
                addresses=[a for a in iface["addresses"] if not ip_interface(a).ip.is_link_local],
                gateways=gateways,
                nat_backend=backend,
                nat_rules=len(rules),
                healthy=not problems,
                problems=problems,
                log_file=view.log_file,
            )
        )
    return out


def _problems(
    view: RouterView,
    iface: Dict[str, Any],
    gateways: List[str],
    backend: Optional[str],
    rules: List[Union[Rule, str]],
    logged_rules: List[Any],
) -> List[str]:
    name = iface["name"]
    ifindex = _index(view, name)
    problems = []
    if iface["state"] != "up":
        problems.append(f"{name} is down")
    if not gateways:
        problems.append(f"no gateway: no host route to a gateway on {name}")
    for gateway in gateways:
        version = ip_address(gateway).version
        defaults = [r for r in view.main_routes if r.dst is None and r.family == version]
        if not any(r.gateway == gateway and r.oif == ifindex for r in defaults):
            now = ", ".join(_route(r, view) for r in defaults) or "none"
            problems.append(f"the IPv{version} default route is not via {gateway} on {name} (it is: {now})")
        key = "net.ipv4.ip_forward" if version == 4 else "net.ipv6.conf.all.forwarding"
        if view.forwarding.get(key) != "1":
            problems.append(f"{key} is {view.forwarding.get(key, 'unknown')}, not 1")
    if backend is None:
        problems.append("no NAT backend recorded with the interface")
        return problems
    if not rules:
        problems.append(f"no {backend} NAT rules")
        return problems
    present = [rule_spelling(backend, r) for r in rules]
    expected = [text for logged_backend, text in logged_rules if logged_backend == backend]
    if expected:
        missing = [r for r in expected if r not in present]
        extra = [r for r in present if r not in expected]
        problems += [f"NAT rule missing: {r}" for r in missing]
        problems += [f"NAT rule not installed by ADD: {r}" for r in extra]
        return problems
    # No log of this router's ADD: the rules must at least be ours and SNAT each routed family.
    problems += [f"NAT rule not recognised: {r}" for r in rules if isinstance(r, str)]
    own = {ip_interface(a).ip for a in iface["addresses"]}
    for gateway in gateways:
        version = ip_address(gateway).version
        if not any(
            isinstance(r, SnatRule) and r.family == version and r.out_iface == name and r.to_addr in own for r in rules
        ):
            problems.append(f"no IPv{version} SNAT rule to a reserved address on {name}")
    return problems


def _index(view: RouterView, name: str) -> Optional[int]:
    return next((index for index, n in view.link_names.items() if n == name), None)


def _route(route: RouteInfo, view: RouterView) -> str:
    via = f" via {route.gateway}" if route.gateway else ""
    return f"default{via} dev {view.link_names.get(route.oif or -1, route.oif)}"
