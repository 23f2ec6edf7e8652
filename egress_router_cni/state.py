"""What ADD leaves in the kernel to be undone later: one typed record, two encodings.

ADD writes the record twice, so DEL can finish the job from kernel state even
after a crash or a hand-deleted link: as JSON in the router link's alias
(IFLA_IFALIAS, at most 255 bytes) and as `k=v` words in the NAT rules' note
(the nftables table comment, at most 128 bytes, or the iptables rule comment).

Both formats are the ones the first release wrote, so DEL cleans up routers
made by it. The decoders are defensive: a record that is not ours or is
malformed decodes as None ("not ours") and never raises.
"""

from __future__ import annotations

import zlib

from .jsonio import dumps, loads
from .record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Final, Literal, Optional, Tuple

    BackendName = Literal["nftables", "iptables"]

PREFIX = "egress-router "  # starts both encodings: marks the link, the table, the rule as ours
IFALIASZ = 256  # the kernel's alias buffer, NUL included: at most 255 bytes of text
NOTE_MAX = 128  # nft keeps at most 128 bytes of a table comment
FAMILIES = (4, 6)
_HEX = frozenset("0123456789abcdef")
_FLAGS = ("0", "1")


class Backend:
    """The NAT backends, by the name the config, the records and the logs use.

    Plain strings (typed BackendName), not an Enum: enum costs milliseconds of
    every plugin exec, and a backend is only ever compared and printed by name.
    """

    NFTABLES: Final = "nftables"
    IPTABLES: Final = "iptables"


BACKENDS: Tuple[BackendName, ...] = (Backend.NFTABLES, Backend.IPTABLES)


def backend_named(name: object) -> Optional[BackendName]:
    """The backend called name, or None (also for "auto" and anything else)."""
    for backend in BACKENDS:
        if name == backend:
            return backend
    return None


# Record (a NamedTuple to mypy), not @dataclass: dataclasses imports inspect, ~12 ms of every plugin exec.
class RouterState(Record):
    """One attachment's record: whose it is and what to restore.

    forwarding maps an address family (4, 6) to the value its forwarding
    sysctl had before ADD ("0" or "1"); nat is the backend that holds the
    rules; log_file is the log ADD wrote to (kept in the alias only, and only
    when it fits).
    """

    owner: str
    forwarding: Dict[int, str]
    nat: Optional[BackendName] = None
    log_file: Optional[str] = None


def encode_alias(state: RouterState) -> str:
    """The link alias for state; the log path is left out when the alias would exceed 255 bytes."""
    record: Dict[str, Any] = {"owner": state.owner, "forwarding": {str(f): v for f, v in state.forwarding.items()}}
    if state.nat is not None:
        record["nat"] = state.nat
    alias = PREFIX + dumps(record, separators=(",", ":"))
    if state.log_file:
        record["log"] = state.log_file
        with_log = PREFIX + dumps(record, separators=(",", ":"))
        if len(with_log.encode()) < IFALIASZ:
            alias = with_log
    return alias


def decode_alias(alias: str) -> Optional[RouterState]:
    """The record in a link alias, or None when the link is not ours or the record is malformed."""
    if not alias.startswith(PREFIX):
        return None
    try:
        record = loads(alias[len(PREFIX) :])
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    owner, fwd, nat, log = (record.get(k) for k in ("owner", "forwarding", "nat", "log"))
    forwarding = _forwarding(fwd.items()) if isinstance(fwd, dict) else None
    if not _valid_owner(owner) or forwarding is None or (log is not None and not isinstance(log, str)):
        return None
    backend = backend_named(nat)
    if nat is not None and backend is None:
        return None
    return RouterState(owner=str(owner), forwarding=forwarding, nat=backend, log_file=log or None)


def encode_note(state: RouterState) -> str:
    """The NAT note for state: 'egress-router owner=ID fwd4=0 fwd6=1 nat=nftables' (no log path: 128 bytes)."""
    fields = [f"owner={state.owner}"] + [f"fwd{f}={v}" for f, v in sorted(state.forwarding.items())]
    if state.nat is not None:
        fields.append(f"nat={state.nat}")
    return PREFIX + " ".join(fields)


def decode_note(note: Optional[str]) -> Optional[RouterState]:
    """The record in a NAT note, or None when there is no note, it is not ours, or it is malformed."""
    if not note or not note.startswith(PREFIX):
        return None
    fields: Dict[str, str] = {}
    fwd = []
    for word in note[len(PREFIX) :].split():
        key, sep, value = word.partition("=")
        if not sep:
            return None
        if key.startswith("fwd"):
            fwd.append((key[3:], value))
        else:
            fields[key] = value
    owner, forwarding = fields.get("owner"), _forwarding(fwd)
    backend = backend_named(fields.get("nat"))
    if not _valid_owner(owner) or forwarding is None or ("nat" in fields and backend is None):
        return None
    return RouterState(owner=str(owner), forwarding=forwarding, nat=backend)


def owner_id(container_id: str) -> str:
    """A short, fixed-size stand-in for the container id (ids have no length limit; aliases do)."""
    # Two 32-bit checksums, not a cryptographic hash: it only tells apart the few
    # attachments of one pod, and hashlib's OpenSSL import costs ~4 ms per exec.
    data = container_id.encode()
    return f"{zlib.crc32(data):08x}{zlib.adler32(data):08x}"


def _valid_owner(owner: object) -> bool:
    return isinstance(owner, str) and 0 < len(owner) <= 64 and _HEX.issuperset(owner)


def _forwarding(items: Any) -> Optional[Dict[int, str]]:
    """{"4": "0", ...} pairs as {4: "0"}; None if a key is not a family. Values other than 0/1 are dropped."""
    forwarding: Dict[int, str] = {}
    for key, value in items:
        if key not in ("4", "6") or not isinstance(value, str):
            return None
        if value in _FLAGS:
            forwarding[int(key)] = value
    return forwarding
