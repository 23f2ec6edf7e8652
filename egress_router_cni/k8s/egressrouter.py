"""Read EgressRouter manifests and validate them as the API server would.

The schema is the CRD's (openshift/api networkoperator/v1, group
network.operator.openshift.io). On top of it come the checks the plugin would
otherwise make only at ADD time, where a failure shows up as a pod stuck in
ContainerCreating: a gateway for the default route, one gateway per family,
destinations of a family that has a reserved address, each port/protocol once.
Every problem is reported with the field path that holds it, all at once, the
way the API server lists every invalid field of a rejected object.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple, Union

from ..config import valid_ifname

API_GROUP = "network.operator.openshift.io"
API_VERSION = f"{API_GROUP}/v1"
KIND = "EgressRouter"
ROUTER_MODES = ("Redirect",)
PROTOCOLS = ("TCP", "UDP", "SCTP")
MACVLAN_MODES = ("Bridge", "Private", "VEPA", "Passthru")

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPInterface = Union[ipaddress.IPv4Interface, ipaddress.IPv6Interface]

# PyYAML is a dependency; only a broken or hand-made environment lacks it.
_YAML_HINT = "this installation lacks PyYAML (pip install PyYAML), or give the manifest as JSON"


@dataclass(frozen=True)
class FieldError:
    """One invalid field: `path` as the API server spells it (spec.addresses[0].ip)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ManifestError(Exception):
    """The input is not a readable YAML/JSON stream of Kubernetes objects."""


class InvalidEgressRouter(Exception):
    """An EgressRouter the API server (or the plugin, at ADD time) would reject."""

    def __init__(self, where: str, errors: Sequence[FieldError]) -> None:
        super().__init__(where)
        self.where = where
        self.errors = tuple(errors)

    def __str__(self) -> str:
        lines = [f"{self.where}: invalid EgressRouter:"]
        lines.extend(f"  {e}" for e in self.errors)
        return "\n".join(lines)


@dataclass(frozen=True)
class RedirectRule:
    """spec.redirect.redirectRules[]: traffic to the router on port/protocol goes to destination_ip[:target_port]."""

    destination_ip: IPAddress
    port: int
    protocol: str
    target_port: Optional[int] = None

    def destination(self) -> str:
        """The plugin's destination string, 'PORT PROTO IP[ TARGETPORT]', as the operator renders it."""
        text = f"{self.port} {self.protocol} {self.destination_ip}"
        return text if self.target_port is None else f"{text} {self.target_port}"


@dataclass(frozen=True)
class RouterAddress:
    """spec.addresses[]: a reserved address (CIDR) and its optional gateway."""

    ip: IPInterface
    gateway: Optional[IPAddress] = None


@dataclass(frozen=True)
class EgressRouter:
    """A validated EgressRouter, with the API's defaults applied."""

    name: str
    addresses: Tuple[RouterAddress, ...]
    redirect_rules: Tuple[RedirectRule, ...] = ()
    fallback_ip: Optional[IPAddress] = None
    macvlan_mode: str = "Bridge"
    macvlan_master: Optional[str] = None
    namespace: Optional[str] = None
    uid: Optional[str] = None
    labels: Dict[str, str] = field(default_factory=dict)

    def gateways(self) -> Tuple[IPAddress, ...]:
        """One gateway per address family, in address order (validation guarantees no conflicts)."""
        result: List[IPAddress] = []
        for address in self.addresses:
            gateway = address.gateway
            if gateway is not None and all(g.version != gateway.version for g in result):
                result.append(gateway)
        return tuple(result)

    def display_name(self) -> str:
        """NAMESPACE/NAME, or NAME when the object has no namespace."""
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


@dataclass(frozen=True)
class Document:
    """One object from the input, with where it came from for error messages."""

    where: str
    obj: Dict[str, Any]


# --------------------------------------------------------------------------- reading


