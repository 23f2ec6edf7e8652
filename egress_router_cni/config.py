"""Parse and validate the plugin's network configuration (pure: no I/O, no kernel).

Keys follow openshift/egress-router-cni and what the operator renders, so an
existing NetworkAttachmentDefinition works unchanged.
"""

from __future__ import annotations

from .errors import DecodingFailure, IncompatibleVersion, InvalidConfig, UnsupportedField
from .ipaddr import IPAddress as IPAddress  # re-exported: the address types of NetConf
from .ipaddr import IPInterface as IPInterface
from .ipaddr import ip_address, ip_interface
from .jsonio import dumps, loads
from .record import Record
from .state import BACKENDS, FAMILIES
from .versions import SUPPORTED_VERSIONS as SUPPORTED_VERSIONS  # re-exported for callers

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Set, Tuple

DEFAULT_LOG_FILE = "/tmp/egress-router-log"
LOG_LEVELS = ("debug", "verbose", "error", "panic")
# The config's macvlan mode names (any case) and the kernel's IFLA_MACVLAN_MODE value of each.
MACVLAN_MODES = {"bridge": 4, "private": 1, "vepa": 2, "passthru": 8}
NAT_BACKENDS = ("auto", *BACKENDS)
PROTOCOLS = ("tcp", "udp", "sctp")
# Far above any real router (the operator renders one rule per Service port),
# low enough that a hostile config cannot make one ADD run for minutes.
MAX_DESTINATIONS = 4096
# A router needs one reserved address per family, rarely a few: 8 per family
# is generous, and keeps every per-address step (parse, netlink, CHECK) tiny.
MAX_ADDRESSES_PER_FAMILY = 8
MAX_CONFIG_BYTES = 1 << 20
# IPv4 address conflict detection (RFC 5227 probes): how long ADD listens for an answer.
DEFAULT_CONFLICT_WINDOW_MS = 200
CONFLICT_WINDOW_RANGE = (10, 5000)

# What libcni requires of a network name (and the spec of a container ID), as the messages spell it.
NAME_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$"
ASCII_ALNUM = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_NAME_CHARS = ASCII_ALNUM | frozenset("_.-")
_GRAMMAR = "IP[/prefix], 'PORT PROTO IP[/prefix]' or 'PORT PROTO IP[/prefix] TARGETPORT' (PROTO: tcp, udp or sctp)"


# Record (a NamedTuple to mypy), not @dataclass: dataclasses imports inspect, ~12 ms of every plugin exec.
class Destination(Record):
    """One redirect rule: traffic arriving on the pod interface [to PORT/PROTO] goes to ADDRESS[:TARGET]."""

    raw: str
    address: IPAddress
    port: Optional[int] = None
    protocol: Optional[str] = None
    target_port: Optional[int] = None

    @property
    def is_fallback(self) -> bool:
        """True for the bare-address entry that takes every port not matched before it."""
        return self.port is None

    @property
    def version(self) -> int:
        """4 or 6: the family of the destination address."""
        return self.address.version

    def describe(self) -> str:
        """The upstream log spelling: 'PORT PROTO IP[/prefix] [TARGET]' or the bare IP, as written."""
        return " ".join(self.raw.split())


class NetConf(Record):
    """A validated plugin configuration."""

    cni_version: str
    name: str
    addresses: Tuple[IPInterface, ...]
    gateways: Tuple[IPAddress, ...]
    destinations: Tuple[Destination, ...]
    master: Optional[str] = None
    mode: str = "bridge"
    mtu: int = 0
    pod_interface: str = "eth0"
    log_file: str = DEFAULT_LOG_FILE
    log_level: str = "debug"
    log_format: str = "text"
    nat_backend: str = "auto"
    dns: Optional[Dict[str, Any]] = None
    prev_result: Optional[Dict[str, Any]] = None
    # None: the node policy's default. The window bounds what the probe adds to ADD.
    conflict_detection: Optional[bool] = None
    conflict_window_ms: int = DEFAULT_CONFLICT_WINDOW_MS

    def gateway_for(self, version: int) -> Optional[IPAddress]:
        """The gateway of that family, or None when the config has none."""
        return next((g for g in self.gateways if g.version == version), None)

    def families(self) -> Tuple[int, ...]:
        """Address families that have a reserved address, in config order."""
        seen: List[int] = []
        for a in self.addresses:
            if a.version not in seen:
                seen.append(a.version)
        return tuple(seen)

    def routed_families(self) -> Tuple[int, ...]:
        """Families with a gateway: they get the default route, forwarding and NAT."""
        return tuple(f for f in self.families() if self.gateway_for(f) is not None)

    def address_for(self, version: int) -> Optional[IPInterface]:
        """The reserved address of a family used for SNAT: the first one configured."""
        return next((a for a in self.addresses if a.version == version), None)


