"""CNI results: built in the current (1.1.0) shape, printed in the config's cniVersion."""

from __future__ import annotations

from .config import NetConf
from .errors import DecodingFailure, InvalidConfig
from .ipaddr import ip_address, ip_interface, ip_network
from .jsonio import dumps
from .record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional


# Record (a NamedTuple to mypy), not @dataclass: dataclasses imports inspect, ~12 ms of every plugin exec.
class Interface(Record):
    name: str
    mac: str = ""
    sandbox: str = ""


class IPConfig(Record):
    address: str  # CIDR, e.g. "192.168.12.99/24"
    gateway: str = ""
    interface: Optional[int] = None

    @property
    def version(self) -> int:
        """4 or 6: the family of the address."""
        return ip_interface(self.address).version


class Route(Record):
    dst: str
    gw: str = ""


class Result:
    """A result under construction (mutable): interfaces, IPs, routes and DNS."""

    def __init__(
        self,
        interfaces: Optional[List[Interface]] = None,
        ips: Optional[List[IPConfig]] = None,
        routes: Optional[List[Route]] = None,
        dns: Optional[Dict[str, Any]] = None,
    ) -> None:
        self.interfaces: List[Interface] = list(interfaces or [])
        self.ips: List[IPConfig] = list(ips or [])
        self.routes: List[Route] = list(routes or [])
        self.dns = dns

    def _key(self) -> Any:
        return (self.interfaces, self.ips, self.routes, self.dns)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Result) and self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"Result(interfaces={self.interfaces!r}, ips={self.ips!r}, routes={self.routes!r}, dns={self.dns!r})"

    def to_dict(self, cni_version: str) -> Dict[str, Any]:
        """Render in exactly the format of cni_version, with that cniVersion string."""
        if cni_version in ("0.1.0", "0.2.0"):
            return self._to_020(cni_version)
        out: Dict[str, Any] = {"cniVersion": cni_version}
        if self.interfaces:
            out["interfaces"] = [_iface_dict(i) for i in self.interfaces]
        ips = []
        for ip in self.ips:
            entry: Dict[str, Any] = {}
            if cni_version in ("0.3.0", "0.3.1", "0.4.0"):
                entry["version"] = str(ip.version)
            entry["address"] = ip.address
            if ip.gateway:
                entry["gateway"] = ip.gateway
            if ip.interface is not None:
                entry["interface"] = ip.interface
            ips.append(entry)
        if ips:
            out["ips"] = ips
        if self.routes:
            out["routes"] = [_route_dict(r) for r in self.routes]
        out["dns"] = dict(self.dns) if self.dns else {}
        return out

    def _to_020(self, cni_version: str) -> Dict[str, Any]:
        # 0.1/0.2 carry only the first IP of each family (types020 conversion);
        # routes are split by family.
        out: Dict[str, Any] = {"cniVersion": cni_version}
        for version, key in ((4, "ip4"), (6, "ip6")):
            first = next((ip for ip in self.ips if ip.version == version), None)
            if first is None:
                continue
            block: Dict[str, Any] = {"ip": first.address}
            if first.gateway:
                block["gateway"] = first.gateway
            routes = [_route_dict(r) for r in self.routes if ip_network(r.dst).version == version]
            if routes:
                block["routes"] = routes
            out[key] = block
        if "ip4" not in out and "ip6" not in out:
            raise InvalidConfig("cannot convert: no valid IP addresses", f"result for cniVersion {cni_version}")
        if self.dns:
            out["dns"] = dict(self.dns)
        return out


def _iface_dict(i: Interface) -> Dict[str, Any]:
    d: Dict[str, Any] = {"name": i.name}
    if i.mac:
        d["mac"] = i.mac
    if i.sandbox:
        d["sandbox"] = i.sandbox
    return d


def _route_dict(r: Route) -> Dict[str, Any]:
    d: Dict[str, Any] = {"dst": r.dst}
    if r.gw:
        d["gw"] = r.gw
    return d


def parse_result(data: Dict[str, Any], cni_version: str) -> Result:
    """Parse a prevResult given in cni_version's format into the current shape.

    Every value's type is checked before the address parser, int() or a string method
    sees it: ipaddress took an int (and so False, True) as an address, and
    str() would turn any JSON value into some text. A wrong type is a code-6
    error naming the field.
    """
    try:
        if cni_version in ("0.1.0", "0.2.0") or (("ip4" in data or "ip6" in data) and "ips" not in data):
            return _parse_020(data)
        interfaces = []
        for n, i in enumerate(_list(data, "interfaces", "prevResult")):
            where = f"prevResult.interfaces[{n}]"
            item = _object(i, where)
            interfaces.append(
                Interface(
                    name=_string(item.get("name"), f"{where}.name"),
                    mac=_optional_string(item.get("mac"), f"{where}.mac"),
                    sandbox=_optional_string(item.get("sandbox"), f"{where}.sandbox"),
                )
            )
        ips = []
        for n, ip in enumerate(_list(data, "ips", "prevResult")):
            where = f"prevResult.ips[{n}]"
            item = _object(ip, where)
            address = _string(item.get("address"), f"{where}.address")
            ip_interface(address)
            ips.append(
                IPConfig(
                    address=address,
                    gateway=_checked_gateway(item.get("gateway"), f"{where}.gateway"),
                    interface=_interface_index(item.get("interface"), f"{where}.interface"),
                )
            )
        routes = [_parse_route(r, f"prevResult.routes[{n}]") for n, r in enumerate(_list(data, "routes", "prevResult"))]
        dns = data.get("dns") or None
        return Result(interfaces=interfaces, ips=ips, routes=routes, dns=dns if isinstance(dns, dict) else None)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:
        # OverflowError: "interface": 1e999 decodes to infinity, which int() refuses.
        raise DecodingFailure("failed to parse prevResult", f"{type(e).__name__}: {e}") from None


