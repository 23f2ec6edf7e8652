"""ADD: create the router interface, take over the default route, install the NAT rules.

ADD is the ordered list STEPS below: each step does one job on an AddContext
and logs it as on the product page. A failure anywhere rolls back through
teardown(), which works from kernel state: the pod is left as it was.
"""

from __future__ import annotations

from . import sysctl
from .cmdargs import CmdArgs
from .config import NetConf, parse_netconf
from .errors import InterfaceExists, NatError
from .invocation import logged, master_of, open_log
from .link import LinkInfo, create_macvlan, find_owned_links, get_link, rename_link, set_up
from .log import PluginLog
from .nat import NatBackend, get_backend, spell
from .nat.rules import build_rules
from .netlink import Netlink
from .netns import NetNS
from .policy import node_policy
from .record import Record
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

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, List, Optional

    from .nat.rules import Rule

    # Test seam for fault injection: called as hook(phase, step) with phase
    # "before"/"after" around every step of STEPS; an exception it raises is a
    # failure of that step. Only reachable by calling cmd_add in-process.
    StepHook = Callable[[str, str], None]


class Kernel(Record):
    """The kernel handles one ADD works with."""

    host: Netlink  # the node's namespace, where the macvlan is created
    pod: Netlink
    ns: NetNS  # the pod's namespace (its fd moves the macvlan there)
    master: LinkInfo
    backend: NatBackend


class AddContext:
    """What the steps of one ADD share: the request, the kernel handles, the state record, the link."""

    __slots__ = ("_link", "backend", "conf", "host", "ifname", "log", "master", "ns", "pod", "rules", "state")

    def __init__(self, args: CmdArgs, conf: NetConf, log: PluginLog, rules: List[Rule], kernel: Kernel) -> None:
        self.ifname = args.ifname
        self.conf = conf
        self.log = log
        self.rules = rules
        self.host, self.pod, self.ns, self.master, self.backend = kernel
        # The log path actually used: inspect (and DEL) find this router's lines without being told.
        log_file = log.path if log.fd is not None else None
        self.state = RouterState(owner_id(args.container_id), {}, kernel.backend.name, log_file)
        self._link: Optional[LinkInfo] = None

    @property
    def link(self) -> LinkInfo:
        """The router link (set by the create-macvlan step, refreshed by rename)."""
        if self._link is None:
            raise RuntimeError("the router link does not exist yet")
        return self._link

    @link.setter
    def link(self, value: LinkInfo) -> None:
        self._link = value


class Step(Record):
    """One named step of ADD: the name is what the fault-injection hook and the reliability tests see."""

    name: str
    run: Callable[[AddContext], None]


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
    with NetNS(args.netns) as ns, Netlink() as host:
        master = master_of(host, conf)
        # The node's root has the last word, before anything changes (issue 13).
        node_policy().enforce(conf, master.name)
        ns.enter()
        # Chosen inside the pod: "auto" asks whether nf_tables works *there*.
        with get_backend(conf.nat_backend) as backend, Netlink() as pod:
            ctx = AddContext(args, conf, log, rules, Kernel(host, pod, ns, master, backend))
            _preflight(pod, backend, args.ifname, ctx.state.owner)
            forwarding = {f: sysctl.read(sysctl.FORWARDING[f]) for f in conf.routed_families()}
            ctx.state = ctx.state._replace(forwarding=forwarding)
            try:
                run_steps(ctx, hook)
            except BaseException:
                log.error("ADD failed: rolling back")
                # Imported here: the rollback (and the link deletion it may fork for) is off a good ADD's path.
                from .teardown import teardown

                teardown(pod, [backend], ctx.state.owner, log, forwarding)
                raise
    log.verbose(f"CNI ADD done: {args.ifname} {' '.join(str(a) for a in conf.addresses)}")
    return router_result(conf, args.ifname, args.netns, ctx.link.mac, prev)


def run_steps(ctx: AddContext, hook: Optional[StepHook] = None) -> None:
    """Run STEPS in order, calling hook before and after each; the first exception stops ADD."""
    for step in STEPS:
        if hook:
            hook("before", step.name)
        step.run(ctx)
        # A step's lines reach the file when it ends: a killed ADD leaves the record of the steps it completed.
        ctx.log.flush()
        if hook:
            hook("after", step.name)


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
    if backend.installed(list(FAMILIES)) is not None:
        raise NatError(
            "the pod already has egress-router NAT rules",
            "table egress_cni exists: another egress router is attached to this pod, or a previous one was "
            "not deleted (run DEL first)",
        )


def create_link(ctx: AddContext) -> None:
    """A macvlan on the master, created directly in the pod under a temporary name."""
    ctx.link = create_macvlan(ctx.host, ctx.pod, ctx.master, ctx.ns.fd, ctx.conf.mode, ctx.conf.mtu)
    ctx.log.debug("Created macvlan interface")


