"""EgressRouter reading and validation: the API schema's rules, reported by field path."""

from __future__ import annotations

import copy
import ipaddress
import json
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List

import pytest

from egress_router_cni.k8s.egressrouter import (
    EgressRouter,
    InvalidEgressRouter,
    ManifestError,
    RedirectRule,
    find_egress_routers,
    load_documents,
    parse_egress_router,
)
from tests.samples import egress_router_example

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "conf" / "egressrouter-example.yaml"


def example() -> Dict[str, Any]:
    """The product page's EgressRouter as a dict (JSON spelling, so no PyYAML needed)."""
    return egress_router_example()


def errors_of(obj: Dict[str, Any]) -> List[str]:
    with pytest.raises(InvalidEgressRouter) as info:
        parse_egress_router(obj, "test.yaml")
    return [str(e) for e in info.value.errors]


# --------------------------------------------------------------------------- valid objects


def test_parse_example_file_matches_product_page() -> None:
    pytest.importorskip("yaml")
    docs = load_documents(EXAMPLE.read_text(), str(EXAMPLE))
    routers, skipped = find_egress_routers(docs, str(EXAMPLE))
    assert skipped == []
    router = parse_egress_router(routers[0].obj, routers[0].where)
    assert router == parse_egress_router(example())
    assert router.name == "egress-router-redirect"
    assert [str(a.ip) for a in router.addresses] == ["192.168.12.99/24"]
    assert [str(g) for g in router.gateways()] == ["192.168.12.1"]
    assert [r.destination() for r in router.redirect_rules] == [
        "80 UDP 10.0.0.99",
        "8080 TCP 203.0.113.26 80",
        "8443 TCP 203.0.113.27 443",
    ]
    assert router.macvlan_mode == "Bridge"
    assert router.fallback_ip is None


def test_parse_applies_api_defaults() -> None:
    obj = example()
    del obj["spec"]["mode"]
    del obj["spec"]["networkInterface"]
    router = parse_egress_router(obj)
    assert router.macvlan_mode == "Bridge"
    assert router.macvlan_master is None


def test_parse_macvlan_without_mode_defaults_to_bridge() -> None:
    obj = example()
    obj["spec"]["networkInterface"] = {"macvlan": {"master": "ens4"}}
    router = parse_egress_router(obj)
    assert (router.macvlan_mode, router.macvlan_master) == ("Bridge", "ens4")


def test_parse_keeps_metadata_used_by_render() -> None:
    obj = example()
    obj["metadata"].update(
        namespace="egress",
        uid="6a1f0d2e-0000-4000-8000-000000000001",
        labels={"team": "net"},
        annotations={"note": "ignored"},
        resourceVersion="42",
    )
    router = parse_egress_router(obj)
    assert (router.namespace, router.uid, router.labels) == (
        "egress",
        "6a1f0d2e-0000-4000-8000-000000000001",
        {"team": "net"},
    )
    assert router.display_name() == "egress/egress-router-redirect"


def test_parse_null_members_are_pruned_like_the_api_server() -> None:
    obj = example()
    obj["spec"]["redirect"]["fallbackIP"] = None
    obj["spec"]["redirect"]["redirectRules"][0]["targetPort"] = None
    router = parse_egress_router(obj)
    assert router.fallback_ip is None
    assert router.redirect_rules[0].target_port is None


def test_parse_fallback_only_router() -> None:
    obj = example()
    obj["spec"]["redirect"] = {"fallbackIP": "203.0.113.30"}
    router = parse_egress_router(obj)
    assert router.redirect_rules == ()
    assert router.fallback_ip == ipaddress.ip_address("203.0.113.30")


def test_parse_dual_stack_gateways_one_per_family_in_address_order() -> None:
    obj = example()
    obj["spec"]["addresses"] = [
        {"ip": "fd00:12::99/64", "gateway": "fd00:12::1"},
        {"ip": "192.168.12.99/24", "gateway": "192.168.12.1"},
        {"ip": "192.168.12.100/24", "gateway": "192.168.12.1"},
        {"ip": "192.168.12.101/24"},
    ]
    obj["spec"]["redirect"]["redirectRules"].append({"destinationIP": "2001:db8::26", "port": 8080, "protocol": "TCP"})
    router = parse_egress_router(obj)
    assert [str(g) for g in router.gateways()] == ["fd00:12::1", "192.168.12.1"]
    assert router.redirect_rules[-1] == RedirectRule(ipaddress.ip_address("2001:db8::26"), 8080, "TCP")


def test_redirect_rule_destination_spelling() -> None:
    rule = RedirectRule(ipaddress.ip_address("2001:db8::1"), 53, "UDP", 5353)
    assert rule.destination() == "53 UDP 2001:db8::1 5353"