def decode_json(data: bytes) -> Dict[str, Any]:
    """Decode stdin bytes into a JSON object; raise DecodingFailure (code 6) otherwise."""
    if len(data) > MAX_CONFIG_BYTES:
        raise InvalidConfig(
            "network configuration too large", f"{len(data)} bytes; the limit is {MAX_CONFIG_BYTES} bytes"
        )
    try:
        obj = loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise DecodingFailure("error unmarshalling network config", str(e)) from None
    if not isinstance(obj, dict):
        raise DecodingFailure("error unmarshalling network config", f"expected a JSON object, got {type(obj).__name__}")
    return obj


def check_version(obj: Dict[str, Any]) -> str:
    """Return the config's cniVersion (0.1.0 when absent, as libcni does); raise if unsupported."""
    version = obj.get("cniVersion", "0.1.0")
    if version in ("", None):
        version = "0.1.0"
    if not isinstance(version, str):
        raise DecodingFailure("invalid cniVersion", f"expected a string, got {dumps(version)[:64]}")
    if version not in SUPPORTED_VERSIONS:
        raise IncompatibleVersion(
            "incompatible CNI versions",
            f"config is {version[:32]!r}, plugin supports {list(SUPPORTED_VERSIONS)}",
        )
    return version


def check_name(obj: Dict[str, Any]) -> str:
    """The network name, checked as libcni does; raise InvalidConfig otherwise."""
    name = obj.get("name")
    if not isinstance(name, str) or not matches_name_pattern(name):
        shown = dumps(name)[:80]
        raise InvalidConfig(
            "invalid network name",
            f"'name' is {shown}; it must match {NAME_PATTERN} (letters, digits, '_', '.', '-')",
        )
    return name


def matches_name_pattern(text: str) -> bool:
    """True when NAME_PATTERN matches the whole of text (plain string checks: `re` costs ~13 ms per exec)."""
    return text[:1] in ASCII_ALNUM and all(c in _NAME_CHARS for c in text)


def _ascii_digits(text: str) -> bool:
    """One or more of 0-9 and nothing else (str.isdigit alone also takes other scripts' digits)."""
    return text.isascii() and text.isdigit()


def parse_netconf(obj: Dict[str, Any]) -> NetConf:
    """Validate a decoded plugin config; raise InvalidConfig (7) or UnsupportedField (2).

    Keys are checked in a fixed order, so the same bad config always names the same key.
    """
    version = check_version(obj)
    name = check_name(obj)
    _check_kind(obj)
    addresses, gateways, destinations = _parse_ip(obj)
    master, mode, mtu = _parse_interface_args(obj)
    pod_interface = _given(obj, "podInterface", "eth0")
    if not isinstance(pod_interface, str) or not valid_ifname(pod_interface):
        raise InvalidConfig("invalid podInterface", f"{dumps(pod_interface)[:64]} is not an interface name")
    log_file, log_level, log_format = _parse_logging(obj)
    backend = _given(obj, "natBackend", "auto")
    if not isinstance(backend, str) or backend not in NAT_BACKENDS:
        raise InvalidConfig("invalid natBackend", f"{dumps(backend)[:64]} is not one of {', '.join(NAT_BACKENDS)}")
    dns = obj.get("dns")
    if dns is not None and not isinstance(dns, dict):
        raise InvalidConfig("invalid dns", "'dns' must be an object (nameservers, domain, search, options)")
    prev = obj.get("prevResult")
    if prev is not None and not isinstance(prev, dict):
        raise InvalidConfig("invalid prevResult", "'prevResult' must be an object")
    conflict_detection, window = _parse_conflict_detection(obj)
    return NetConf(
        cni_version=version,
        name=name,
        addresses=addresses,
        gateways=gateways,
        destinations=destinations,
        master=master,
        mode=mode,
        mtu=mtu,
        pod_interface=pod_interface,
        log_file=log_file,
        log_level=log_level,
        log_format=log_format,
        nat_backend=backend,
        dns=dns or None,
        prev_result=prev or None,
        conflict_detection=conflict_detection,
        conflict_window_ms=window,
    )