def load_documents(text: str, source: str) -> List[Any]:
    """Decode a JSON document or a YAML stream into its documents; raise ManifestError."""
    json_error: Optional[ValueError] = None
    if text.lstrip().startswith(("{", "[")):
        try:
            doc = json.loads(text)
        except ValueError as e:
            json_error = e  # may still be YAML flow style: let the YAML parser decide
        else:
            return list(doc) if isinstance(doc, list) else [doc]
    try:
        import yaml
    except ImportError:
        if json_error is not None:
            raise ManifestError(f"{source}: not valid JSON: {json_error}") from None
        raise ManifestError(f"{source}: reading YAML needs PyYAML: {_YAML_HINT}") from None
    try:
        return list(yaml.safe_load_all(text))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        if mark is None:
            raise ManifestError(f"{source}: not valid YAML: {e}") from None
        problem = getattr(e, "problem", None) or str(e)
        raise ManifestError(
            f"{source}: not valid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"
        ) from None


def find_egress_routers(docs: Sequence[Any], source: str) -> Tuple[List[Document], List[str]]:
    """Split documents into EgressRouters (Lists flattened) and descriptions of the skipped ones."""
    routers: List[Document] = []
    skipped: List[str] = []
    for number, doc in enumerate(docs, 1):
        where = f"{source}, document {number}" if len(docs) > 1 else source
        for item_where, item in _flatten(doc, where):
            if item is None:
                continue  # an empty document, e.g. after a trailing '---'
            if not isinstance(item, dict):
                raise ManifestError(f"{item_where}: expected a Kubernetes object, got {_type_name(item)}")
            if item.get("kind") == KIND:
                routers.append(Document(item_where, item))
            else:
                skipped.append(f"{item_where}: {_describe(item)}")
    return routers, skipped


def _flatten(doc: Any, where: str) -> Iterator[Tuple[str, Any]]:
    # `kubectl get egressrouters -o yaml` wraps objects in a List (kind List or EgressRouterList).
    if isinstance(doc, dict) and str(doc.get("kind", "")).endswith("List") and isinstance(doc.get("items"), list):
        for index, item in enumerate(doc["items"]):
            yield f"{where}, items[{index}]", item
    else:
        yield where, doc


def _describe(obj: Dict[str, Any]) -> str:
    meta = obj.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    return f"{obj.get('kind', '(no kind)')}/{name or '(no name)'} is not an {KIND}"


# --------------------------------------------------------------------------- validation


def parse_egress_router(obj: Dict[str, Any], where: str = KIND) -> EgressRouter:
    """Validate one EgressRouter object and apply the API defaults; raise InvalidEgressRouter."""
    errs: List[FieldError] = []
    _fields(obj, "", ("apiVersion", "kind", "metadata", "spec", "status"), errs)
    if obj.get("apiVersion") != API_VERSION:
        errs.append(FieldError("apiVersion", f"{_show(obj.get('apiVersion'))} is not {API_VERSION}"))
    name, namespace, uid, labels = _parse_metadata(obj.get("metadata"), errs)
    spec = _fields(obj.get("spec"), "spec", ("addresses", "mode", "networkInterface", "redirect"), errs)
    if spec is None:
        if obj.get("spec") is None:
            errs.append(FieldError("spec", "required"))
        spec = {}
    mode = _enum(spec.get("mode", "Redirect"), "spec.mode", ROUTER_MODES, errs)
    addresses, addresses_ok = _parse_addresses(spec.get("addresses"), errs)
    # The plugin redirects only in families that have a gateway (config.parse_netconf).
    families: Optional[Set[int]] = (
        {int(a.gateway.version) for a in addresses if a.gateway is not None} if addresses_ok else None
    )
    redirect = _fields(spec.get("redirect"), "spec.redirect", ("fallbackIP", "redirectRules"), errs)
    if redirect is None:
        if mode == "Redirect" and spec.get("redirect") is None:
            errs.append(FieldError("spec.redirect", "required when spec.mode is Redirect"))
        redirect = {}
    rules = _parse_rules(redirect.get("redirectRules"), families, errs)
    fallback = _parse_fallback(redirect.get("fallbackIP"), families, errs)
    macvlan_mode, master = _parse_network_interface(spec.get("networkInterface"), errs)
    if errs:
        shown = f"{namespace}/{name}" if namespace and name else name
        raise InvalidEgressRouter(f"{where} ({KIND} {shown})" if shown else where, errs)
    assert name is not None
    return EgressRouter(
        name=name,
        namespace=namespace,
        uid=uid,
        labels=labels,
        addresses=tuple(addresses),
        redirect_rules=tuple(rules),
        fallback_ip=fallback,
        macvlan_mode=macvlan_mode,
        macvlan_master=master,
    )


