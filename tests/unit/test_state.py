"""The state record ADD leaves in the kernel: encodings, limits, released formats, malformed input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import pytest

from egress_router_cni.state import (
    IFALIASZ,
    NOTE_MAX,
    Backend,
    RouterState,
    decode_alias,
    decode_note,
    encode_alias,
    encode_note,
    owner_id,
)

RELEASED = json.loads((Path(__file__).parents[1] / "fixtures" / "released_state.json").read_text())
OWNER = RELEASED["owner"]


def expected(record: Dict[str, Any]) -> RouterState:
    return RouterState(owner=OWNER, forwarding={int(k): v for k, v in record["forwarding"].items()}, nat=record["nat"])


def test_state_owner_id_is_the_released_one() -> None:
    assert owner_id(RELEASED["container_id"]) == OWNER


@pytest.mark.parametrize("record", RELEASED["records"], ids=lambda r: r["note"])
def test_state_released_alias_and_note_decode(record: Dict[str, Any]) -> None:
    assert decode_alias(record["alias"]) == expected(record)
    assert decode_note(record["note"]) == expected(record)


@pytest.mark.parametrize("record", RELEASED["records"], ids=lambda r: r["note"])
def test_state_encodes_as_the_released_version_did(record: Dict[str, Any]) -> None:
    """Unchanged formats: a rollback to the released version still cleans up routers made by this one."""
    assert encode_alias(expected(record)) == record["alias"]
    assert encode_note(expected(record)) == record["note"]


def test_state_round_trip_with_log_path() -> None:
    state = RouterState(owner=OWNER, forwarding={4: "0", 6: "1"}, nat=Backend.IPTABLES, log_file="/var/log/er.log")
    assert decode_alias(encode_alias(state)) == state
    # The note never carries the log path (nft keeps 128 bytes of a table comment).
    assert decode_note(encode_note(state)) == state._replace(log_file=None)


def test_state_alias_drops_a_log_path_that_does_not_fit() -> None:
    state = RouterState(owner=OWNER, forwarding={4: "0", 6: "1"}, nat=Backend.NFTABLES, log_file="/" + "é" * 200)
    alias = encode_alias(state)
    assert len(alias.encode()) < IFALIASZ
    assert decode_alias(alias) == state._replace(log_file=None)
    room = IFALIASZ - 1 - len(alias.encode()) - len(',"log":""')
    fits = state._replace(log_file="/" + "x" * (room - 1))
    assert len(encode_alias(fits).encode()) == IFALIASZ - 1
    assert decode_alias(encode_alias(fits)) == fits
    assert decode_alias(encode_alias(fits._replace(log_file=fits.log_file + "x"))) == state._replace(log_file=None)


def test_state_note_fits_the_nft_comment() -> None:
    state = RouterState(owner="f" * 16, forwarding={4: "1", 6: "1"}, nat=Backend.IPTABLES, log_file="/x" * 100)
    assert len(encode_note(state).encode()) <= NOTE_MAX


@pytest.mark.parametrize(
    "alias",
    [
        "",
        "eth0 uplink",
        "egress-router",
        "egress-router ",
        "egress-router not json",
        "egress-router []",
        'egress-router "owner"',
        'egress-router {"owner":"2b75dd431681038c","forwarding":{"x":"1"}}',
        'egress-router {"owner":"2b75dd431681038c","forwarding":{"4":1}}',
        'egress-router {"owner":"2b75dd431681038c","forwarding":[["4","1"]]}',
        'egress-router {"owner":"2b75dd431681038c"}',
        'egress-router {"owner":12,"forwarding":{}}',
        'egress-router {"owner":"../etc","forwarding":{}}',
        'egress-router {"owner":"2b75dd431681038c","forwarding":{},"nat":"pf"}',
        'egress-router {"owner":"2b75dd431681038c","forwarding":{},"nat":["nftables"]}',
        'egress-router {"owner":"2b75dd431681038c","forwarding":{},"log":7}',
        'egress-router {"owner":"2b75dd431681038c","forwarding":{"4":"0"',
        "egress-router \udcff",
    ],
)
def test_state_malformed_alias_is_not_ours(alias: str) -> None:
    assert decode_alias(alias) is None


@pytest.mark.parametrize(
    "note",
    [
        None,
        "",
        "egress-router",
        "something else owner=2b75dd431681038c",
        "egress-router fwd4=0",
        "egress-router owner=2b75dd431681038c fwdx=1",
        "egress-router owner=2b75dd431681038c nat=pf",
        "egress-router owner=XYZ",
        "egress-router owner=2b75dd431681038c junk",
    ],
)
def test_state_malformed_note_is_not_ours(note: str) -> None:
    assert decode_note(note) is None


def test_state_forwarding_values_other_than_0_or_1_are_not_restored() -> None:
    """As the released DEL did: a value it cannot have written is skipped, the record still counts."""
    assert decode_alias('egress-router {"owner":"ab","forwarding":{"4":"2","6":"1"}}') == RouterState("ab", {6: "1"})
    assert decode_note("egress-router owner=ab fwd4=2 fwd6=0") == RouterState("ab", {6: "0"})


def test_state_backend_prints_as_its_name() -> None:
    assert f"{Backend.NFTABLES}" == "nftables"
    assert str(Backend.IPTABLES) == "iptables"
