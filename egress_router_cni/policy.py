"""The node policy: what the node's root allows a network config to do.

A NetworkAttachmentDefinition is written by whoever may create one in a
namespace; the plugin runs as root on the node. The policy is a JSON file only
the node's root controls (/etc/egress-router/policy.json, or the path in
$EGRESS_ROUTER_POLICY, which only whoever starts the runtime can set). Every
key is optional:

    {"allowedMasters": ["ens4"],
     "allowedModes": ["bridge", "private", "vepa"],
     "allowedAddressRanges": ["192.168.12.64/26"],
     "allowedDestinationRanges": ["203.0.113.0/24", "10.0.0.96/30"],
     "logDirectories": ["/var/log/egress-router"],
     "addressConflictDetection": true}

Without a file the defaults apply: any master, address and destination, every
macvlan mode but passthru (it hands the master NIC to the pod), logs in
/var/log or /tmp, no conflict detection. A file that is not a regular file
owned by root and unwritable by group and others, or that does not parse, is
refused and fails closed: ADD and CHECK fail with code 106 naming the file and
the reason, STATUS reports not available. DEL is never refused by policy.

Cost when there is no file: one failed open(2) per invocation.
"""

from __future__ import annotations

import os
import stat

from .config import MACVLAN_MODES, NetConf, valid_ifname
from .errors import PolicyViolation
from .ipaddr import IPNetwork, ip_network
from .jsonio import loads
from .record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, List, Optional, Sequence, Tuple

DEFAULT_POLICY_FILE = "/etc/egress-router/policy.json"
POLICY_ENV = "EGRESS_ROUTER_POLICY"
DEFAULT_MODES = tuple(m for m in MACVLAN_MODES if m != "passthru")
MAX_POLICY_BYTES = 1 << 20
KEYS = (
    "allowedMasters",
    "allowedModes",
    "allowedAddressRanges",
    "allowedDestinationRanges",
    "logDirectories",
    "addressConflictDetection",
)


class Policy(Record):
    """A node policy; None for a key means "anything" (or the built-in default)."""

    path: str
    present: bool = False
    problem: str = ""  # why the file was refused: every ADD and CHECK then fails
    allowed_masters: Optional[Tuple[str, ...]] = None
    allowed_modes: Tuple[str, ...] = DEFAULT_MODES
    allowed_address_ranges: Optional[Tuple[IPNetwork, ...]] = None
    allowed_destination_ranges: Optional[Tuple[IPNetwork, ...]] = None
    log_directories: Optional[Tuple[str, ...]] = None
    address_conflict_detection: bool = False

    def violations(self, conf: NetConf, master: Optional[str] = None) -> List[str]:
        """Every way CONF (attached to MASTER, when known) breaks this policy, each naming file, key and value."""
        if self.problem:
            return [self.problem]
        found: List[str] = []

        def deny(key: str, what: str, allowed: Sequence[Any]) -> None:
            shown = ", ".join(str(a) for a in allowed) or "nothing"
            found.append(f"{self.path}: {key} does not allow {what} (allowed: {shown})")

        master = master or conf.master
        if self.allowed_masters is not None and master is not None and master not in self.allowed_masters:
            deny("allowedMasters", f"master {master!r}", self.allowed_masters)
        if conf.mode not in self.allowed_modes:
            deny("allowedModes", f"interfaceArgs.mode {conf.mode!r}", self.allowed_modes)
        if self.allowed_address_ranges is not None:
            for address in conf.addresses:
                if not _contained(address.ip, self.allowed_address_ranges):
                    deny("allowedAddressRanges", f"reserved address {address}", self.allowed_address_ranges)
        if self.allowed_destination_ranges is not None:
            for dest in conf.destinations:
                if not _contained(dest.address, self.allowed_destination_ranges):
                    what = "fallback" if dest.is_fallback else "destination"
                    deny("allowedDestinationRanges", f"{what} {dest.describe()!r}", self.allowed_destination_ranges)
        return found

    def enforce(self, conf: NetConf, master: Optional[str] = None) -> None:
        """Raise PolicyViolation (106) for the first violation: ADD calls this before changing anything."""
        found = self.violations(conf, master)
        if found:
            what = "node policy file refused" if self.problem else "the node policy forbids this config"
            raise PolicyViolation(what, found[0] + ("" if len(found) == 1 else f" (and {len(found) - 1} more)"))

    def conflict_detection(self, conf: NetConf) -> bool:
        """Probe for address conflicts? The config decides; without the key, the policy's default."""
        if conf.conflict_detection is not None:
            return conf.conflict_detection
        return self.address_conflict_detection