def _check_kind(obj: Dict[str, Any]) -> None:
    """The config is for this plugin and in its shape: type, no upstream-only fields, a macvlan."""
    plugin_type = obj.get("type")
    if plugin_type not in (None, "egress-router"):
        # cnitool/libcni dispatch on "type"; anything else reaching us is a mis-wired config.
        raise InvalidConfig("unexpected plugin type", f"'type' is {dumps(plugin_type)[:64]}, expected 'egress-router'")
    for key in ("podIP", "ipConfig"):
        if key in obj:
            raise UnsupportedField(
                f"unsupported field {key!r}",
                f"{key!r} (value {dumps(obj[key])[:80]}) is not supported: put the reserved addresses, "
                "gateway and destinations in the 'ip' object",
            )
    interface_type = obj.get("interfaceType", "macvlan")
    if interface_type not in ("macvlan", "", None):
        raise InvalidConfig(
            "unsupported interfaceType",
            f"'interfaceType' is {dumps(interface_type)[:64]}; only 'macvlan' is supported",
        )


def _parse_ip(
    obj: Dict[str, Any],
) -> Tuple[Tuple[IPInterface, ...], Tuple[IPAddress, ...], Tuple[Destination, ...]]:
    """The 'ip' object: reserved addresses, gateways, destinations (with fallbackIP appended)."""
    ip = obj.get("ip")
    if not isinstance(ip, dict):
        raise InvalidConfig(
            "missing 'ip' object",
            'the config needs "ip": {"addresses": ["192.168.12.99/24"], "gateway": "192.168.12.1", '
            '"destinations": [...]}',
        )
    addresses = _parse_addresses(ip.get("addresses"))
    gateways = _parse_gateways(ip.get("gateway"), addresses)
    # A family without a gateway keeps the pod's own routing: nothing to redirect to.
    families = {g.version for g in gateways}
    destinations = parse_destinations(ip.get("destinations", []), families)
    fallback = ip.get("fallbackIP")
    if fallback not in (None, ""):
        destinations = _append_fallback_ip(destinations, fallback, families)
    return addresses, gateways, destinations


def _parse_interface_args(obj: Dict[str, Any]) -> Tuple[Optional[str], str, int]:
    """interfaceArgs: (master or None, the macvlan mode in lower case, mtu or 0)."""
    args = _given(obj, "interfaceArgs", {})
    if not isinstance(args, dict):
        raise InvalidConfig("invalid interfaceArgs", "'interfaceArgs' must be an object with master, mode, mtu")
    master = _given(args, "master", None)
    if master is not None and not (isinstance(master, str) and valid_ifname(master)):
        raise InvalidConfig("invalid interfaceArgs.master", f"{dumps(master)[:64]} is not an interface name")
    mode = _given(args, "mode", "bridge")
    if not isinstance(mode, str) or mode.lower() not in MACVLAN_MODES:
        raise InvalidConfig(
            "invalid interfaceArgs.mode",
            f"{dumps(mode)[:64]} is not one of {', '.join(MACVLAN_MODES)} (any case)",
        )
    return master, mode.lower(), _parse_mtu(args.get("mtu"))


