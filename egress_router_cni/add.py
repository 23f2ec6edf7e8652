"""ADD: create the router interface, take over the default route, install the NAT rules.

Each step is logged as on the product page. A failure anywhere rolls back
through teardown(), which works from kernel state: the pod is left as it was.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from . import sysctl
from .cmdargs import CmdArgs
from .config import NetConf, parse_netconf
from .errors import InterfaceExists, NatError
from .invocation import logged, master_of, open_log
from .link import LinkInfo, create_macvlan, find_owned_links, get_link, rename_link, set_up
from .log import PluginLog
from .nat import NatBackend, get_backend
from .nat.rules import Rule, build_rules
from .netlink import Netlink
from .netns import NetNS
from .policy import node_policy
from .result import Result, chained_result, router_result
from .route import (
    add_address,
    add_default_route,
    add_host_route,
    save_and_remove_default_routes,
    saved_table,
    wait_for_dad,
)
from .state import FAMILIES, RouterState, encode_alias, encode_note, owner_id
from .teardown import teardown

# Test seam for fault injection: called as hook(phase, step) with phase
# "before"/"after" around every ADD step; an exception it raises is a failure
# of that step. Only reachable by calling cmd_add in-process.
StepHook = Callable[[str, str], None]


def cmd_add(args: CmdArgs, hook: Optional[StepHook] = None) -> Result:
    """Set up the router in args.netns as args.config says, or leave the pod as it was and raise CniError."""
    conf = parse_netconf(args.config)
    log = open_log(conf, args)
    result: Result = logged("ADD", log, lambda: _add(args, conf, log, hook))
    return result


def _add(args: CmdArgs, conf: NetConf, log: PluginLog, hook: Optional[StepHook]) -> Result:
    log.debug("Called CNI ADD")
    log.debug(f"Container ID: {args.container_id} Netns: {args.netns} Interface: {args.ifname}")
    pod_name = args.args.get("K8S_POD_NAME")
    if pod_name:
        # Lets `egress-router inspect --all` name the pod of each router on the node.
        log.debug(f"Pod: {args.args.get('K8S_POD_NAMESPACE', '')}/{pod_name}")
    log.debug(f"Gateway: {', '.join(str(g) for g in conf.gateways)}")
    log.debug(f"IP Source Addresses: [{' '.join(str(a) for a in conf.addresses)}]")
    log.debug(f"IP Destinations: [{' '.join(d.describe() for d in conf.destinations)}]")
    # The result's shape is settled before the first change: a bad prevResult fails with the pod untouched.
    prev = chained_result(conf.prev_result, conf.cni_version, args.netns)
    router_result(conf, args.ifname, args.netns, "", prev).to_dict(conf.cni_version)
    rules = build_rules(conf, args.ifname)
    families = list(conf.routed_families())
    owner = owner_id(args.container_id)
    with NetNS(args.netns) as ns, Netlink() as host:
        master = master_of(host, conf)
        # The node's root has the last word, before anything changes (issue 13).
        node_policy().enforce(conf, master.name)
        ns.enter()
        # Chosen inside the pod: "auto" asks whether nf_tables works *there*.
        backend = get_backend(conf.nat_backend)
        with Netlink() as pod:
            _preflight(pod, backend, args.ifname, owner)
            forwarding = {f: sysctl.read(sysctl.FORWARDING[f]) for f in families}
            try:
                link = _configure(args, conf, log, hook, host, pod, ns, master, rules, backend, forwarding)
            except BaseException:
                log.error("ADD failed: rolling back")
                teardown(pod, [backend], owner, log, forwarding)
                raise
    return router_result(conf, args.ifname, args.netns, link.mac, prev)


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
    if backend.list(list(FAMILIES)) is not None:
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
    forwarding: Dict[int, str],
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
    # The log path actually used: inspect (and DEL) find this router's lines without being told.
    state = RouterState(
        owner=owner, forwarding=forwarding, nat=backend.name, log_file=log.path if log.fd is not None else None
    )
    alias = encode_alias(state)
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

    probed = [a.ip for a in conf.addresses if a.version == 4]
    if probed and node_policy().conflict_detection(conf):

        def conflict_probe() -> None:
            from .arp_probe import probe_new_link  # AF_PACKET code only when asked for

            probe_new_link(pod, link, probed, conf.conflict_window_ms)
            log.debug(f"Probed {', '.join(map(str, probed))} on {ifname} for {conf.conflict_window_ms} ms: free")

        step("conflict-probe", conflict_probe)

    def addresses() -> None:
        for address in conf.addresses:
            add_address(pod, link.index, address)
            log.debug(f"Added address {address} to {ifname}")

    step("addresses", addresses)
    step("link-up", lambda: set_up(pod, link))
    if 6 in conf.families():
        step("dad", lambda: wait_for_dad(pod, link.index))
    for address in conf.addresses:
        # arp_notify sends the gratuitous ARP as the link comes up; ndisc_notify
        # the unsolicited NA once DAD has finished (which we just waited for).
        log.debug(f"Announced {address.ip} on {ifname} (gratuitous {'ARP' if address.version == 4 else 'NA'})")

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
            if forwarding[family] != "1":
                # Only on change: writing ip_forward resets every per-interface forwarding flag.
                sysctl.write(key, "1")
            log.debug(f"Enabled IP forwarding ({key.replace('/', '.')}=1)")

    step("forwarding", enable_forwarding)

    # arp_notify=1 (set before link-up) makes the kernel announce the address.
    # A second, explicit gratuitous ARP from an AF_PACKET socket cost an RCU
    # grace period on close (15-28 ms per ADD on a 2-vCPU VM).

    def nat() -> None:
        backend.install(rules, list(conf.routed_families()), encode_note(state))
        for rule in rules:
            log.debug(backend.describe(rule))

    step("nat", nat)
    log.verbose(f"CNI ADD done: {ifname} {' '.join(str(a) for a in conf.addresses)}")
    return link
