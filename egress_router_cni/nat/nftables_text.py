"""Render the rules as one nftables batch (pure), in a table the plugin owns."""

from __future__ import annotations

from .rules import DnatRule, SnatRule, dnat_target

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List

    from .rules import Rule

TABLE = "egress_cni"  # the upstream plugin's table name, familiar to operators
FAMILIES: Dict[int, str] = {4: "ip", 6: "ip6"}


def rule_text(rule: Rule) -> str:
    """One rule in nft syntax, e.g. 'iifname "eth0" tcp dport 8080 dnat to 203.0.113.26:80'."""
    if isinstance(rule, SnatRule):
        return f'oifname "{rule.out_iface}" snat to {rule.to_addr}'
    match = f" {rule.protocol} dport {rule.port}" if rule.protocol else ""
    return f'iifname "{rule.in_iface}"{match} dnat to {dnat_target(rule)}'


def chain_of(rule: Rule) -> str:
    """The base chain a rule lives in: prerouting for DNAT, postrouting for SNAT."""
    return "prerouting" if isinstance(rule, DnatRule) else "postrouting"


def render_install(rules: List[Rule], families: List[int], note: str = "") -> str:
    """A batch that (re)creates the table of each family with exactly these rules, atomically.

    note becomes the table's comment: a second copy (beside the link alias) of
    what DEL needs to restore, readable even if the link was deleted by hand.
    """
    if '"' in note or "\n" in note:
        raise ValueError("table note must not contain quotes or newlines")
    lines: List[str] = []
    for family in families:
        fam = FAMILIES[family]
        # "add" then "delete" makes the batch valid whether or not a table exists:
        # the whole batch commits or nothing does.
        lines.append(f"add table {fam} {TABLE}")
        lines.append(f"delete table {fam} {TABLE}")
        lines.append(f"add table {fam} {TABLE}" + (f' {{ comment "{note}"; }}' if note else ""))
        lines.append(
            f"add chain {fam} {TABLE} prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}"
        )
        lines.append(
            f"add chain {fam} {TABLE} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}"
        )
        for rule in rules:
            if rule.family == family:
                lines.append(f"add rule {fam} {TABLE} {chain_of(rule)} {rule_text(rule)}")
    return "\n".join(lines) + "\n"


def render_remove(families: List[int]) -> str:
    """A batch that deletes the plugin's table of each family, whether or not it exists."""
    lines: List[str] = []
    for family in families:
        fam = FAMILIES[family]
        lines.append(f"add table {fam} {TABLE}")
        lines.append(f"delete table {fam} {TABLE}")
    return "\n".join(lines) + "\n"
