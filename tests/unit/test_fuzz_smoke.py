"""The fuzz target over the committed seed corpus, without atheris (plain pytest).

A seed that starts failing the target's invariants is a regression; a seed
that stops reaching the path it was written for makes the corpus rot, so
each seed's outcome is pinned too.
"""

from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path
from types import ModuleType
from typing import Dict, List

import pytest

from egress_router_cni import protocol

FUZZ_DIR = Path(__file__).resolve().parent.parent / "fuzz"
CORPUS = sorted((FUZZ_DIR / "corpus").iterdir())


def _load_target() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_protocol", FUZZ_DIR / "fuzz_protocol.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fuzz = _load_target()

# What each seed is for: 0 = success, otherwise the CNI error code it must produce.
EXPECTED_OUTCOME: Dict[str, int] = {
    "add_chained_v020_prev.bin": 0,
    "bad_fallback_not_last.json": 7,
    "check_prev_result.bin": 0,
    "del_empty_netns.bin": 0,
    "dual_stack.json": 0,
    "gc_valid_attachments.bin": 0,
    "interface_args_v020.json": 0,
    "operator_nad_fallback.json": 0,
    "seed_add.json": 0,
    "status.bin": 0,
    "unset_env.bin": 4,
    "version.bin": 0,
}


def test_fuzz_corpus_is_small_and_fully_described() -> None:
    assert sorted(p.name for p in CORPUS) == sorted(EXPECTED_OUTCOME)
    assert sum(p.stat().st_size for p in CORPUS) < 64 * 1024


@pytest.mark.parametrize("seed", CORPUS, ids=lambda p: p.name)
def test_fuzz_target_holds_its_invariants_on_the_seed(seed: Path) -> None:
    fuzz.check_one(seed.read_bytes())


@pytest.mark.parametrize("seed", CORPUS, ids=lambda p: p.name)
def test_fuzz_seed_reaches_the_path_it_was_written_for(seed: Path) -> None:
    environ, stdin = fuzz.decode_input(seed.read_bytes())
    out = io.StringIO()
    rc = protocol.run(environ, io.BytesIO(stdin), out, io.StringIO(), fuzz.HANDLERS)
    code = json.loads(out.getvalue())["code"] if rc else 0
    assert code == EXPECTED_OUTCOME[seed.name]


def test_fuzz_decode_input_without_nul_is_stdin_for_add() -> None:
    environ, stdin = fuzz.decode_input(b'{"cniVersion":"1.0.0"}')
    assert environ == fuzz.DEFAULT_ENV
    assert stdin == b'{"cniVersion":"1.0.0"}'


def test_fuzz_decode_input_header_sets_unsets_and_empties_env() -> None:
    environ, stdin = fuzz.decode_input(b"DEL\0\x01\0\0eth0\0{}")
    assert environ["CNI_COMMAND"] == "DEL"
    assert "CNI_CONTAINERID" not in environ
    assert environ["CNI_NETNS"] == ""
    assert environ["CNI_IFNAME"] == "eth0"
    assert environ["CNI_ARGS"] == fuzz.DEFAULT_ENV["CNI_ARGS"]
    assert stdin == b"{}"


def test_fuzz_decode_input_single_byte_command_picks_a_command() -> None:
    picked: List[str] = [fuzz.decode_input(bytes([b]) + b"\0{}")[0]["CNI_COMMAND"] for b in range(6, 12)]
    assert picked == list(fuzz.COMMANDS)


def test_fuzz_decode_input_keeps_nul_bytes_in_stdin_after_a_full_header() -> None:
    _, stdin = fuzz.decode_input(b"ADD\0a\0b\0c\0d\0e\0{\0}")
    assert stdin == b"{\0}"


def test_fuzz_decode_input_non_utf8_env_is_surrogate_escaped_like_os_environ() -> None:
    environ, _ = fuzz.decode_input(b"ADD\0\xff\xfe\0{}")
    assert environ["CNI_CONTAINERID"] == "\udcff\udcfe"


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\0\0\0\0\0\0\0", id="all-empty-env"),
        pytest.param(b"ADD\0" + b"x" * 4096 + b"\0{}", id="4kb-container-id"),
        pytest.param(b'{"cniVersion":"1.0.0","name":"n","ip":{"addresses":["10.0.0.5/8"],"gateway":"10.0.0.1"}}'),
        pytest.param(b'{"cniVersion":"0.1.0","name":"n","ip":{"addresses":["10.0.0.5/8"],"gateway":"10.0.0.1"}}'),
        pytest.param(b"VERSION\0\xff\0", id="version-garbage"),
    ],
)
def test_fuzz_target_holds_its_invariants_on_edge_inputs(data: bytes) -> None:
    fuzz.check_one(data)


def test_fuzz_target_reports_an_internal_error_as_a_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setitem(fuzz.HANDLERS, "ADD", crash)
    with pytest.raises(AssertionError, match="internal error"):
        fuzz.check_one((FUZZ_DIR / "corpus" / "seed_add.json").read_bytes())
