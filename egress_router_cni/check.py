"""CHECK: compare a router with what ADD sets up, and name every difference."""

from __future__ import annotations

from typing import List, Optional

from . import sysctl
from .cmdargs import CmdArgs
from .config import MACVLAN_MODES, NetConf, parse_netconf
from .errors import CheckFailed, InvalidConfig
from .invocation import logged, master_of, open_log
from .link import LinkInfo, get_link
from .log import PluginLog
from .nat import NatBackend, recorded_backend
from .nat.rules import Rule, build_rules
from .netlink import Netlink
from .netns import NetNS
from .policy import node_policy
from .result import parse_result
from .route import MAIN_TABLE, addresses_of, list_routes
from .state import owner_id


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
            backend = recorded_backend(link.state() if link else None, conf.nat_backend)
            problems = verify(pod, backend, conf, args.ifname, args.container_id, master, rules, iface.mac)
            problems += node_policy().violations(conf, master.name)
    if problems:
        raise CheckFailed("egress router check failed", "; ".join(problems))
    log.debug("CHECK passed")


def verify(
    pod: Netlink,
    backend: NatBackend,
    conf: NetConf,
    ifname: str,
    container_id: Optional[str],
    master: Optional[LinkInfo],
    rules: List[Rule],
    mac: str = "",
) -> List[str]:
    """Compare the pod's state with what ADD sets up; return the differences in words."""
    link = get_link(pod, ifname)
    if link is None:
        return [f"interface {ifname!r} not found in the pod"]
    problems = []
    state = link.state()
    if link.kind != "macvlan":
        problems.append(f"{ifname!r} is a {link.kind or 'plain'} link, not a macvlan")
    if state is None or (container_id is not None and state.owner != owner_id(container_id)):
        problems.append(f"{ifname!r} was not created by egress-router for this container")
    if link.macvlan_mode != MACVLAN_MODES[conf.mode]:
        problems.append(f"{ifname!r} macvlan mode is {link.macvlan_mode}, expected {conf.mode}")
    if master is not None and link.parent_index != master.index:
        problems.append(f"{ifname!r} is not attached to master {master.name!r}")
    if mac and link.mac.lower() != mac.lower():
        problems.append(f"{ifname!r} MAC is {link.mac}, prevResult says {mac}")
    if not link.up:
        problems.append(f"{ifname!r} is down")
    present = addresses_of(pod, link.index)
    for address in conf.addresses:
        if str(address) not in present:
            problems.append(f"address {address} missing on {ifname!r}")
    for gateway in conf.gateways:
        routes = list_routes(pod, gateway.version, MAIN_TABLE)
        host_dst = f"{gateway}/{32 if gateway.version == 4 else 128}"
        if not any(r.dst == host_dst and r.oif == link.index for r in routes):
            problems.append(f"route to gateway {gateway} on {ifname!r} missing")
        defaults = [r for r in routes if r.dst is None]
        if not any(r.gateway == str(gateway) and r.oif == link.index for r in defaults):
            problems.append(f"default route via {gateway} dev {ifname} missing")
        if any(r.oif != link.index for r in defaults):
            problems.append(f"another IPv{gateway.version} default route competes with the router's")
    for family in conf.routed_families():
        value = sysctl.read(sysctl.FORWARDING[family])
        if value != "1":
            problems.append(f"{sysctl.FORWARDING[family].replace('/', '.')} is {value}, expected 1")
    installed = backend.list(list(conf.routed_families()))
    if installed is None:
        problems.append("NAT table egress_cni missing")
    else:
        # Sets: a config may hold thousands of destinations, and CHECK must stay linear.
        wanted, present_rules = set(rules), set(installed)
        missing = [r for r in rules if r not in present_rules]
        unexpected = [r for r in installed if r not in wanted]
        if missing or unexpected or installed != rules:
            describe = backend.describe
            detail = []
            if missing:
                detail.append("missing " + ", ".join(describe(r).split(": ", 1)[1] for r in missing))
            if unexpected:
                detail.append(
                    "unexpected "
                    + ", ".join(r if isinstance(r, str) else describe(r).split(": ", 1)[1] for r in unexpected)
                )
            if not detail:
                detail.append("rules are out of order")
            problems.append("NAT rules differ: " + "; ".join(detail))
    return problems