# --------------------------------------------------------------------------- invalid objects


def _set(path: str, value: Any) -> Callable[[Dict[str, Any]], None]:
    """A mutation that sets a dotted path (list indexes as numbers) to value, or deletes it for ...."""

    def mutate(obj: Dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = obj
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        key: Any = int(last) if last.isdigit() else last
        if value is ...:
            del node[key]
        else:
            node[key] = value

    return mutate


INVALID = [
    (
        "port-range",
        _set("spec.redirect.redirectRules.1.port", 70000),
        "spec.redirect.redirectRules[1].port: 70000 is not in 1-65535",
    ),
    (
        "port-zero",
        _set("spec.redirect.redirectRules.0.port", 0),
        "spec.redirect.redirectRules[0].port: 0 is not in 1-65535",
    ),
    (
        "port-string",
        _set("spec.redirect.redirectRules.0.port", "80"),
        'spec.redirect.redirectRules[0].port: must be an integer, got a string "80"',
    ),
    (
        "port-bool",
        _set("spec.redirect.redirectRules.0.port", True),
        "spec.redirect.redirectRules[0].port: must be an integer, got a boolean true",
    ),
    ("port-missing", _set("spec.redirect.redirectRules.0.port", ...), "spec.redirect.redirectRules[0].port: required"),
    (
        "target-port-range",
        _set("spec.redirect.redirectRules.2.targetPort", 65536),
        "spec.redirect.redirectRules[2].targetPort: 65536 is not in 1-65535",
    ),
    (
        "protocol-case",
        _set("spec.redirect.redirectRules.0.protocol", "udp"),
        'spec.redirect.redirectRules[0].protocol: "udp" is not one of TCP, UDP, SCTP '
        "(the API is case-sensitive: use UDP)",
    ),
    (
        "protocol-unknown",
        _set("spec.redirect.redirectRules.0.protocol", "ICMP"),
        'spec.redirect.redirectRules[0].protocol: "ICMP" is not one of TCP, UDP, SCTP',
    ),
    (
        "protocol-missing",
        _set("spec.redirect.redirectRules.0.protocol", ...),
        "spec.redirect.redirectRules[0].protocol: required",
    ),
    (
        "destination-cidr",
        _set("spec.redirect.redirectRules.0.destinationIP", "10.0.0.99/30"),
        'spec.redirect.redirectRules[0].destinationIP: "10.0.0.99/30" is not an IPv4 or IPv6 address '
        "(a plain address: the API takes no /prefix here)",
    ),
    (
        "destination-bad",
        _set("spec.redirect.redirectRules.0.destinationIP", "10.0.0.300"),
        'spec.redirect.redirectRules[0].destinationIP: "10.0.0.300" is not an IPv4 or IPv6 address',
    ),
    (
        "destination-missing",
        _set("spec.redirect.redirectRules.0.destinationIP", ...),
        "spec.redirect.redirectRules[0].destinationIP: required",
    ),
    (
        "destination-family",
        _set("spec.redirect.redirectRules.0.destinationIP", "2001:db8::99"),
        "spec.redirect.redirectRules[0].destinationIP: 2001:db8::99 is IPv6 but no IPv6 address in "
        "spec.addresses has a gateway",
    ),
    (
        "duplicate-port",
        _set("spec.redirect.redirectRules.2.port", 8080),
        "spec.redirect.redirectRules[2]: port 8080/TCP is already redirected by spec.redirect.redirectRules[1]",
    ),
    (
        "rule-not-object",
        _set("spec.redirect.redirectRules.0", "80 UDP 10.0.0.99"),
        "spec.redirect.redirectRules[0]: must be an object, got a string",
    ),
    (
        "rules-not-list",
        _set("spec.redirect.redirectRules", {"port": 80}),
        "spec.redirect.redirectRules: must be a list, got an object",
    ),
    (
        "fallback-bad",
        _set("spec.redirect.fallbackIP", "example.com"),
        'spec.redirect.fallbackIP: "example.com" is not an IPv4 or IPv6 address',
    ),
    (
        "fallback-family",
        _set("spec.redirect.fallbackIP", "2001:db8::1"),
        "spec.redirect.fallbackIP: 2001:db8::1 is IPv6 but no IPv6 address in spec.addresses has a gateway",
    ),
    ("redirect-missing", _set("spec.redirect", ...), "spec.redirect: required when spec.mode is Redirect"),
    ("mode-unknown", _set("spec.mode", "HTTPProxy"), 'spec.mode: "HTTPProxy" is not one of Redirect'),
    (
        "addresses-missing",
        _set("spec.addresses", ...),
        "spec.addresses: required: at least one reserved address, e.g. {ip: 192.168.12.99/24, gateway: 192.168.12.1}",
    ),
    (
        "addresses-empty",
        _set("spec.addresses", []),
        "spec.addresses: required: at least one reserved address, e.g. {ip: 192.168.12.99/24, gateway: 192.168.12.1}",
    ),
    (
        "address-no-prefix",
        _set("spec.addresses.0.ip", "192.168.12.99"),
        'spec.addresses[0].ip: "192.168.12.99" is not a CIDR such as 192.168.12.99/24: the prefix length is required',
    ),
    (
        "address-bad",
        _set("spec.addresses.0.ip", "192.168.12.999/24"),
        'spec.addresses[0].ip: "192.168.12.999/24" is not a CIDR such as 192.168.12.99/24',
    ),
    ("address-missing", _set("spec.addresses.0.ip", ...), "spec.addresses[0].ip: required"),
    (
        "address-multicast",
        _set("spec.addresses.0.ip", "224.0.0.5/24"),
        "spec.addresses[0].ip: 224.0.0.5/24 cannot be a source address",
    ),
    (
        "gateway-bad",
        _set("spec.addresses.0.gateway", "192.168.12"),
        'spec.addresses[0].gateway: "192.168.12" is not an IPv4 or IPv6 address',
    ),
    (
        "gateway-family",
        _set("spec.addresses.0.gateway", "fd00::1"),
        "spec.addresses[0].gateway: fd00::1 is IPv6 but spec.addresses[0].ip 192.168.12.99/24 is IPv4",
    ),
    (
        "gateway-self",
        _set("spec.addresses.0.gateway", "192.168.12.99"),
        "spec.addresses[0].gateway: 192.168.12.99 is the reserved address itself",
    ),
    (
        "gateway-none",
        _set("spec.addresses.0.gateway", ...),
        "spec.addresses: no address has a gateway: the router's default route needs one, "
        "e.g. spec.addresses[0].gateway: 192.168.12.1",
    ),
    (
        "gateway-conflict",
        _set(
            "spec.addresses",
            [
                {"ip": "192.168.12.99/24", "gateway": "192.168.12.1"},
                {"ip": "192.168.13.99/24", "gateway": "192.168.13.1"},
            ],
        ),
        "spec.addresses[1].gateway: 192.168.13.1 differs from spec.addresses[0].gateway 192.168.12.1: "
        "the router has one IPv4 default route",
    ),
    (
        "address-duplicate",
        _set("spec.addresses", [{"ip": "192.168.12.99/24", "gateway": "192.168.12.1"}, {"ip": "192.168.12.99/24"}]),
        "spec.addresses[1].ip: 192.168.12.99/24 repeats spec.addresses[0].ip",
    ),
    (
        "macvlan-mode-case",
        _set("spec.networkInterface.macvlan.mode", "bridge"),
        'spec.networkInterface.macvlan.mode: "bridge" is not one of Bridge, Private, VEPA, Passthru '
        "(the API is case-sensitive: use Bridge)",
    ),
    (
        "macvlan-missing",
        _set("spec.networkInterface", {}),
        "spec.networkInterface.macvlan: required: macvlan is the only interface type",
    ),
    (
        "master-bad",
        _set("spec.networkInterface.macvlan.master", "a-very-long-interface-name"),
        'spec.networkInterface.macvlan.master: "a-very-long-interface-name" is not a Linux interface name '
        "(1-15 characters, no '/', ':' or spaces)",
    ),
    (
        "unknown-field-typo",
        _set("spec.redirect.redirectRule", []),
        "spec.redirect.redirectRule: unknown field (did you mean redirectRules?)",
    ),
    (
        "unknown-field-case",
        _set("spec.redirect.redirectRules.0.destinationIp", "10.0.0.1"),
        "spec.redirect.redirectRules[0].destinationIp: unknown field (did you mean destinationIP?)",
    ),
    (
        "unknown-field-other",
        _set("spec.interfaceType", "ipvlan"),
        "spec.interfaceType: unknown field (known fields: addresses, mode, networkInterface, redirect)",
    ),
    (
        "unknown-top-level",
        _set("data", {}),
        "data: unknown field (known fields: apiVersion, kind, metadata, spec, status)",
    ),
    (
        "api-version",
        _set("apiVersion", "network.openshift.io/v1"),
        'apiVersion: "network.openshift.io/v1" is not network.operator.openshift.io/v1',
    ),
    ("name-missing", _set("metadata.name", ...), "metadata.name: required"),
    ("name-empty", _set("metadata.name", ""), "metadata.name: required"),
    ("metadata-missing", _set("metadata", ...), "metadata: required"),
    ("label-not-string", _set("metadata.labels", {"version": 1.5}), "metadata.labels.version: 1.5 is not a string"),
    ("spec-missing", _set("spec", ...), "spec: required"),
    ("spec-not-object", _set("spec", ["addresses"]), "spec: must be an object, got a list"),
]


@pytest.mark.parametrize(("mutate", "expected"), [(m, e) for _, m, e in INVALID], ids=[i for i, _, _ in INVALID])
def test_parse_rejects_with_field_path(mutate: Callable[[Dict[str, Any]], None], expected: str) -> None:
    obj = copy.deepcopy(example())
    mutate(obj)
    assert expected in errors_of(obj)


def test_parse_reports_every_error_at_once() -> None:
    obj = example()
    obj["spec"]["redirect"]["redirectRules"][0]["port"] = 70000
    obj["spec"]["redirect"]["redirectRules"][1]["protocol"] = "tcp"
    obj["spec"]["addresses"][0]["ip"] = "192.168.12.99"
    errors = errors_of(obj)
    assert len(errors) == 3
    assert errors[0].startswith("spec.addresses[0].ip:")


def test_parse_error_message_names_the_object_and_its_source() -> None:
    obj = example()
    obj["metadata"]["namespace"] = "egress"
    obj["spec"]["redirect"]["redirectRules"][1]["port"] = 70000
    with pytest.raises(InvalidEgressRouter) as info:
        parse_egress_router(obj, "router.yaml, document 2")
    assert str(info.value) == (
        "router.yaml, document 2 (EgressRouter egress/egress-router-redirect): invalid EgressRouter:\n"
        "  spec.redirect.redirectRules[1].port: 70000 is not in 1-65535"
    )


def test_parse_bad_address_skips_family_checks() -> None:
    """A broken address must not also produce 'no IPv4 address' errors for every rule."""
    obj = example()
    obj["spec"]["addresses"][0]["ip"] = "bogus"
    assert errors_of(obj) == [
        'spec.addresses[0].ip: "bogus" is not a CIDR such as 192.168.12.99/24: the prefix length is required'
    ]


# --------------------------------------------------------------------------- reading manifests


def test_load_documents_yaml_stream_numbers_documents_and_skips_others() -> None:
    pytest.importorskip("yaml")
    text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: egress}\n---\n" + json.dumps(example()) + "\n---\n"
    routers, skipped = find_egress_routers(load_documents(text, "in.yaml"), "in.yaml")
    assert [r.where for r in routers] == ["in.yaml, document 2"]
    assert skipped == ["in.yaml, document 1: Namespace/egress is not an EgressRouter"]


