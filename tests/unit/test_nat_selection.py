"""natBackend auto when neither backend works: one error, both backends, what to install for each.

The end-to-end form (a stock node: no python-iptables) is tests/netns/test_stock_node.py; there
nftables now works without any library. A kernel without nf_tables cannot be made in a test, so
here its answer is the one _generation() gives such a kernel.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any, Optional

import pytest

from egress_router_cni.errors import ErrorCode, NotAvailable
from egress_router_cni.nat import get_backend
from egress_router_cni.nat import iptables as iptables_backend
from egress_router_cni.nat import nftables as nftables_backend


def test_auto_without_either_backend_names_both_and_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_nf_tables() -> None:
        raise NotAvailable("nftables is not available", "the kernel refused nf_tables requests: [Errno 93]")

    real_find_spec = importlib.util.find_spec

    def without_iptc(name: str, package: Optional[str] = None) -> Any:
        return None if name == "iptc" else real_find_spec(name, package)

    monkeypatch.setattr(nftables_backend, "_generation", no_nf_tables)
    monkeypatch.setattr(importlib.util, "find_spec", without_iptc)
    monkeypatch.setattr(iptables_backend, "_iptc", None)
    with pytest.raises(NotAvailable) as caught:
        get_backend("auto")
    error = caught.value
    assert error.code == ErrorCode.NOT_AVAILABLE == 50
    assert error.msg == "no NAT backend is available (natBackend auto tried nftables, then iptables)"
    assert error.details == (
        "nftables: the kernel refused nf_tables requests: [Errno 93] (the node's kernel needs nf_tables: "
        "modprobe nf_tables); iptables: python-iptables is not installed for the plugin's Python: "
        f"{sys.executable} -m pip install python-iptables (it compiles a C helper: apt-get install gcc libc6-dev) "
        "and install the iptables package (apt-get install iptables). "
        "Either one is enough; the self-contained build (scripts/build.sh) carries both."
    )
