"""NAT rules as data, their nft text and the upstream iptables spelling (golden text from the seed)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Dict, List

import pytest

from egress_router_cni.config import NetConf, parse_netconf
from egress_router_cni.errors import InvalidConfig
from egress_router_cni.nat.nftables_text import TABLE, render_install, render_remove, rule_text
from egress_router_cni.nat.rules import DnatRule, SnatRule, build_rules, dnat_target, iptables_spelling

SEED_DESTINATIONS = ["80 UDP 10.0.0.99/30", "8080 TCP 203.0.113.26/30 80", "8443 TCP 203.0.113.27/30 443"]

# The four "Added iptables rule: ..." lines of the product page's log, verbatim.
SEED_LOG_RULES = [
    "iptables -t nat PREROUTING -i eth0 -p UDP --dport 80 -j DNAT --to-destination 10.0.0.99",
    "iptables -t nat PREROUTING -i eth0 -p TCP --dport 8080 -j DNAT --to-destination 203.0.113.26:80",
    "iptables -t nat PREROUTING -i eth0 -p TCP --dport 8443 -j DNAT --to-destination 203.0.113.27:443",
    "iptables -t nat -o net1 -j SNAT --to-source 192.168.12.99",
]

SEED_NFT_RULES = [
    'iifname "eth0" udp dport 80 dnat to 10.0.0.99',
    'iifname "eth0" tcp dport 8080 dnat to 203.0.113.26:80',
    'iifname "eth0" tcp dport 8443 dnat to 203.0.113.27:443',
    'oifname "net1" snat to 192.168.12.99',
]


def conf_of(destinations: List[str], **ip: Any) -> NetConf:
    ip_obj: Dict[str, Any] = {"addresses": ["192.168.12.99/24"], "gateway": "192.168.12.1", **ip}
    ip_obj["destinations"] = destinations
    return parse_netconf({"cniVersion": "1.0.0", "name": "egress-router-cni-nad", "ip": ip_obj})


def seed_conf() -> NetConf:
    return conf_of(SEED_DESTINATIONS)


def dual_conf(destinations: List[str]) -> NetConf:
    return conf_of(
        destinations,
        addresses=["192.168.12.99/24", "2001:db8:12::99/64"],
        gateway=["192.168.12.1", "2001:db8:12::1"],
    )


# --- build_rules -----------------------------------------------------------------------------


def test_rules_seed_example_gives_one_dnat_per_destination_then_snat() -> None:
    rules = build_rules(seed_conf(), "net1")
    assert [type(r) for r in rules] == [DnatRule, DnatRule, DnatRule, SnatRule]


def test_rules_seed_example_nft_text_is_golden() -> None:
    assert [rule_text(r) for r in build_rules(seed_conf(), "net1")] == SEED_NFT_RULES


def test_rules_seed_example_iptables_spelling_matches_the_seed_log() -> None:
    assert [iptables_spelling(r) for r in build_rules(seed_conf(), "net1")] == SEED_LOG_RULES


def test_rules_snat_uses_the_router_interface_name_given() -> None:
    snat = build_rules(seed_conf(), "egress0")[-1]
    assert rule_text(snat) == 'oifname "egress0" snat to 192.168.12.99'


def test_rules_dnat_matches_the_configured_pod_interface() -> None:
    obj = {
        "cniVersion": "1.0.0",
        "name": "n",
        "podInterface": "eth1",
        "ip": {"addresses": ["192.168.12.99/24"], "gateway": "192.168.12.1", "destinations": ["80 tcp 10.0.0.1"]},
    }
    rules = build_rules(parse_netconf(obj), "net1")
    assert rule_text(rules[0]) == 'iifname "eth1" tcp dport 80 dnat to 10.0.0.1'


def test_rules_fallback_matches_every_port_and_keeps_its_place() -> None:
    rules = build_rules(conf_of(["80 tcp 10.4.5.6", "8080 tcp 10.7.8.9 80", "10.1.2.3"]), "macvlan0")
    # The legacy router's golden output for the same list (egress_router_test.go, nft era).
    assert [rule_text(r) for r in rules] == [
        'iifname "eth0" tcp dport 80 dnat to 10.4.5.6',
        'iifname "eth0" tcp dport 8080 dnat to 10.7.8.9:80',
        'iifname "eth0" dnat to 10.1.2.3',
        'oifname "macvlan0" snat to 192.168.12.99',
    ]


def test_rules_fallback_ip_comes_after_the_port_rules() -> None:
    rules = build_rules(conf_of(SEED_DESTINATIONS, fallbackIP="10.0.0.200"), "net1")
    assert rule_text(rules[-2]) == 'iifname "eth0" dnat to 10.0.0.200'


def test_rules_sctp_is_spelled_in_lower_case_for_nft_and_upper_case_for_iptables() -> None:
    rule = build_rules(conf_of(["9000 SCTP 10.0.0.5 9001"]), "net1")[0]
    assert rule_text(rule) == 'iifname "eth0" sctp dport 9000 dnat to 10.0.0.5:9001'
    assert "-p SCTP --dport 9000" in iptables_spelling(rule)


def test_rules_router_without_destinations_still_snats() -> None:
    assert [rule_text(r) for r in build_rules(conf_of([]), "net1")] == ['oifname "net1" snat to 192.168.12.99']


def test_rules_snat_source_is_the_first_address_of_the_family() -> None:
    conf = conf_of(["80 tcp 10.0.0.1"], addresses=["192.168.12.99/24", "192.168.12.98/24"])
    snat = build_rules(conf, "net1")[-1]
    assert isinstance(snat, SnatRule)
    assert str(snat.to_addr) == "192.168.12.99"


# --- IPv6 and dual stack ---------------------------------------------------------------------


def test_rules_ipv6_target_with_port_is_bracketed() -> None:
    rule = build_rules(dual_conf(["80 tcp 2001:db8::26 8080"]), "net1")[1]
    assert isinstance(rule, DnatRule)
    assert dnat_target(rule) == "[2001:db8::26]:8080"
    assert rule_text(rule) == 'iifname "eth0" tcp dport 80 dnat to [2001:db8::26]:8080'


def test_rules_ipv6_target_without_port_is_not_bracketed() -> None:
    rule = build_rules(dual_conf(["2001:db8::99"]), "net1")[1]
    assert rule_text(rule) == 'iifname "eth0" dnat to 2001:db8::99'


def test_rules_ipv6_iptables_spelling_uses_ip6tables() -> None:
    rule = build_rules(dual_conf(["80 tcp 2001:db8::26 8080"]), "net1")[1]
    assert iptables_spelling(rule) == (
        "ip6tables -t nat PREROUTING -i eth0 -p TCP --dport 80 -j DNAT --to-destination [2001:db8::26]:8080"
    )


def test_rules_dual_stack_groups_rules_per_family_with_one_snat_each() -> None:
    rules = build_rules(dual_conf(["80 tcp 2001:db8::26", "80 tcp 10.0.0.1", "10.0.0.2"]), "net1")
    assert [(type(r).__name__, r.family) for r in rules] == [
        ("DnatRule", 4),
        ("DnatRule", 4),
        ("SnatRule", 4),
        ("DnatRule", 6),
        ("SnatRule", 6),
    ]
    assert rule_text(rules[-1]) == 'oifname "net1" snat to 2001:db8:12::99'


def test_rules_family_without_gateway_gets_no_rules() -> None:
    conf = conf_of(["80 tcp 10.0.0.1"], addresses=["192.168.12.99/24", "2001:db8:12::99/64"])
    assert {r.family for r in build_rules(conf, "net1")} == {4}


# --- unsafe interface names ------------------------------------------------------------------


@pytest.mark.parametrize(
    "ifname",
    ['net1"', 'a" ; flush ruleset ; "', "net{1}", "net1;", "a\\b", "n" * 16, "", "net 1", "net\n1"],
    ids=repr,
)
def test_rules_unsafe_router_interface_name_is_refused(ifname: str) -> None:
    with pytest.raises(InvalidConfig, match="interface name"):
        build_rules(seed_conf(), ifname)


@pytest.mark.parametrize("pod_interface", ['eth"0', "eth0;", "eth{0}", "eth$0"])
def test_rules_unsafe_pod_interface_is_refused(pod_interface: str) -> None:
    # The config grammar allows these (the kernel does); the rule language must not see them.
    obj = {
        "cniVersion": "1.0.0",
        "name": "n",
        "podInterface": pod_interface,
        "ip": {"addresses": ["192.168.12.99/24"], "gateway": "192.168.12.1", "destinations": []},
    }
    with pytest.raises(InvalidConfig, match="podInterface"):
        build_rules(parse_netconf(obj), "net1")


@pytest.mark.parametrize("ifname", ["net1", "eth0.100", "br-ex", "vlan@eth0", "veth+1", "a_b"])
def test_rules_ordinary_interface_names_are_accepted(ifname: str) -> None:
    assert rule_text(build_rules(seed_conf(), ifname)[-1]) == f'oifname "{ifname}" snat to 192.168.12.99'


# --- the nft batch ---------------------------------------------------------------------------

SEED_INSTALL = f"""\
add table ip {TABLE}
delete table ip {TABLE}
add table ip {TABLE} {{ comment "egress-router owner=0123456789abcdef fwd4=0 nat=nftables"; }}
add chain ip {TABLE} prerouting {{ type nat hook prerouting priority dstnat; policy accept; }}
add chain ip {TABLE} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}
add rule ip {TABLE} prerouting iifname "eth0" udp dport 80 dnat to 10.0.0.99
add rule ip {TABLE} prerouting iifname "eth0" tcp dport 8080 dnat to 203.0.113.26:80
add rule ip {TABLE} prerouting iifname "eth0" tcp dport 8443 dnat to 203.0.113.27:443
add rule ip {TABLE} postrouting oifname "net1" snat to 192.168.12.99
"""
NOTE = "egress-router owner=0123456789abcdef fwd4=0 nat=nftables"


def test_render_install_seed_batch_is_golden() -> None:
    assert render_install(build_rules(seed_conf(), "net1"), [4], NOTE) == SEED_INSTALL


def test_render_install_table_is_the_upstream_name() -> None:
    assert TABLE == "egress_cni"


def test_render_install_without_note_has_no_comment() -> None:
    text = render_install(build_rules(seed_conf(), "net1"), [4])
    assert "comment" not in text
    assert text.splitlines()[2] == f"add table ip {TABLE}"


def test_render_install_recreates_the_table_before_adding_rules() -> None:
    # add+delete makes the batch valid whether the table exists or not; the batch is atomic.
    lines = render_install(build_rules(seed_conf(), "net1"), [4]).splitlines()
    assert lines[:3] == [f"add table ip {TABLE}", f"delete table ip {TABLE}", f"add table ip {TABLE}"]


def test_render_install_dual_stack_puts_each_family_in_its_own_table() -> None:
    text = render_install(build_rules(dual_conf(["80 tcp 10.0.0.1", "80 tcp 2001:db8::26 8080"]), "net1"), [4, 6])
    ip6_rules = [line for line in text.splitlines() if line.startswith(f"add rule ip6 {TABLE}")]
    ip4_rules = [line for line in text.splitlines() if line.startswith(f"add rule ip {TABLE}")]
    assert ip6_rules == [
        f'add rule ip6 {TABLE} prerouting iifname "eth0" tcp dport 80 dnat to [2001:db8::26]:8080',
        f'add rule ip6 {TABLE} postrouting oifname "net1" snat to 2001:db8:12::99',
    ]
    assert len(ip4_rules) == 2


def test_render_install_only_renders_the_families_asked_for() -> None:
    rules = build_rules(dual_conf(["80 tcp 10.0.0.1", "80 tcp 2001:db8::26"]), "net1")
    assert "ip6" not in render_install(rules, [4])


@pytest.mark.parametrize("note", ['a"b', "a\nb"], ids=["quote", "newline"])
def test_render_install_refuses_a_note_that_could_escape_the_comment(note: str) -> None:
    with pytest.raises(ValueError, match="note"):
        render_install(build_rules(seed_conf(), "net1"), [4], note)


def test_render_remove_deletes_each_family_table_even_if_absent() -> None:
    assert render_remove([4, 6]) == (
        f"add table ip {TABLE}\ndelete table ip {TABLE}\nadd table ip6 {TABLE}\ndelete table ip6 {TABLE}\n"
    )


def _nft_check_unavailable() -> str:
    if shutil.which("nft") is None:
        return "nft is not installed"
    if os.geteuid() != 0:
        return "nft -c needs CAP_NET_ADMIN"
    return ""


@pytest.mark.skipif(bool(_nft_check_unavailable()), reason=_nft_check_unavailable() or "n/a")
def test_render_install_batch_is_accepted_by_nft_check(tmp_path: Path) -> None:
    """The rendered batch is real nft syntax: `nft -c` parses and evaluates it without committing."""
    conf = dual_conf(
        ["80 UDP 10.0.0.99/30", "8080 tcp 203.0.113.26 80", "9000 sctp 10.0.0.5", "80 tcp 2001:db8::26 8080"]
    )
    batch = tmp_path / "batch.nft"
    batch.write_text(render_install(build_rules(conf, "net1"), [4, 6], NOTE))
    check = subprocess.run(["nft", "-c", "-f", str(batch)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stderr


def test_render_install_cannot_be_injected_through_a_scoped_ipv6_fallback() -> None:
    """Regression: an IPv6 zone id in fallbackIP injected lines into the nft batch."""
    obj = {
        "cniVersion": "1.0.0",
        "name": "n",
        "ip": {
            "addresses": ["2001:db8:12::99/64"],
            "gateway": "2001:db8:12::1",
            "fallbackIP": "2001:db8::9%x\nflush ruleset\nadd table inet evil",
        },
    }
    try:
        conf = parse_netconf(obj)
    except InvalidConfig:
        return  # the fix: the config is refused
    text = render_install(build_rules(conf, "net1"), [6])
    assert all(line.startswith(("add ", "delete ")) for line in text.splitlines()), text