def _parse_020(data: Dict[str, Any]) -> Result:
    result = Result()
    for key in ("ip4", "ip6"):
        block = data.get(key)
        if block is None or block == {}:
            continue
        where = f"prevResult.{key}"
        block = _object(block, where)
        address = _string(block.get("ip"), f"{where}.ip")
        ip_interface(address)
        gateway = _checked_gateway(block.get("gateway"), f"{where}.gateway")
        result.ips.append(IPConfig(address=address, gateway=gateway))
        routes = _list(block, "routes", where)
        result.routes.extend(_parse_route(r, f"{where}.routes[{n}]") for n, r in enumerate(routes))
    dns = data.get("dns")
    result.dns = dns if isinstance(dns, dict) and dns else None
    return result


def _parse_route(r: Any, where: str) -> Route:
    """A prevResult route, validated: it is printed again and converted between versions."""
    item = _object(r, where)
    dst = _string(item.get("dst"), f"{where}.dst")
    gw = _checked_gateway(item.get("gw"), f"{where}.gw")
    ip_network(dst)
    return Route(dst=dst, gw=gw)


def _checked_gateway(value: Any, where: str) -> str:
    gw = _optional_string(value, where)
    if gw:
        ip_address(gw)
    return gw


# --- type checks: each raises DecodingFailure naming the field and what it holds --------------


def _wrong_type(value: Any, where: str, expected: str) -> DecodingFailure:
    shown = dumps(value)[:64]
    return DecodingFailure("failed to parse prevResult", f"{where} is {shown}; expected {expected}")


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise _wrong_type(value, where, "a string")
    return value


def _optional_string(value: Any, where: str) -> str:
    """A string that may be absent or null ("" then)."""
    return "" if value is None else _string(value, where)


def _object(value: Any, where: str) -> Dict[str, Any]:
    if not isinstance(value, dict):
        raise _wrong_type(value, where, "an object")
    return value


def _list(container: Dict[str, Any], key: str, where: str) -> List[Any]:
    """container[key] as a list; absent or null is an empty list."""
    value = container.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _wrong_type(value, f"{where}.{key}", "a list")
    return value


def _interface_index(value: Any, where: str) -> Optional[int]:
    if value is None:
        return None
    # Any whole number, -1 included (tolerated as before: it only goes back out in the result).
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong_type(value, where, "an index into interfaces (a whole number)")
    return value


DEFAULT_ROUTE = {4: "0.0.0.0/0", 6: "::/0"}


def chained_result(prev: Optional[Dict[str, Any]], cni_version: str, netns: str) -> Optional[Result]:
    """The previous plugin's result an ADD extends, parsed and checked; None when ADD is not chained.

    Called before the first kernel change: a prevResult that cannot be printed
    again fails ADD while the pod is still untouched. Chains exist from 0.3.0
    on; before that a prevResult is no part of the protocol and is ignored.
    The config author can write prevResult, so nothing in it is trusted:
    interface indexes must point into its own list, and an interface may only
    claim the pod's own namespace as its sandbox (a path there is later
    opened by whoever reads the cached result, e.g. `egress-router inspect`).
    """
    if not prev or cni_version in ("0.1.0", "0.2.0"):
        return None
    result = parse_result(prev, cni_version)
    for iface in result.interfaces:
        if iface.sandbox and iface.sandbox != netns:
            raise InvalidConfig(
                "invalid prevResult",
                f"interface {iface.name[:32]!r} has sandbox {iface.sandbox[:128]!r}; a chained result may only "
                f"name the pod's namespace (CNI_NETNS {netns!r})",
            )
    for ip in result.ips:
        if ip.interface is not None and not 0 <= ip.interface < len(result.interfaces):
            raise InvalidConfig(
                "invalid prevResult",
                f"address {ip.address} refers to interface {ip.interface}; prevResult lists "
                f"{len(result.interfaces)} interfaces",
            )
    return result


def router_result(conf: NetConf, ifname: str, netns: str, mac: str, prev: Optional[Result] = None) -> Result:
    """ADD's result: the previous plugins' (when chained) plus the router interface, addresses and routes."""
    result = Result(dns=conf.dns)
    if prev is not None:
        # Chained after another plugin: keep what it reported, append ours.
        result.interfaces.extend(prev.interfaces)
        result.ips.extend(prev.ips)
        result.routes.extend(r for r in prev.routes if r.dst not in DEFAULT_ROUTE.values())
        result.dns = conf.dns or prev.dns
    index = len(result.interfaces)
    result.interfaces.append(Interface(name=ifname, mac=mac, sandbox=netns))
    for address in conf.addresses:
        gateway = conf.gateway_for(address.version)
        result.ips.append(IPConfig(address=str(address), gateway=str(gateway) if gateway else "", interface=index))
    for gateway in conf.gateways:
        result.routes.append(Route(dst=DEFAULT_ROUTE[gateway.version], gw=str(gateway)))
    return result
