"""ADD, DEL, CHECK, GC and STATUS: the steps of an egress router, composed.

Every change ADD makes is either undone on failure or recoverable from the
pod's kernel state (the link's alias, the saved-routes table, the NAT table),
so DEL can finish the job after a crash and rollback and DEL share one path.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Optional

from . import sysctl
from .config import NetConf, parse_netconf
from .errors import CheckFailed, CniError, InterfaceExists, InvalidConfig, NatError, NotAvailable
from .link import (
    ALIAS_PREFIX,
    MACVLAN_MODES,
    LinkInfo,
    create_macvlan,
    delete_link,
    find_owned_links,
    get_link,
    owner_id,
    rename_link,
    resolve_master,
    set_up,
)
from .log import PluginLog
from .nat import NatBackend, get_backend, release_contexts
from .nat.rules import Rule, build_rules
from .netlink import Netlink
from .netns import NetNS, open_optional
from .protocol import CmdArgs
from .result import Interface, IPConfig, Result, Route, parse_result
from .route import (
    add_address,
    add_default_route,
    add_host_route,
    addresses_of,
    default_routes,
    list_routes,
    restore_default_routes,
    save_and_remove_default_routes,
    saved_table,
    wait_for_dad,
)

# Test seam for fault injection: called as hook(phase, step) with phase
# "before"/"after" around every ADD step; an exception it raises is a failure
# of that step. Only reachable by calling cmd_add in-process.
StepHook = Callable[[str, str], None]
ALL_FAMILIES = (4, 6)
_DEFAULT_ROUTE = {4: "0.0.0.0/0", 6: "::/0"}


def _open_log(conf: Optional[NetConf], args: CmdArgs) -> PluginLog:
    context = {"command": args.command, "container_id": args.container_id, "ifname": args.ifname}
    if conf is None:
        return PluginLog(context=context)
    return PluginLog(conf.log_file, conf.log_level, conf.log_format, context)


def _logged(command: str, log: PluginLog, fn: Callable[[], Any]) -> Any:
    """Run fn; log its failure (traceback for unexpected ones) before the protocol layer reports it."""
    try:
        return fn()
    except CniError as e:
        log.error(f"CNI {command} failed: {e}")
        raise
    except Exception:
        import traceback

        log.error(f"CNI {command} failed with an internal error: {traceback.format_exc()}")
        raise
    finally:
        release_contexts()
        log.close()


def _node_default_ifindex(host: Netlink) -> Optional[int]:
    for version in ALL_FAMILIES:
        for route in default_routes(host, version):
            if route.oif:
                return route.oif
    return None


def _master(host: Netlink, conf: NetConf) -> LinkInfo:
    master = resolve_master(host, conf.master, None if conf.master else _node_default_ifindex(host))
    if conf.mtu and conf.mtu > master.mtu:
        raise InvalidConfig(
            "invalid interfaceArgs.mtu", f"{conf.mtu} exceeds the MTU {master.mtu} of master {master.name!r}"
        )
    return master


# --- ADD ---------------------------------------------------------------------------------------


def cmd_add(args: CmdArgs, hook: Optional[StepHook] = None) -> Dict[str, Any]:
    conf = parse_netconf(args.config)
    log = _open_log(conf, args)
    result: Dict[str, Any] = _logged("ADD", log, lambda: _add(args, conf, log, hook))
    return result


def _add(args: CmdArgs, conf: NetConf, log: PluginLog, hook: Optional[StepHook]) -> Dict[str, Any]:
    log.debug("Called CNI ADD")
    log.debug(f"Container ID: {args.container_id} Netns: {args.netns} Interface: {args.ifname}")
    log.debug(f"Gateway: {', '.join(str(g) for g in conf.gateways)}")
    log.debug(f"IP Source Addresses: [{' '.join(str(a) for a in conf.addresses)}]")
    log.debug(f"IP Destinations: [{' '.join(d.describe() for d in conf.destinations)}]")
    rules = build_rules(conf, args.ifname)
    families = list(conf.routed_families())
    owner = owner_id(args.container_id)
    with NetNS(args.netns) as ns, Netlink() as host:
        master = _master(host, conf)
        ns.enter()
        # Chosen inside the pod: "auto" asks whether nf_tables works *there*.
        backend = get_backend(conf.nat_backend)
        with Netlink() as pod:
            _preflight(pod, backend, args.ifname, owner)
            forwarding = {str(f): sysctl.read(sysctl.FORWARDING[f]) for f in families}
            try:
                link = _configure(args, conf, log, hook, host, pod, ns, master, rules, backend, forwarding)
            except BaseException:
                log.error("ADD failed: rolling back")
                _teardown(pod, [backend], owner, log, forwarding)
                raise
    return _result(args, conf, link).to_dict(conf.cni_version)


def _preflight(pod: Netlink, backend: NatBackend, ifname: str, owner: str) -> None:
    """Refuse before changing anything: the spec forbids adopting an existing interface."""
    if get_link(pod, ifname) is not None:
        raise InterfaceExists(
            f"interface {ifname!r} already exists in the pod",
            "the runtime asked for a name that is taken; the existing interface was left untouched",
        )
    if find_owned_links(pod, owner):
        raise InterfaceExists(
            "this container already has an egress-router interface",
            "a previous ADD was not deleted: run DEL first",
        )
    if backend.list(list(ALL_FAMILIES)) is not None:
        raise NatError(
            "the pod already has egress-router NAT rules",
            "table egress_cni exists: another egress router is attached to this pod, or a previous one was "
            "not deleted (run DEL first)",
        )


def _configure(
    args: CmdArgs,
    conf: NetConf,
    log: PluginLog,
    hook: Optional[StepHook],
    host: Netlink,
    pod: Netlink,
    ns: NetNS,
    master: LinkInfo,
    rules: List[Rule],
    backend: NatBackend,
    forwarding: Dict[str, str],
) -> LinkInfo:
    def step(name: str, fn: Callable[[], Any]) -> Any:
        if hook:
            hook("before", name)
        value = fn()
        if hook:
            hook("after", name)
        return value

    ifname = args.ifname
    owner = owner_id(args.container_id)
    state = {"owner": owner, "forwarding": forwarding, "nat": backend.name}
    alias = ALIAS_PREFIX + json.dumps(state, separators=(",", ":"))
    link: LinkInfo = step("create-macvlan", lambda: create_macvlan(host, pod, master, ns.fd, conf.mode, conf.mtu))
    log.debug("Created macvlan interface")
    link = step("rename", lambda: rename_link(pod, link, ifname, alias))
    log.debug(f'Renamed macvlan to "{ifname}"')

    def link_sysctls() -> None:
        for family in conf.families():
            if family == 4:
                # proxy_arp as upstream; arp_notify: the kernel announces the address when the link comes up.
                sysctl.write(sysctl.link_key(4, ifname, "proxy_arp"), "1")
                sysctl.write(sysctl.link_key(4, ifname, "arp_notify"), "1")
            else:
                sysctl.write(sysctl.link_key(6, ifname, "disable_ipv6"), "0")
                sysctl.write(sysctl.link_key(6, ifname, "ndisc_notify"), "1")

    step("link-sysctls", link_sysctls)

    def addresses() -> None:
        for address in conf.addresses:
            add_address(pod, link.index, address)
            log.debug(f"Added address {address} to {ifname}")

    step("addresses", addresses)
    step("link-up", lambda: set_up(pod, link))
    for address in conf.addresses:
        # arp_notify / ndisc_notify make the kernel send the gratuitous ARP / unsolicited NA now.
        log.debug(f"Announced {address.ip} on {ifname} (gratuitous {'ARP' if address.version == 4 else 'NA'})")
    if 6 in conf.families():
        step("dad", lambda: wait_for_dad(pod, link.index))

    def gateway_routes() -> None:
        for gateway in conf.gateways:
            log.debug(f"Adding route to gateway {gateway} on macvlan interface")
            add_host_route(pod, gateway, link.index)

    step("gateway-route", gateway_routes)

    def default_route() -> None:
        for gateway in conf.gateways:
            for old in save_and_remove_default_routes(pod, gateway.version, saved_table(owner)):
                log.debug(f"deleted default route {old.go_string()}")
            add_default_route(pod, gateway, link.index)
            log.debug(f"Added new default route with gateway {gateway}")

    step("default-route", default_route)
    for family in conf.families():
        if family not in conf.routed_families():
            log.debug(f"No IPv{family} gateway: the pod keeps its IPv{family} default route; no IPv{family} NAT")

    def enable_forwarding() -> None:
        for family in conf.routed_families():
            key = sysctl.FORWARDING[family]
            if forwarding[str(family)] != "1":
                # Only on change: writing ip_forward resets every per-interface forwarding flag.
                sysctl.write(key, "1")
            log.debug(f"Enabled IP forwarding ({key.replace('/', '.')}=1)")

    step("forwarding", enable_forwarding)

    # arp_notify=1 (set before link-up) makes the kernel announce the address.
    # A second, explicit gratuitous ARP from an AF_PACKET socket cost an RCU
    # grace period on close (15-28 ms per ADD on a 2-vCPU VM).

    def nat() -> None:
        backend.install(rules, list(conf.routed_families()), _note(state))
        for rule in rules:
            log.debug(backend.describe(rule))

    step("nat", nat)
    log.verbose(f"CNI ADD done: {ifname} {' '.join(str(a) for a in conf.addresses)}")
    return link


def _result(args: CmdArgs, conf: NetConf, link: LinkInfo) -> Result:
    result = Result(dns=conf.dns)
    if conf.prev_result:
        # Chained after another plugin: keep what it reported, append ours.
        prev = parse_result(conf.prev_result, conf.cni_version)
        result.interfaces.extend(prev.interfaces)
        result.ips.extend(prev.ips)
        result.routes.extend(r for r in prev.routes if r.dst not in _DEFAULT_ROUTE.values())
        result.dns = conf.dns or prev.dns
    index = len(result.interfaces)
    result.interfaces.append(Interface(name=args.ifname, mac=link.mac, sandbox=args.netns))
    for address in conf.addresses:
        gateway = conf.gateway_for(address.version)
        result.ips.append(IPConfig(address=str(address), gateway=str(gateway) if gateway else "", interface=index))
    for gateway in conf.gateways:
        result.routes.append(Route(dst=_DEFAULT_ROUTE[gateway.version], gw=str(gateway)))
    return result


def _note(state: Dict[str, Any]) -> str:
    """The state record in the NAT table's comment: 'egress-router owner=ID fwd4=0 fwd6=1'."""
    fields = [f"owner={state['owner']}"] + [f"fwd{k}={v}" for k, v in sorted(state["forwarding"].items())]
    fields.append(f"nat={state['nat']}")
    return "egress-router " + " ".join(fields)


