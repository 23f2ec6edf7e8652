"""The NAT rules of a router, as data (pure): one DNAT per destination, one SNAT per family."""

from __future__ import annotations

from ..config import ASCII_ALNUM, NetConf
from ..errors import InvalidConfig
from ..record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Optional, Union

    from ..config import IPAddress

# Interface names end up inside rule text; the kernel allows almost any byte,
# a rule language does not. Runtimes use names like eth0, net1, eth1. The whole
# name is checked: the former regex's `$` also let a trailing newline through.
_RULE_IFNAME_CHARS = ASCII_ALNUM | frozenset("_.-@+")


# Record (a NamedTuple to mypy), not @dataclass: dataclasses imports inspect, ~12 ms of every plugin exec.
class DnatRule(Record):
    """Traffic arriving on in_iface [PROTO dport PORT] is sent to to_addr[:to_port]."""

    family: int
    in_iface: str
    to_addr: IPAddress
    protocol: Optional[str] = None
    port: Optional[int] = None
    to_port: Optional[int] = None


class SnatRule(Record):
    """Traffic leaving out_iface gets the reserved source address."""

    family: int
    out_iface: str
    to_addr: IPAddress


if TYPE_CHECKING:
    Rule = Union[DnatRule, SnatRule]


def check_ifname_for_rules(name: str, what: str) -> str:
    """name when it can be written into a rule; raise InvalidConfig (naming what) otherwise."""
    if not (1 <= len(name) <= 15 and all(c in _RULE_IFNAME_CHARS for c in name)):
        raise InvalidConfig(
            f"unsupported {what}", f"{name!r}: NAT rules need names made of letters, digits and _ . - @ +"
        )
    return name


def build_rules(conf: NetConf, ifname: str) -> List[Rule]:
    """DNAT rules in destination order (first match wins), then the SNAT rule, for each family."""
    pod_if = check_ifname_for_rules(conf.pod_interface, "podInterface")
    router_if = check_ifname_for_rules(ifname, "interface name")
    rules: List[Rule] = []
    for family in conf.routed_families():
        source = conf.address_for(family)
        assert source is not None
        for d in conf.destinations:
            if d.version == family:
                rules.append(
                    DnatRule(
                        family=family,
                        in_iface=pod_if,
                        to_addr=d.address,
                        protocol=d.protocol,
                        port=d.port,
                        to_port=d.target_port,
                    )
                )
        rules.append(SnatRule(family=family, out_iface=router_if, to_addr=source.ip))
    return rules


def iptables_spelling(rule: Rule) -> str:
    """The upstream plugin's log spelling of a rule, as in the product page's log."""
    cmd = "iptables" if rule.family == 4 else "ip6tables"
    if isinstance(rule, SnatRule):
        return f"{cmd} -t nat -o {rule.out_iface} -j SNAT --to-source {rule.to_addr}"
    match = f" -p {rule.protocol.upper()} --dport {rule.port}" if rule.protocol else ""
    return f"{cmd} -t nat PREROUTING -i {rule.in_iface}{match} -j DNAT --to-destination {_target(rule)}"


def _target(rule: DnatRule) -> str:
    if rule.to_port is None:
        return str(rule.to_addr)
    if rule.family == 6:
        return f"[{rule.to_addr}]:{rule.to_port}"
    return f"{rule.to_addr}:{rule.to_port}"


def dnat_target(rule: DnatRule) -> str:
    """The DNAT destination as both backends spell it: ADDR, ADDR:PORT or [ADDR6]:PORT."""
    return _target(rule)