def _contained(address: Any, ranges: Sequence[IPNetwork]) -> bool:
    return any(address in net for net in ranges)


def policy_path() -> str:
    """Where this node's policy is read from: $EGRESS_ROUTER_POLICY, else /etc/egress-router/policy.json."""
    return os.environ.get(POLICY_ENV) or DEFAULT_POLICY_FILE


_loaded: Optional[Policy] = None


def node_policy() -> Policy:
    """This node's policy, read once per process."""
    global _loaded
    if _loaded is None:
        _loaded = load_policy(policy_path())
    return _loaded


def load_policy(path: str) -> Policy:
    """Read the policy at PATH; a missing file is the default policy, a refused one carries its problem."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        return Policy(path=path)
    except OSError as e:
        return Policy(path=path, present=True, problem=f"{path}: cannot open the policy file ({e.strerror})")
    try:
        st = os.fstat(fd)
        reason = _unsafe_file_reason(st)
        if reason:
            return Policy(path=path, present=True, problem=f"{path}: {reason}")
        data = os.read(fd, MAX_POLICY_BYTES + 1)
    except OSError as e:
        return Policy(path=path, present=True, problem=f"{path}: cannot read the policy file ({e.strerror})")
    finally:
        os.close(fd)
    try:
        return parse_policy(data, path)
    except ValueError as e:
        return Policy(path=path, present=True, problem=f"{path}: {e}")


def _unsafe_file_reason(st: os.stat_result) -> str:
    if not stat.S_ISREG(st.st_mode):
        return "it is not a regular file"
    if st.st_uid != 0:
        return f"it is owned by uid {st.st_uid}, not root"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"it is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    return ""


def parse_policy(data: bytes, path: str) -> Policy:
    """Parse policy JSON; raise ValueError naming the key. Unknown keys are refused: a typo must not open the node."""
    if len(data) > MAX_POLICY_BYTES:
        raise ValueError(f"the policy file is larger than {MAX_POLICY_BYTES} bytes")
    try:
        obj = loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ValueError(f"not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise ValueError("expected a JSON object")
    unknown = sorted(set(obj) - set(KEYS))
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} (known: {', '.join(KEYS)})")
    masters = _checked(obj, "allowedMasters", valid_ifname, "is not an interface name")
    modes = _strings(obj, "allowedModes")
    modes = [m.lower() for m in modes] if modes is not None else None
    _first_bad("allowedModes", modes, lambda m: m in MACVLAN_MODES, f"is not one of {', '.join(MACVLAN_MODES)}")
    dirs = _checked(obj, "logDirectories", _normal_absolute, "is not an absolute path without '.', '..' or '//'")
    acd = obj.get("addressConflictDetection", False)
    if not isinstance(acd, bool):
        raise ValueError("addressConflictDetection: expected true or false")
    return Policy(
        path=path,
        present=True,
        allowed_masters=tuple(masters) if masters is not None else None,
        allowed_modes=tuple(modes) if modes is not None else DEFAULT_MODES,
        allowed_address_ranges=_ranges(obj, "allowedAddressRanges"),
        allowed_destination_ranges=_ranges(obj, "allowedDestinationRanges"),
        log_directories=tuple(d.rstrip("/") or "/" for d in dirs) if dirs is not None else None,
        address_conflict_detection=acd,
    )


def _strings(obj: Any, key: str) -> Optional[List[str]]:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{key}: expected a list of strings")
    return list(value)


def _checked(obj: Any, key: str, valid: Callable[[str], bool], problem: str) -> Optional[List[str]]:
    values = _strings(obj, key)
    _first_bad(key, values, valid, problem)
    return values


def _first_bad(key: str, values: Optional[List[str]], valid: Callable[[str], bool], problem: str) -> None:
    bad = next((v for v in values or () if not valid(v)), None)
    if bad is not None:
        raise ValueError(f"{key}: {bad!r} {problem}")


def _ranges(obj: Any, key: str) -> Optional[Tuple[IPNetwork, ...]]:
    values = _strings(obj, key)
    if values is None:
        return None
    nets = []
    for value in values:
        try:
            nets.append(ip_network(value.strip()))
        except ValueError:
            raise ValueError(f"{key}: {value[:64]!r} is not a CIDR") from None
    return tuple(nets)


def _normal_absolute(path: str) -> bool:
    if not path.startswith("/") or "\0" in path:
        return False
    return path == "/" or all(p not in ("", ".", "..") for p in path.rstrip("/").split("/")[1:])