def _parse_metadata(
    value: Any, errs: List[FieldError]
) -> Tuple[Optional[str], Optional[str], Optional[str], Dict[str, str]]:
    if not isinstance(value, dict):
        problem = "required" if value is None else f"must be an object, got {_type_name(value)}"
        errs.append(FieldError("metadata", problem))
        return None, None, None, {}
    # ObjectMeta has many more fields (annotations, resourceVersion, ...): only the ones used are checked.
    name = _string(value.get("name"), "metadata.name", errs, required=True)
    if name == "":
        errs.append(FieldError("metadata.name", "required"))
    namespace = _string(value.get("namespace"), "metadata.namespace", errs)
    uid = _string(value.get("uid"), "metadata.uid", errs)
    labels: Dict[str, str] = {}
    raw_labels = value.get("labels")
    if isinstance(raw_labels, dict):
        for key, label in raw_labels.items():
            if isinstance(key, str) and isinstance(label, str):
                labels[key] = label
            else:
                errs.append(FieldError(f"metadata.labels.{key}", f"{_show(label)} is not a string"))
    elif raw_labels is not None:
        errs.append(FieldError("metadata.labels", f"must be an object, got {_type_name(raw_labels)}"))
    return name or None, namespace or None, uid or None, labels


def _parse_addresses(value: Any, errs: List[FieldError]) -> Tuple[List[RouterAddress], bool]:
    """Return the addresses that parsed, and whether all of them did (family checks need all)."""
    path = "spec.addresses"
    example = "at least one reserved address, e.g. {ip: 192.168.12.99/24, gateway: 192.168.12.1}"
    if value is None or value == []:
        errs.append(FieldError(path, f"required: {example}"))
        return [], False
    if not isinstance(value, list):
        errs.append(FieldError(path, f"must be a list, got {_type_name(value)}"))
        return [], False
    before = len(errs)
    parsed: List[Tuple[str, RouterAddress]] = []
    for index, item in enumerate(value):
        item_path = f"{path}[{index}]"
        entry = _fields(item, item_path, ("ip", "gateway"), errs)
        if entry is None:
            if item is None:
                errs.append(FieldError(item_path, "must be an object with ip and gateway, got null"))
            continue
        ip = _parse_cidr(entry.get("ip"), f"{item_path}.ip", errs)
        gateway = _ip(entry.get("gateway"), f"{item_path}.gateway", errs)
        if ip is None:
            continue
        for other_path, other in parsed:
            if other.ip == ip:
                errs.append(FieldError(f"{item_path}.ip", f"{ip} repeats {other_path}.ip"))
        if gateway is not None:
            if gateway.version != ip.version:
                errs.append(
                    FieldError(
                        f"{item_path}.gateway",
                        f"{gateway} is IPv{gateway.version} but {item_path}.ip {ip} is IPv{ip.version}",
                    )
                )
                gateway = None
            elif gateway == ip.ip:
                errs.append(FieldError(f"{item_path}.gateway", f"{gateway} is the reserved address itself"))
                gateway = None
        parsed.append((item_path, RouterAddress(ip=ip, gateway=gateway)))
    _check_gateways(parsed, errs)
    return [address for _, address in parsed], len(errs) == before


