"""jsonio, the hot path's JSON codec on `_json`, gives what the stdlib json gives: the same text
from dumps, the same values from loads, and for bad input the same error (class and message)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Tuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from egress_router_cni import jsonio

SETTINGS = settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
ROOT = Path(__file__).resolve().parents[2]

# Every code point (surrogates included), the default text strategy, and the characters
# JSON escapes or refuses, so that each kind shows up often.
ANY_CHAR = st.integers(0, 0x10FFFF).map(chr)
SPECIAL_CHARS = st.sampled_from(
    [*'\x00\x1f\x7f"\\/\b\f\n\r\t\u2028\ufeffé😀', "\ud800", "\udbff", "\udc00", "\udfff"]  # two in a row: a pair
)
TEXT = st.one_of(st.text(), st.text(ANY_CHAR, max_size=8), st.text(SPECIAL_CHARS, max_size=8))
NUMBERS = st.one_of(
    st.integers(),
    st.integers(-(10**60), 10**60),
    st.floats(),  # NaN, infinities and -0.0 included
    st.sampled_from([1e308, 5e-324, -0.0, 1e16, 1.0e-7, 123456789.125]),
)
LEAVES = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
KEYS = st.one_of(TEXT, st.integers(), st.floats(), st.booleans(), st.none())  # json turns the others into strings


def _containers(children: st.SearchStrategy[Any], keys: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=5),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(keys, children, max_size=5),
    )


VALUES = st.recursive(LEAVES, lambda c: _containers(c, KEYS), max_leaves=25)
DOCUMENTS = st.recursive(LEAVES, lambda c: _containers(c, TEXT), max_leaves=25)  # what loads gives back
SEPARATORS = st.sampled_from([None, (",", ":"), (", ", ": "), (" ,", " : ")])


def outcome(fn: Callable[[Any], Any], arg: Any) -> Tuple[str, str]:
    """('ok', repr of the result) or (exception class, message): repr tells -0.0, NaN, 1 and True apart."""
    try:
        return ("ok", repr(fn(arg)))
    except Exception as e:
        return (f"{type(e).__module__}.{type(e).__qualname__}", str(e))


# --- dumps -----------------------------------------------------------------------------------


@SETTINGS
@given(VALUES)
def test_dumps_writes_what_json_dumps_writes(value: Any) -> None:
    assert outcome(jsonio.dumps, value) == outcome(json.dumps, value)


@SETTINGS
@given(VALUES)
def test_dumps_compact_writes_what_json_dumps_compact_writes(value: Any) -> None:
    compact = (",", ":")
    assert jsonio.dumps(value, separators=compact) == json.dumps(value, separators=compact)


NOT_JSON = st.sampled_from([object(), b"bytes", {1, 2}, 1j, range(2), {(1, 2): "tuple key"}, {b"k": 1}])


@SETTINGS
@given(
    st.recursive(
        NOT_JSON,
        lambda c: st.lists(c, min_size=1, max_size=3) | st.dictionaries(TEXT, c, min_size=1, max_size=3),
        max_leaves=5,
    )
)
def test_dumps_refuses_what_json_dumps_refuses(value: Any) -> None:
    ours = outcome(jsonio.dumps, value)
    assert ours == outcome(json.dumps, value)
    assert ours[0] == "builtins.TypeError", ours


def test_dumps_of_the_documents_the_plugin_writes() -> None:
    """A result, an error and a state record, as protocol, state and config write them."""
    result = {"cniVersion": "1.0.0", "interfaces": [{"name": "net1", "mac": "0a:58:c0:a8:0c:63", "sandbox": "/x"}]}
    error = {"cniVersion": "1.0.0", "code": 7, "msg": "invalid gateway", "details": "gateway \u00e9 \x01 \ud800"}
    state = {"owner": "c0ffee", "forwarding": {"4": "0", "6": "1"}, "nat": "nftables", "log": "/tmp/egress-router"}
    for doc in (result, error, state, "a string", 12, None, float("nan"), [1e999, -1e999]):
        assert jsonio.dumps(doc) == json.dumps(doc)
        assert jsonio.dumps(doc, separators=(",", ":")) == json.dumps(doc, separators=(",", ":"))


def test_dumps_leaves_no_circular_marker_behind_after_an_error() -> None:
    shared = [1]
    with pytest.raises(TypeError):
        jsonio.dumps([shared, object()])
    assert jsonio.dumps([shared, shared]) == "[[1], [1]]"  # not "Circular reference detected"
    loop: Any = []
    loop.append(loop)
    circular = ("builtins.ValueError", "Circular reference detected")
    assert outcome(jsonio.dumps, loop) == outcome(json.dumps, loop) == circular


# --- loads: valid documents ------------------------------------------------------------------


@st.composite
def written_documents(draw: st.DrawFn) -> str:
    """A document as json.dumps writes it with any of its layouts, with JSON whitespace around."""
    value = draw(DOCUMENTS)
    indent = draw(st.sampled_from([None, 0, 2, "\t", " \r\n"]))
    text = json.dumps(value, indent=indent, separators=draw(SEPARATORS), ensure_ascii=draw(st.booleans()))
    space = st.text(st.sampled_from(" \t\n\r"), max_size=3)
    return draw(space) + text + draw(space)


@SETTINGS
@given(written_documents())
def test_loads_reads_what_json_loads_reads(text: str) -> None:
    ours = outcome(jsonio.loads, text)
    assert ours == outcome(json.loads, text)
    assert ours[0] == "ok"


NUMBER_TEXT = st.from_regex(r"-?(0|[1-9][0-9]{0,30})(\.[0-9]{1,20})?([eE][-+]?[0-9]{1,4})?", fullmatch=True)


@SETTINGS
@given(st.lists(NUMBER_TEXT, min_size=1, max_size=4))
def test_loads_reads_numbers_as_json_loads_does(numbers: list) -> None:
    text = "[" + ", ".join(numbers) + "]"
    assert outcome(jsonio.loads, text) == outcome(json.loads, text)


@pytest.mark.parametrize(
    "text",
    [
        '{"a": 1, "a": 2, "b": {"a": 3}, "b": [4]}',  # duplicate keys: the last one wins
        "[NaN, Infinity, -Infinity, 1e999, -1e999, -0, -0.0, 1E+2, 0.5e-3]",
        "[123456789012345678901234567890123456789, 1.000000000000000000001]",
        '"\\ud800\\udc00 \\ud800 \\udfff \\u0000 \\/ \\b\\f\\n\\r\\t"',
        '{"":""}',
        " \t\n\r[]\r\n\t ",
        "true",
        "null",
    ],
)
def test_loads_of_edge_documents(text: str) -> None:
    ours = outcome(jsonio.loads, text)
    assert ours == outcome(json.loads, text)
    assert ours[0] == "ok"


# --- loads: invalid input --------------------------------------------------------------------

JSONISH_CHARS = '[]{}",:0123456789.-+eE tfnNIaulrsy\t\n\r\f\v\xa0\\u\x00\x1f\ufeff\ud800é'
JSONISH = st.text(st.sampled_from(list(JSONISH_CHARS)), max_size=14)


@st.composite
def damaged_documents(draw: st.DrawFn) -> str:
    """A valid document with one character inserted, removed or replaced."""
    text = json.dumps(draw(DOCUMENTS), ensure_ascii=draw(st.booleans()))
    at = draw(st.integers(0, len(text)))
    how = draw(st.sampled_from(["insert", "remove", "replace"]))
    char = draw(st.one_of(st.sampled_from(list('[]{}",:0-.e \\\x00\f\v\xa0')), ANY_CHAR))
    if how == "insert":
        return text[:at] + char + text[at:]
    if how == "remove":
        return text[:at] + text[at + 1 :]
    return text[:at] + char + text[at + 1 :]


@SETTINGS
@given(st.one_of(JSONISH, st.text(ANY_CHAR, max_size=10), damaged_documents()))
def test_loads_refuses_what_json_loads_refuses_with_its_error(text: str) -> None:
    assert outcome(jsonio.loads, text) == outcome(json.loads, text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "\ufeff{}",  # json.loads' own check
        '{"a": 1} x',
        '{"a": 1}\n\n}',
        "[1,]",
        '{"a" 1}',
        '"\x01"',  # strict: no control characters inside strings
        '"\\ud800',
        "nan",
        "\f1",  # JSON whitespace is only space, tab, CR and LF
        "[1]\v",
        "\xa0[]",
        "{}\u2028",
        "[" + "9" * 5000 + "]",  # over int()'s default digit limit on 3.11+ (a ValueError, not JSONDecodeError)
    ],
)
def test_loads_refuses_bad_documents_with_the_json_error(text: str) -> None:
    ours = outcome(jsonio.loads, text)
    assert ours == outcome(json.loads, text)


def test_nesting_limit_is_where_json_puts_it() -> None:
    """RecursionError starts at the same depth for loads and dumps (same call depth into `_json`)."""
    low, high = 1, 1_000_000  # json.loads takes low levels of nesting and refuses high ones: bisect
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if outcome(json.loads, "[" * middle + "]" * middle)[0] == "ok" else (low, middle)
    limit = high
    for depth in range(limit - 6, limit + 6):
        for text in ("[" * depth + "]" * depth, "[" * depth + "x", '{"a":' * depth + "1" + "}" * depth):
            assert outcome(jsonio.loads, text) == outcome(json.loads, text), depth
        nested: Any = []
        for _ in range(depth):
            nested = [nested]
        assert outcome(jsonio.dumps, nested) == outcome(json.dumps, nested), depth


# --- what it imports -------------------------------------------------------------------------


BAD_IN_A_FRESH_PROCESS = ["{", '{"a" 1}', "[1,]", '"\\x"', '"abc', "", "[1] 2", "\ufeff[]", "[" * 100_000]


def test_the_codec_imports_neither_json_nor_re() -> None:
    """Decoding and encoding load no stdlib json, re or typing; bad input, in a process that has not
    imported json yet, still gets json's own error (on 3.10 and 3.11 `_json` cannot raise it then)."""
    script = f"""
import sys
from egress_router_cni import jsonio
doc = jsonio.loads(' {{"cniVersion": "1.0.0", "a": [1, 2.5, NaN, "\\\\u00e9", null, true]}} ')
jsonio.dumps(doc); jsonio.dumps(doc, separators=(',', ':'))
print(sorted(m for m in sys.modules if m.split('.')[0] in ('json', 're', 'typing', 'enum')))
for text in {BAD_IN_A_FRESH_PROCESS!r}:
    try:
        jsonio.loads(text)
    except Exception as e:
        print(type(e).__qualname__, str(e))
"""
    out = subprocess.run([sys.executable, "-S", "-c", script], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    errors = [outcome(json.loads, text) for text in BAD_IN_A_FRESH_PROCESS]
    expected = ["[]"] + [f"{cls.rsplit('.', 1)[1]} {message}" for cls, message in errors]
    assert out.stdout.splitlines() == expected