def test_load_documents_json_object_and_list_kinds() -> None:
    listing = {"apiVersion": "v1", "kind": "List", "items": [example(), example()]}
    routers, _ = find_egress_routers(load_documents(json.dumps(listing), "stdin"), "stdin")
    assert [r.where for r in routers] == ["stdin, items[0]", "stdin, items[1]"]
    typed = {"apiVersion": "network.operator.openshift.io/v1", "kind": "EgressRouterList", "items": [example()]}
    routers, _ = find_egress_routers(load_documents(json.dumps(typed), "stdin"), "stdin")
    assert len(routers) == 1
    routers, _ = find_egress_routers(load_documents(json.dumps(example()), "stdin"), "stdin")
    assert [r.where for r in routers] == ["stdin"]


def test_load_documents_json_array_is_a_document_list() -> None:
    routers, _ = find_egress_routers(load_documents(json.dumps([example(), example()]), "x.json"), "x.json")
    assert [r.where for r in routers] == ["x.json, document 1", "x.json, document 2"]


def test_load_documents_bad_yaml_says_where() -> None:
    pytest.importorskip("yaml")
    expected = r"^in\.yaml: not valid YAML at line 2, column 6: mapping values are not allowed here$"
    with pytest.raises(ManifestError, match=expected):
        load_documents("kind: EgressRouter\n  bad: [indent\n", "in.yaml")


def test_find_egress_routers_rejects_scalar_documents() -> None:
    with pytest.raises(ManifestError, match=r"in\.yaml, document 2: expected a Kubernetes object, got a string"):
        find_egress_routers([example(), "hello"], "in.yaml")


def test_load_documents_without_pyyaml_reads_json_and_explains_yaml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "yaml", None)  # makes `import yaml` raise ImportError
    assert load_documents(json.dumps(example()), "stdin") == [example()]
    with pytest.raises(ManifestError, match=r"reading YAML needs PyYAML: this installation lacks PyYAML"):
        load_documents("kind: EgressRouter\n", "in.yaml")
    with pytest.raises(ManifestError, match=r"in\.json: not valid JSON"):
        load_documents("{not json", "in.json")


def test_egress_router_is_hashable_free_value() -> None:
    """Two parses of one object compare equal (render relies on value semantics in tests)."""
    assert parse_egress_router(example()) == parse_egress_router(copy.deepcopy(example()))
    assert isinstance(parse_egress_router(example()), EgressRouter)
