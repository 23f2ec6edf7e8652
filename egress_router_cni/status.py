"""GC and STATUS: the two commands that concern no pod (SPEC 1.1)."""

from __future__ import annotations

from .cmdargs import CmdArgs
from .config import parse_netconf
from .errors import InvalidConfig, NotAvailable
from .invocation import master_of
from .netlink import Netlink
from .policy import node_policy
from .state import Backend


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
    problem = node_policy().problem
    if problem:
        raise NotAvailable("the node policy file is refused: every ADD fails", problem)
    try:
        with Netlink() as host:
            master_of(host, conf)
    except InvalidConfig as e:
        raise NotAvailable("egress router cannot be set up on this node", str(e)) from None
    from .nat.nftables import nftables_present

    # Presence only: STATUS runs in the node's namespace, whose ruleset is not ours to touch.
    if conf.nat_backend == Backend.NFTABLES and not nftables_present():
        raise NotAvailable("nftables is not available", "the kernel does not answer nf_tables requests")
    if conf.nat_backend == Backend.IPTABLES or (conf.nat_backend == "auto" and not nftables_present()):
        from .nat.iptables import load_iptc

        try:
            load_iptc()
        except NotAvailable as e:
            if conf.nat_backend == Backend.IPTABLES:
                raise
            from .nat import no_backend

            raise no_backend("the kernel does not answer nf_tables requests", e.details) from None