def _parse_logging(obj: Dict[str, Any]) -> Tuple[str, str, str]:
    """(log_file, log_level in lower case, log_format)."""
    log_file = _given(obj, "log_file", DEFAULT_LOG_FILE)
    if not isinstance(log_file, str) or "\0" in log_file:
        raise InvalidConfig("invalid log_file", "'log_file' must be an absolute path")
    log_level = _given(obj, "log_level", "debug")
    if not isinstance(log_level, str) or log_level.lower() not in LOG_LEVELS:
        raise InvalidConfig("invalid log_level", f"{dumps(log_level)[:64]} is not one of {', '.join(LOG_LEVELS)}")
    log_format = _given(obj, "log_format", "text")
    if not isinstance(log_format, str) or log_format not in ("text", "json"):
        raise InvalidConfig("invalid log_format", f"{dumps(log_format)[:64]} is not 'text' or 'json'")
    return log_file, log_level.lower(), log_format


def _parse_conflict_detection(obj: Dict[str, Any]) -> Tuple[Optional[bool], int]:
    """(addressConflictDetection or None for the policy's default, the probe window in ms)."""
    conflict_detection = obj.get("addressConflictDetection")
    if conflict_detection is not None and not isinstance(conflict_detection, bool):
        raise InvalidConfig(
            "invalid addressConflictDetection", f"{dumps(conflict_detection)[:32]} is not true or false"
        )
    window = obj.get("addressConflictDetectionWindowMs", DEFAULT_CONFLICT_WINDOW_MS)
    low, high = CONFLICT_WINDOW_RANGE
    if isinstance(window, bool) or not isinstance(window, int) or not low <= window <= high:
        raise InvalidConfig(
            "invalid addressConflictDetectionWindowMs", f"{dumps(window)[:32]} is not a whole number {low}-{high}"
        )
    return conflict_detection, window


def _given(obj: Dict[str, Any], key: str, default: Any) -> Any:
    """obj[key] as written, or default when it is absent, null or "".

    Only those three mean "use the default": false, 0, [] or {} are values of
    the wrong type and reach the caller's type check (a plain `or default`
    would take them silently for the default).
    """
    value = obj.get(key)
    if value is None or (isinstance(value, str) and value == ""):
        return default
    return value


def valid_ifname(name: str) -> bool:
    """Linux interface name rules (dev_valid_name): 1-15 bytes, not '.'/'..', no '/', ':' or whitespace."""
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        return False
    if not 1 <= size <= 15 or name in (".", ".."):
        return False
    return not any(c in "/:" or c.isspace() or c == "\0" for c in name)


def _parse_addresses(value: Any) -> Tuple[IPInterface, ...]:
    if not isinstance(value, list) or not value:
        raise InvalidConfig(
            "missing reserved address",
            "'ip.addresses' must be a non-empty list of CIDRs, e.g. [\"192.168.12.99/24\"]",
        )
    if len(value) > 2 * MAX_ADDRESSES_PER_FAMILY:
        # Refused before parsing anything: the cost of a hostile list stays constant.
        raise InvalidConfig(
            "too many reserved addresses",
            f"{len(value)} entries in 'ip.addresses'; the limit is {MAX_ADDRESSES_PER_FAMILY} per address family",
        )
    result: List[IPInterface] = []
    seen: Set[IPInterface] = set()
    per_family = {4: 0, 6: 0}
    for item in value:
        if not isinstance(item, str) or "/" not in item:
            raise InvalidConfig(
                "invalid reserved address",
                f"{dumps(item)[:64]} in 'ip.addresses' is not a CIDR such as \"192.168.12.99/24\"",
            )
        try:
            iface = ip_interface(_unscoped(item.strip()))
        except ValueError:
            raise InvalidConfig(
                "invalid reserved address",
                f"{item[:64]!r} in 'ip.addresses' is not a CIDR such as \"192.168.12.99/24\"",
            ) from None
        if iface.ip.is_multicast or iface.ip.is_unspecified or iface.ip.is_loopback:
            raise InvalidConfig("invalid reserved address", f"{item!r} cannot be used as a source address")
        if iface in seen:
            raise InvalidConfig("duplicate reserved address", f"{item!r} appears twice in 'ip.addresses'")
        per_family[iface.version] += 1
        if per_family[iface.version] > MAX_ADDRESSES_PER_FAMILY:
            raise InvalidConfig(
                "too many reserved addresses",
                f"more than {MAX_ADDRESSES_PER_FAMILY} IPv{iface.version} addresses in 'ip.addresses'",
            )
        seen.add(iface)
        result.append(iface)
    return tuple(result)


