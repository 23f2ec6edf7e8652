"""CHECK: compare a router with what ADD sets up, and name every difference."""

from __future__ import annotations

from . import sysctl
from .cmdargs import CmdArgs
from .config import MACVLAN_MODES, NetConf, parse_netconf
from .errors import CheckFailed, InvalidConfig
from .invocation import logged, master_of, open_log
from .link import LinkInfo, get_link
from .log import PluginLog
from .nat import NatBackend, recorded_backend, spell
from .nat.rules import build_rules
from .netlink import Netlink
from .netns import NetNS
from .policy import node_policy
from .record import Record
from .result import parse_result
from .route import MAIN_TABLE, addresses_of, list_routes
from .state import owner_id

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Optional

    from .nat.rules import Rule


def cmd_check(args: CmdArgs) -> None:
    """Succeed when the router in args.netns is what ADD with this config set up; else raise CheckFailed."""
    conf = parse_netconf(args.config)
    log = open_log(conf, args)
    logged("CHECK", log, lambda: _check(args, conf, log))


def _check(args: CmdArgs, conf: NetConf, log: PluginLog) -> None:
    log.debug("Called CNI CHECK")
    log.debug(f"Container ID: {args.container_id} Netns: {args.netns} Interface: {args.ifname}")
    if conf.prev_result is None:
        raise InvalidConfig("required prevResult missing", "CHECK needs the result of ADD as prevResult")
    prev = parse_result(conf.prev_result, conf.cni_version)
    rules = build_rules(conf, args.ifname)
    # Namespace problems (gone: code 3, the node's own: code 8) come before content checks.
    with NetNS(args.netns) as ns, Netlink() as host:
        iface = next((i for i in prev.interfaces if i.name == args.ifname), None)
        if iface is None:
            raise CheckFailed("interface not in prevResult", f"prevResult lists no interface {args.ifname!r}")
        if iface.sandbox != args.netns:
            raise CheckFailed(
                "sandbox in prevResult does not match",
                f"prevResult says {iface.sandbox!r}, CNI_NETNS is {args.netns!r}",
            )
        master = master_of(host, conf)
        ns.enter()
        with Netlink() as pod:
            link = get_link(pod, args.ifname)
            with recorded_backend(link.state() if link else None, conf.nat_backend) as backend:
                expected = Expected(args.ifname, rules, args.container_id, master, iface.mac)
                problems = verify(pod, backend, conf, expected)
            problems += node_policy().violations(conf, master.name)
    if problems:
        raise CheckFailed("egress router check failed", "; ".join(problems))
    log.debug("CHECK passed")


class Expected(Record):
    """What CHECK compares the pod with, beside the config."""

    ifname: str
    rules: List[Rule]
    container_id: Optional[str] = None  # None: any owner (inspect without a container id)
    master: Optional[LinkInfo] = None  # None: any master
    mac: str = ""  # "": any MAC


def verify(pod: Netlink, backend: NatBackend, conf: NetConf, expected: Expected) -> List[str]:
    """Compare the pod's state with what ADD sets up; return the differences in words (none: it matches)."""
    link = get_link(pod, expected.ifname)
    if link is None:
        return [f"interface {expected.ifname!r} not found in the pod"]
    return (
        _link_problems(link, conf, expected)
        + _address_problems(pod, link, conf)
        + _route_problems(pod, link, conf)
        + _forwarding_problems(conf)
        + _nat_problems(backend, conf, expected.rules)
    )


def _link_problems(link: LinkInfo, conf: NetConf, expected: Expected) -> List[str]:
    ifname, problems = link.name, []
    state = link.state()
    if link.kind != "macvlan":
        problems.append(f"{ifname!r} is a {link.kind or 'plain'} link, not a macvlan")
    if state is None or (expected.container_id is not None and state.owner != owner_id(expected.container_id)):
        problems.append(f"{ifname!r} was not created by egress-router for this container")
    if link.macvlan_mode != MACVLAN_MODES[conf.mode]:
        problems.append(f"{ifname!r} macvlan mode is {link.macvlan_mode}, expected {conf.mode}")
    if expected.master is not None and link.parent_index != expected.master.index:
        problems.append(f"{ifname!r} is not attached to master {expected.master.name!r}")
    if expected.mac and link.mac.lower() != expected.mac.lower():
        problems.append(f"{ifname!r} MAC is {link.mac}, prevResult says {expected.mac}")
    if not link.up:
        problems.append(f"{ifname!r} is down")
    return problems


def _address_problems(pod: Netlink, link: LinkInfo, conf: NetConf) -> List[str]:
    present = addresses_of(pod, link.index)
    return [f"address {a} missing on {link.name!r}" for a in conf.addresses if str(a) not in present]


def _route_problems(pod: Netlink, link: LinkInfo, conf: NetConf) -> List[str]:
    problems = []
    for gateway in conf.gateways:
        routes = list_routes(pod, gateway.version, MAIN_TABLE)
        host_dst = f"{gateway}/{32 if gateway.version == 4 else 128}"
        if not any(r.dst == host_dst and r.oif == link.index for r in routes):
            problems.append(f"route to gateway {gateway} on {link.name!r} missing")
        defaults = [r for r in routes if r.dst is None]
        if not any(r.gateway == str(gateway) and r.oif == link.index for r in defaults):
            problems.append(f"default route via {gateway} dev {link.name} missing")
        if any(r.oif != link.index for r in defaults):
            problems.append(f"another IPv{gateway.version} default route competes with the router's")
    return problems


def _forwarding_problems(conf: NetConf) -> List[str]:
    problems = []
    for family in conf.routed_families():
        value = sysctl.read(sysctl.FORWARDING[family])
        if value != "1":
            problems.append(f"{sysctl.FORWARDING[family].replace('/', '.')} is {value}, expected 1")
    return problems


def _nat_problems(backend: NatBackend, conf: NetConf, rules: List[Rule]) -> List[str]:
    installed = backend.installed(list(conf.routed_families()))
    if installed is None:
        return ["NAT table egress_cni missing"]
    # Sets: a config may hold thousands of destinations, and CHECK must stay linear.
    wanted, present = set(rules), set(installed)
    missing = [r for r in rules if r not in present]
    unexpected = [r for r in installed if r not in wanted]
    if not missing and not unexpected and installed == rules:
        return []
    detail = []
    if missing:
        detail.append("missing " + ", ".join(spell(backend.name, r) for r in missing))
    if unexpected:
        detail.append(
            "unexpected " + ", ".join(r if isinstance(r, str) else spell(backend.name, r) for r in unexpected)
        )
    if not detail:
        detail.append("rules are out of order")
    return ["NAT rules differ: " + "; ".join(detail)]
