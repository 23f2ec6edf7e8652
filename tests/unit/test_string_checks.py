"""The hot path's former regular expressions, now plain string checks, accept and refuse what the
regexes did: the network name and container ID, the MTU's digits, and an interface name in NAT rules."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from egress_router_cni.config import NAME_PATTERN, _ascii_digits, matches_name_pattern
from egress_router_cni.errors import InvalidConfig
from egress_router_cni.nat.rules import check_ifname_for_rules

SETTINGS = settings(max_examples=600, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
_FORMER_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")  # config's _NAME_RE, protocol's container ID
_FORMER_DIGITS_RE = re.compile(r"[0-9]+")  # config's _DIGITS_RE (the MTU)
_FORMER_RULE_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.\-@+]{1,15}$")  # nat/rules.py's _SAFE_IFNAME

# Near misses: every character class edge, other scripts' letters and digits, whitespace.
EDGE_CHARS = list("aAzZ09_.-@+/:$^ \t\n\r\x00\x7f`{[~\u00e9\u0663\uff10\u212a\u0130\u00b2")
TEXT = st.one_of(
    st.text(max_size=20),
    st.text(st.sampled_from(EDGE_CHARS), max_size=18),
    st.from_regex(_FORMER_NAME_RE, fullmatch=True),
    st.from_regex(_FORMER_RULE_IFNAME_RE, fullmatch=True),
    st.integers(0, 10**6).map(str),
)


def test_the_pattern_in_the_messages_is_the_former_regex() -> None:
    assert _FORMER_NAME_RE.pattern == NAME_PATTERN


@SETTINGS
@given(TEXT)
def test_name_check_matches_the_former_regex(text: str) -> None:
    assert matches_name_pattern(text) == bool(_FORMER_NAME_RE.fullmatch(text))


@SETTINGS
@given(st.one_of(TEXT, st.text(st.sampled_from("0123456789 \u0663\uff10\u00b2"), max_size=6)))
def test_mtu_digits_check_matches_the_former_regex(text: str) -> None:
    assert _ascii_digits(text) == bool(_FORMER_DIGITS_RE.fullmatch(text))


def _rule_ifname_accepted(name: str) -> bool:
    try:
        return check_ifname_for_rules(name, "interface name") == name
    except InvalidConfig:
        return False


@SETTINGS
@given(TEXT)
def test_rule_ifname_check_matches_the_former_regex_on_the_whole_name(text: str) -> None:
    assert _rule_ifname_accepted(text) == bool(_FORMER_RULE_IFNAME_RE.fullmatch(text))


@pytest.mark.parametrize("name", ["eth0\n", "net1\n"])
def test_rule_ifname_check_refuses_the_trailing_newline_the_former_match_let_through(name: str) -> None:
    # The former check used .match and '$', which also matches before a final newline.
    assert _FORMER_RULE_IFNAME_RE.match(name)
    assert not _rule_ifname_accepted(name)