def _parse_gateways(value: Any, addresses: Tuple[IPInterface, ...]) -> Tuple[IPAddress, ...]:
    items = value if isinstance(value, list) else [value]
    if value in (None, "", []):
        raise InvalidConfig(
            "missing gateway",
            "'ip.gateway' is required: the router's default route points at it, e.g. \"192.168.12.1\"",
        )
    gateways: List[IPAddress] = []
    for item in items:
        try:
            gw = ip_address(_unscoped(item.strip()) if isinstance(item, str) else "")
        except ValueError:
            raise InvalidConfig("invalid gateway", f"{dumps(item)[:64]} in 'ip.gateway' is not an IP address") from None
        if any(g.version == gw.version for g in gateways):
            raise InvalidConfig("invalid gateway", f"'ip.gateway' has more than one IPv{gw.version} gateway")
        on_link = [a for a in addresses if a.version == gw.version]
        if not on_link:
            raise InvalidConfig(
                "invalid gateway",
                f"gateway {gw} is IPv{gw.version} but 'ip.addresses' has no IPv{gw.version} address",
            )
        if gw in [a.ip for a in on_link]:
            raise InvalidConfig("invalid gateway", f"gateway {gw} is the reserved address itself")
        gateways.append(gw)
    return tuple(gateways)


def _parse_mtu(value: Any) -> int:
    if isinstance(value, bool):  # `False == 0`, and int(True) is 1: neither is an MTU
        raise InvalidConfig("invalid interfaceArgs.mtu", f"{dumps(value)} is not a whole number")
    if value is None or (isinstance(value, (int, str)) and value in ("", 0)):
        return 0
    text = str(value) if isinstance(value, (int, str)) and not isinstance(value, bool) else None
    if text is None or not _ascii_digits(text.strip()):
        raise InvalidConfig("invalid interfaceArgs.mtu", f"{dumps(value)[:32]} is not a whole number")
    mtu = int(text)
    if not 68 <= mtu <= 65535:
        raise InvalidConfig("invalid interfaceArgs.mtu", f"{mtu} is outside 68-65535")
    return mtu


def parse_destination(entry: str) -> Destination:
    """Parse one destination string; raise InvalidConfig quoting it."""
    fields = entry.split()
    if len(fields) == 1:
        return Destination(raw=entry, address=_dest_address(entry, fields[0]))
    if len(fields) not in (3, 4):
        raise InvalidConfig("invalid destination", f"{entry!r} has {len(fields)} fields; expected {_GRAMMAR}")
    port = _port(entry, fields[0], "port")
    proto = fields[1].lower()
    if proto not in PROTOCOLS:
        raise InvalidConfig(
            "invalid destination",
            f"{entry!r}: protocol {fields[1]!r} is not tcp, udp or sctp; expected {_GRAMMAR}",
        )
    address = _dest_address(entry, fields[2])
    target = _port(entry, fields[3], "target port") if len(fields) == 4 else None
    return Destination(raw=entry, address=address, port=port, protocol=proto, target_port=target)


