"""JSON for the CNI hot path, standing on the C module `_json` alone.

`import json` costs ~15 ms of CPU per exec: its decoder compiles regular
expressions, so it pulls in `re`, which pulls in `enum`. Yet for a document
json.loads and json.dumps do their work in `_json`'s scanner and encoder; the
package around them only configures them. This module configures them the same
way, so it gives exactly what the stdlib gives:

- dumps(obj) is json.dumps(obj), and dumps(obj, separators=(",", ":")) is
  json.dumps(obj, separators=(",", ":")): same text, same TypeError for what
  JSON cannot hold (ensure_ascii, NaN and Infinity allowed, keys in dict order).
- loads(text) is json.loads(text) for a str: same values (duplicate keys: the
  last wins; NaN, Infinity, 1e999, big integers). On bad input the stdlib
  itself, imported then, raises its own error (JSONDecodeError with its message
  and position, RecursionError, ValueError): error paths may pay for `json`.

Both call the C code from the same Python call depth as the stdlib does (three
frames: loads/_decode/_raw_decode against json.loads/decode/raw_decode), so the
nesting at which RecursionError starts is the same too.
"""

from __future__ import annotations

from _json import encode_basestring_ascii as _encode_string
from _json import make_encoder as _make_encoder
from _json import make_scanner as _make_scanner

# typing costs ~15 ms to import on a cold interpreter: only the type checker sees these.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Tuple

# What json.decoder's WHITESPACE regex ([ \t\n\r]*) skips around a document.
_WHITESPACE = " \t\n\r"


class _DecoderOptions:
    """The attributes make_scanner reads, with json.JSONDecoder()'s values."""

    strict = True  # control characters inside strings are an error
    object_hook = None
    object_pairs_hook = None  # a plain dict: of duplicate keys the last wins
    parse_float = float
    parse_int = int
    parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}.__getitem__


_scan_once = _make_scanner(_DecoderOptions())  # type: ignore[arg-type]  # typeshed wants a scanner as the context


def loads(text: str) -> Any:
    """json.loads(text): the value of the JSON document text; raise what json.loads raises."""
    try:
        return _decode(text)
    except Exception:
        # Not JSON: StopIteration, JSONDecodeError, RecursionError, a ValueError
        # from int() (over 4300 digits); on 3.10 and 3.11 a SystemError too, as
        # their scanner can raise JSONDecodeError only once json.decoder is imported.
        pass
    # Whatever it was, the stdlib decides and raises its own error, from the
    # depth json.loads would have called it at (and with no exception context).
    import json

    if text.startswith("\ufeff"):
        return json.loads(text)  # raises "Unexpected UTF-8 BOM" before decoding anything
    return json.JSONDecoder().decode(text)


def _decode(text: str) -> Any:
    """JSONDecoder.decode without its error messages: StopIteration or ValueError on bad input."""
    value, end = _raw_decode(text, _skip_whitespace(text, 0))
    if _skip_whitespace(text, end) != len(text):
        raise ValueError("extra data after the document")
    return value


def _raw_decode(text: str, index: int) -> Tuple[Any, int]:
    return _scan_once(text, index)


def _skip_whitespace(text: str, index: int) -> int:
    """The index of the first character from index on that is not JSON whitespace (len(text) if none)."""
    return len(text) - len(text[index:].lstrip(_WHITESPACE))


def dumps(obj: Any, separators: Tuple[str, str] = (", ", ": ")) -> str:
    """json.dumps(obj, separators=separators): ASCII text, dict keys in their order."""
    return _encode(obj, separators)


def _encode(obj: Any, separators: Tuple[str, str]) -> str:
    """JSONEncoder.encode."""
    if isinstance(obj, str):
        return _encode_string(obj)
    return "".join(_iterencode(obj, separators))


def _iterencode(obj: Any, separators: Tuple[str, str]) -> Any:
    """JSONEncoder.iterencode(obj, _one_shot=True): the C encoder's chunks."""
    item_separator, key_separator = separators
    # JSONEncoder()'s arguments: markers (a new dict each time, as the stdlib does: the encoder
    # leaves it dirty after an error), default, ensure_ascii's string encoder, indent,
    # key_separator, item_separator, sort_keys, skipkeys, allow_nan.
    encoder = _make_encoder(
        {}, _unserializable, _encode_string, None, key_separator, item_separator, False, False, True
    )
    return encoder(obj, 0)


def _unserializable(obj: Any) -> Any:
    """JSONEncoder.default: nothing beyond dict, list, tuple, str, int, float, bool and None."""
    raise TypeError(f"Object of type {obj.__class__.__name__} is not JSON serializable")
