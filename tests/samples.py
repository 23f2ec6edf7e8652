"""The product page's example, as test data shared by the unit tests (pure dicts, no PyYAML)."""

from __future__ import annotations

from typing import Any, Dict

SEED_DESTINATIONS = ["80 UDP 10.0.0.99/30", "8080 TCP 203.0.113.26/30 80", "8443 TCP 203.0.113.27/30 443"]


def seed_plugin_conf(**extra: Any) -> Dict[str, Any]:
    """The router's plugin config as the operator renders it; EXTRA adds or replaces top-level keys."""
    return {
        "cniVersion": "0.4.0",
        "type": "egress-router",
        "name": "egress-router-cni-nad",
        "ip": {
            "addresses": ["192.168.12.99/24"],
            "destinations": list(SEED_DESTINATIONS),
            "gateway": "192.168.12.1",
        },
        **extra,
    }


def egress_router_example() -> Dict[str, Any]:
    """The product page's EgressRouter object (JSON spelling)."""
    return {
        "apiVersion": "network.operator.openshift.io/v1",
        "kind": "EgressRouter",
        "metadata": {"name": "egress-router-redirect"},
        "spec": {
            "networkInterface": {"macvlan": {"mode": "Bridge"}},
            "addresses": [{"ip": "192.168.12.99/24", "gateway": "192.168.12.1"}],
            "mode": "Redirect",
            "redirect": {
                "redirectRules": [
                    {"destinationIP": "10.0.0.99", "port": 80, "protocol": "UDP"},
                    {"destinationIP": "203.0.113.26", "port": 8080, "targetPort": 80, "protocol": "TCP"},
                    {"destinationIP": "203.0.113.27", "port": 8443, "targetPort": 443, "protocol": "TCP"},
                ]
            },
        },
    }