def parse_destinations(value: Any, families: Any = FAMILIES) -> Tuple[Destination, ...]:
    """Parse and cross-check the destination list (fallback last, unique PORT/PROTO, per family)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidConfig("invalid ip.destinations", f"expected a list of strings; expected entries: {_GRAMMAR}")
    if len(value) > MAX_DESTINATIONS:
        raise InvalidConfig(
            "too many destinations",
            f"{len(value)} entries in 'ip.destinations'; the limit is {MAX_DESTINATIONS}",
        )
    result: List[Destination] = []
    for item in value:
        if not isinstance(item, str):
            raise InvalidConfig("invalid destination", f"{dumps(item)[:64]} is not a string; expected {_GRAMMAR}")
        if item.strip().startswith("#"):
            continue  # comment lines, as the legacy EGRESS_DESTINATION grammar allowed
        if not item.strip():
            raise InvalidConfig("invalid destination", f"empty entry in 'ip.destinations'; expected {_GRAMMAR}")
        result.append(parse_destination(item))
    _cross_check(result, families)
    return tuple(result)


def _append_fallback_ip(dests: Tuple[Destination, ...], value: Any, families: Any) -> Tuple[Destination, ...]:
    if not isinstance(value, str):
        raise InvalidConfig("invalid ip.fallbackIP", f"{dumps(value)[:64]} is not an IP address")
    try:
        address = ip_address(_unscoped(value.strip()))
    except ValueError:
        raise InvalidConfig("invalid ip.fallbackIP", f"{value[:64]!r} is not an IP address") from None
    fallback = Destination(raw=str(address), address=address)
    for d in dests:
        if d.is_fallback and d.version == address.version:
            raise InvalidConfig(
                "conflicting fallback",
                f"both 'ip.fallbackIP' ({value}) and the fallback destination {d.raw!r} are set; keep one",
            )
    result = [*dests, fallback]
    _cross_check(result, families)
    return tuple(result)


def _cross_check(dests: List[Destination], families: Any) -> None:
    seen: Dict[Tuple[int, int, str], str] = {}
    fallback_seen: Dict[int, str] = {}
    for d in dests:
        if d.version not in families:
            raise InvalidConfig(
                "invalid destination",
                f"{d.raw!r} is IPv{d.version} but there is no IPv{d.version} reserved address with a gateway "
                "in 'ip.addresses' and 'ip.gateway'",
            )
        if d.version in fallback_seen:
            raise InvalidConfig(
                "invalid destination",
                f"fallback destination {fallback_seen[d.version]!r} must be the last IPv{d.version} entry, "
                f"but {d.raw!r} follows it",
            )
        if d.is_fallback:
            fallback_seen[d.version] = d.raw
            continue
        assert d.port is not None and d.protocol is not None
        key = (d.version, d.port, d.protocol)
        if key in seen:
            raise InvalidConfig(
                "duplicate destination port",
                f"{d.raw!r} and {seen[key]!r} both redirect {d.protocol} port {d.port}; "
                "each PORT PROTO pair may appear once",
            )
        seen[key] = d.raw


def _port(entry: str, text: str, what: str) -> int:
    # 1 to 5 ASCII digits, without a regular expression: 1000 destinations call this 2000 times.
    if not (text.isascii() and text.isdigit() and len(text) <= 5) or not 1 <= int(text) <= 65535:
        raise InvalidConfig("invalid destination", f"{entry!r}: {what} {text!r} is not a number from 1 to 65535")
    return int(text)


def _dest_address(entry: str, text: str) -> IPAddress:
    try:
        # The upstream docs show "203.0.113.26/30": the prefix is accepted, the
        # DNAT target is the address itself.
        # Without a prefix, ip_address accepts exactly what ip_interface does, at half the cost.
        plain = _unscoped(text)
        ip = ip_interface(plain).ip if "/" in plain else ip_address(plain)
    except ValueError:
        raise InvalidConfig(
            "invalid destination", f"{entry!r}: {text!r} is not an IP address; expected {_GRAMMAR}"
        ) from None
    if ip.is_unspecified or ip.is_multicast:
        raise InvalidConfig("invalid destination", f"{entry!r}: {ip} cannot be a DNAT target")
    return ip


def _unscoped(text: str) -> str:
    """Refuse IPv6 zone ids ('fe80::1%eth0'): Python parses them, the kernel and nft rules have no place for them."""
    if "%" in text:
        raise ValueError("zone ids are not supported")
    return text


def parse_cni_args(value: str) -> Dict[str, str]:
    """Parse CNI_ARGS 'K=V;K=V'. Unknown keys are kept (and ignored by callers): Kubernetes sends K8S_POD_*."""
    args: Dict[str, str] = {}
    for pair in value.split(";"):
        if not pair:
            continue
        key, sep, val = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"invalid CNI_ARGS pair {pair[:64]!r}: expected KEY=VALUE")
        args[key] = val
    return args