def _check_gateways(parsed: List[Tuple[str, RouterAddress]], errs: List[FieldError]) -> None:
    # The plugin replaces the pod's default route, one per family: two different
    # gateways of a family cannot both be it, and with none there is no route.
    first: Dict[int, Tuple[str, IPAddress]] = {}
    for path, address in parsed:
        gateway = address.gateway
        if gateway is None:
            continue
        if gateway.version not in first:
            first[gateway.version] = (path, gateway)
        elif first[gateway.version][1] != gateway:
            other_path, other = first[gateway.version]
            errs.append(
                FieldError(
                    f"{path}.gateway",
                    f"{gateway} differs from {other_path}.gateway {other}: "
                    f"the router has one IPv{gateway.version} default route",
                )
            )
    if parsed and not first:
        errs.append(
            FieldError(
                "spec.addresses",
                "no address has a gateway: the router's default route needs one, "
                "e.g. spec.addresses[0].gateway: 192.168.12.1",
            )
        )


def _parse_rules(value: Any, families: Optional[Set[int]], errs: List[FieldError]) -> List[RedirectRule]:
    path = "spec.redirect.redirectRules"
    if value is None:
        return []
    if not isinstance(value, list):
        errs.append(FieldError(path, f"must be a list, got {_type_name(value)}"))
        return []
    rules: List[RedirectRule] = []
    seen: Dict[Tuple[int, int, str], str] = {}
    for index, item in enumerate(value):
        item_path = f"{path}[{index}]"
        entry = _fields(item, item_path, ("destinationIP", "port", "protocol", "targetPort"), errs)
        if entry is None:
            if item is None:
                errs.append(FieldError(item_path, "must be an object with destinationIP, port, protocol, got null"))
            continue
        destination = _ip(entry.get("destinationIP"), f"{item_path}.destinationIP", errs, required=True)
        port = _port(entry.get("port"), f"{item_path}.port", errs, required=True)
        protocol = _enum(entry.get("protocol"), f"{item_path}.protocol", PROTOCOLS, errs, required=True)
        target_port = _port(entry.get("targetPort"), f"{item_path}.targetPort", errs)
        if destination is None or port is None or protocol is None:
            continue
        if families is not None and destination.version not in families:
            errs.append(_family_error(f"{item_path}.destinationIP", destination))
        key = (destination.version, port, protocol)
        if key in seen:
            errs.append(FieldError(item_path, f"port {port}/{protocol} is already redirected by {seen[key]}"))
        seen[key] = item_path
        rules.append(RedirectRule(destination, port, protocol, target_port))
    return rules


def _parse_fallback(value: Any, families: Optional[Set[int]], errs: List[FieldError]) -> Optional[IPAddress]:
    path = "spec.redirect.fallbackIP"
    fallback = _ip(value, path, errs)
    if fallback is not None and families is not None and fallback.version not in families:
        errs.append(_family_error(path, fallback))
    return fallback


def _parse_network_interface(value: Any, errs: List[FieldError]) -> Tuple[str, Optional[str]]:
    path = "spec.networkInterface"
    if value is None:
        return "Bridge", None  # the CRD default: {macvlan: {mode: Bridge}}
    interface = _fields(value, path, ("macvlan",), errs)
    if interface is None:
        return "Bridge", None
    macvlan = _fields(interface.get("macvlan"), f"{path}.macvlan", ("master", "mode"), errs)
    if macvlan is None:
        if interface.get("macvlan") is None:
            errs.append(FieldError(f"{path}.macvlan", "required: macvlan is the only interface type"))
        return "Bridge", None
    mode = _enum(macvlan.get("mode", "Bridge"), f"{path}.macvlan.mode", MACVLAN_MODES, errs) or "Bridge"
    master = _string(macvlan.get("master"), f"{path}.macvlan.master", errs)
    if master and not valid_ifname(master):
        errs.append(
            FieldError(
                f"{path}.macvlan.master",
                f"{_show(master)} is not a Linux interface name (1-15 characters, no '/', ':' or spaces)",
            )
        )
    return mode, master or None