def _parse_note(note: Optional[str]) -> Dict[str, Any]:
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


# --- DEL and rollback -------------------------------------------------------------------------


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


def _teardown(
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
    notes = {backend.name: _parse_note(backend.note(list(ALL_FAMILIES))) for backend in backends}
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
    log = _open_log(conf, args)
    _logged("DEL", log, lambda: _del(args, conf, log, problem))


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
            _teardown(pod, backends, owner, log)
    log.verbose("CNI DEL done")


# --- CHECK ------------------------------------------------------------------------------------


def cmd_check(args: CmdArgs) -> None:
    conf = parse_netconf(args.config)
    log = _open_log(conf, args)
    _logged("CHECK", log, lambda: _check(args, conf, log))


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
        master = _master(host, conf)
        ns.enter()
        with Netlink() as pod:
            link = get_link(pod, args.ifname)
            recorded = ((link.owner_state() if link else None) or {}).get("nat")
            backend = get_backend(recorded if recorded in ("nftables", "iptables") else conf.nat_backend)
            problems = verify(pod, backend, conf, args.ifname, args.container_id, master, rules, iface.mac)
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
    state = link.owner_state()
    if link.kind != "macvlan":
        problems.append(f"{ifname!r} is a {link.kind or 'plain'} link, not a macvlan")
    if state is None or (container_id is not None and state.get("owner") != owner_id(container_id)):
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
        routes = list_routes(pod, gateway.version, 254)
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
        missing = [r for r in rules if r not in installed]
        unexpected = [r for r in installed if r not in rules]
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


# --- GC and STATUS ----------------------------------------------------------------------------


def cmd_gc(args: CmdArgs) -> None:
    """Everything ADD creates lives in the pod's namespace and goes with it: only validate."""
    for key in ("cni.dev/valid-attachments", "cni.dev/attachments"):
        value = args.config.get(key)
        if value is None:
            continue
        if not isinstance(value, list) or not all(
            isinstance(a, dict) and isinstance(a.get("containerID"), str) and isinstance(a.get("ifname"), str)
            for a in value
        ):
            raise InvalidConfig(f"invalid {key}", 'expected a list of {"containerID": "...", "ifname": "..."}')


def cmd_status(args: CmdArgs) -> None:
    """Ready when the config is valid, the master resolves and the NAT backend can be loaded."""
    conf = parse_netconf(args.config)
    try:
        with Netlink() as host:
            _master(host, conf)
    except InvalidConfig as e:
        raise NotAvailable("egress router cannot be set up on this node", str(e)) from None
    from .nat.nftables import nftables_present

    # Presence only: STATUS runs in the node's namespace, whose ruleset is not ours to touch.
    if conf.nat_backend == "nftables" and not nftables_present():
        raise NotAvailable("nftables is not available", "neither libnftables.so.1 nor the nft tool was found")
    if conf.nat_backend == "iptables" or (conf.nat_backend == "auto" and not nftables_present()):
        from .nat.iptables import load_iptc

        load_iptc()


HANDLERS: Dict[str, Callable[[CmdArgs], Optional[Dict[str, Any]]]] = {
    "ADD": cmd_add,
    "DEL": cmd_del,
    "CHECK": cmd_check,
    "GC": cmd_gc,
    "STATUS": cmd_status,
}