def rename(ctx: AddContext) -> None:
    """The final name, and the state record in the alias, in one request."""
    ctx.link = rename_link(ctx.pod, ctx.link, ctx.ifname, encode_alias(ctx.state))
    ctx.log.debug(f'Renamed macvlan to "{ctx.ifname}"')


def link_sysctls(ctx: AddContext) -> None:
    """Per-link sysctls, set while the link is down so they apply from its first packet."""
    for family in ctx.conf.families():
        if family == 4:
            # proxy_arp as upstream; arp_notify: the kernel announces the address when the link comes up.
            sysctl.write(sysctl.link_key(4, ctx.ifname, "proxy_arp"), "1")
            sysctl.write(sysctl.link_key(4, ctx.ifname, "arp_notify"), "1")
        else:
            sysctl.write(sysctl.link_key(6, ctx.ifname, "disable_ipv6"), "0")
            sysctl.write(sysctl.link_key(6, ctx.ifname, "ndisc_notify"), "1")


def conflict_probe(ctx: AddContext) -> None:
    """When the node policy asks for it: RFC 5227 ARP probes for the IPv4 addresses, before any is added."""
    probed = [a.ip for a in ctx.conf.addresses if a.version == 4]
    if not probed or not node_policy().conflict_detection(ctx.conf):
        return
    from .arp_probe import probe_new_link  # AF_PACKET code only when asked for

    probe_new_link(ctx.pod, ctx.link, probed, ctx.conf.conflict_window_ms)
    ctx.log.debug(f"Probed {', '.join(map(str, probed))} on {ctx.ifname} for {ctx.conf.conflict_window_ms} ms: free")


def addresses(ctx: AddContext) -> None:
    """The reserved addresses on the link."""
    for address in ctx.conf.addresses:
        add_address(ctx.pod, ctx.link.index, address)
        ctx.log.debug(f"Added address {address} to {ctx.ifname}")


def link_up(ctx: AddContext) -> None:
    """Bring the link up (arp_notify sends the gratuitous ARP now)."""
    set_up(ctx.pod, ctx.link)


def announce(ctx: AddContext) -> None:
    """Wait for IPv6 duplicate address detection; log the announcements the kernel makes."""
    if 6 in ctx.conf.families():
        wait_for_dad(ctx.pod, ctx.link.index)
    for address in ctx.conf.addresses:
        # arp_notify sends the gratuitous ARP as the link comes up; ndisc_notify
        # the unsolicited NA once DAD has finished (which we just waited for).
        kind = "ARP" if address.version == 4 else "NA"
        ctx.log.debug(f"Announced {address.ip} on {ctx.ifname} (gratuitous {kind})")


def gateway_route(ctx: AddContext) -> None:
    """A host route to each gateway through the link."""
    for gateway in ctx.conf.gateways:
        ctx.log.debug(f"Adding route to gateway {gateway} on macvlan interface")
        add_host_route(ctx.pod, gateway, ctx.link.index)


def default_route(ctx: AddContext) -> None:
    """Move the pod's default routes aside (to the owner's saved table) and route through the gateway."""
    for gateway in ctx.conf.gateways:
        for old in save_and_remove_default_routes(ctx.pod, gateway.version, saved_table(ctx.state.owner)):
            ctx.log.debug(f"deleted default route {old.go_string()}")
        add_default_route(ctx.pod, gateway, ctx.link.index)
        ctx.log.debug(f"Added new default route with gateway {gateway}")
    for family in ctx.conf.families():
        if family not in ctx.conf.routed_families():
            ctx.log.debug(f"No IPv{family} gateway: the pod keeps its IPv{family} default route; no IPv{family} NAT")


def forwarding(ctx: AddContext) -> None:
    """IP forwarding on for each routed family (the original value is in the state record)."""
    for family in ctx.conf.routed_families():
        key = sysctl.FORWARDING[family]
        if ctx.state.forwarding[family] != "1":
            # Only on change: writing ip_forward resets every per-interface forwarding flag.
            sysctl.write(key, "1")
        ctx.log.debug(f"Enabled IP forwarding ({key.replace('/', '.')}=1)")


def nat(ctx: AddContext) -> None:
    """The DNAT/SNAT rules, in one transaction, with the state record as their note."""
    ctx.backend.install(ctx.rules, list(ctx.conf.routed_families()), encode_note(ctx.state))
    for rule in ctx.rules:
        ctx.log.debug(f"Added {ctx.backend.name} rule: {spell(ctx.backend.name, rule)}")


# ADD, in order. arp_notify=1 (set before link-up) makes the kernel announce the
# address: a second, explicit gratuitous ARP from an AF_PACKET socket cost an
# RCU grace period on close (15-28 ms per ADD on a 2-vCPU VM).
STEPS = (
    Step("create-macvlan", create_link),
    Step("rename", rename),
    Step("link-sysctls", link_sysctls),
    Step("conflict-probe", conflict_probe),
    Step("addresses", addresses),
    Step("link-up", link_up),
    Step("dad", announce),
    Step("gateway-route", gateway_route),
    Step("default-route", default_route),
    Step("forwarding", forwarding),
    Step("nat", nat),
)