# --------------------------------------------------------------------------- field helpers


def _fields(value: Any, path: str, allowed: Sequence[str], errs: List[FieldError]) -> Optional[Dict[str, Any]]:
    """Return the object without null members (the API server prunes them), or None when absent."""
    if value is None:
        return None
    if not isinstance(value, dict):
        errs.append(FieldError(path, f"must be an object, got {_type_name(value)}"))
        return None
    for key in value:
        if key not in allowed:
            # kubectl's strict field validation rejects these too; silently dropping
            # `redirectRule:` would render a router that redirects nothing.
            errs.append(FieldError(_join(path, str(key)), f"unknown field{_suggest(str(key), allowed)}"))
    return {k: v for k, v in value.items() if v is not None}


def _string(value: Any, path: str, errs: List[FieldError], required: bool = False) -> Optional[str]:
    if value is None:
        if required:
            errs.append(FieldError(path, "required"))
        return None
    if not isinstance(value, str):
        errs.append(FieldError(path, f"must be a string, got {_type_name(value)}"))
        return None
    return value


def _enum(
    value: Any, path: str, allowed: Sequence[str], errs: List[FieldError], required: bool = False
) -> Optional[str]:
    text = _string(value, path, errs, required)
    if text is None or text in allowed:
        return text
    message = f"{_show(text)} is not one of {', '.join(allowed)}"
    same = [a for a in allowed if a.lower() == text.lower()]
    if same:
        message += f" (the API is case-sensitive: use {same[0]})"
    errs.append(FieldError(path, message))
    return None


def _port(value: Any, path: str, errs: List[FieldError], required: bool = False) -> Optional[int]:
    if value is None:
        if required:
            errs.append(FieldError(path, "required"))
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        errs.append(FieldError(path, f"must be an integer, got {_type_name(value)} {_show(value)}"))
        return None
    if not 1 <= value <= 65535:
        errs.append(FieldError(path, f"{value} is not in 1-65535"))
        return None
    return value


def _ip(value: Any, path: str, errs: List[FieldError], required: bool = False) -> Optional[IPAddress]:
    text = _string(value, path, errs, required)
    if text is None:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        hint = " (a plain address: the API takes no /prefix here)" if "/" in text else ""
        errs.append(FieldError(path, f"{_show(text)} is not an IPv4 or IPv6 address{hint}"))
        return None


def _parse_cidr(value: Any, path: str, errs: List[FieldError]) -> Optional[IPInterface]:
    text = _string(value, path, errs, required=True)
    if text is None:
        return None
    example = "a CIDR such as 192.168.12.99/24"
    if "/" not in text:
        # The schema accepts any string here, but the plugin needs the prefix: it
        # gives the router its on-link subnet (192.168.12.0/24 dev net1).
        errs.append(FieldError(path, f"{_show(text)} is not {example}: the prefix length is required"))
        return None
    try:
        iface = ipaddress.ip_interface(text)
    except ValueError:
        errs.append(FieldError(path, f"{_show(text)} is not {example}"))
        return None
    if iface.ip.is_multicast or iface.ip.is_unspecified or iface.ip.is_loopback:
        errs.append(FieldError(path, f"{text} cannot be a source address"))
        return None
    return iface


def _family_error(path: str, address: IPAddress) -> FieldError:
    version = address.version
    return FieldError(path, f"{address} is IPv{version} but no IPv{version} address in spec.addresses has a gateway")


def _suggest(key: str, allowed: Sequence[str]) -> str:
    folded = {a.lower(): a for a in allowed}
    match = folded.get(key.lower())
    if match is None:
        close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.8)
        match = close[0] if close else None
    if match is not None:
        return f" (did you mean {match}?)"
    return f" (known fields: {', '.join(allowed)})"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _show(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 64 else text[:61] + "..."
