"""Self-test of a frozen egress-router bundle: `EGRESS_ROUTER_SELFTEST=1 dist/egress-router/egress-router`.

Imports what CNI mode imports lazily (the plugin, the stub-loaded pyroute2
message classes with their link-kind plugins, libnftables through ctypes),
checks that this stayed lean (no pyroute2 package __init__, no asyncio, no
click), then imports the CLI. Prints one JSON report; exits 1 if a required
check failed. Never touches the network: nothing here opens a netlink socket.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
from typing import Any, Dict, List


def _check(report: Dict[str, Any], failures: List[str], name: str, ok: bool, detail: Any) -> None:
    report[name] = {"ok": ok, "detail": detail}
    if not ok:
        failures.append(name)


def _mapped_from_bundle(soname: str) -> str:
    """The path the running process mapped soname from ('' when it is not mapped)."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1] if line.count(" ") >= 5 else ""
                if os.path.basename(path).startswith(soname):
                    return path
    except OSError:
        pass
    return ""


def main() -> int:
    report: Dict[str, Any] = {"frozen": bool(getattr(sys, "frozen", False)), "meipass": getattr(sys, "_MEIPASS", None)}
    failures: List[str] = []

    # The stub trick in _pyroute2.py needs find_spec to return the package's search path without running it.
    spec = importlib.util.find_spec("pyroute2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    _check(report, failures, "pyroute2_find_spec", bool(locations), " ".join(locations))

    from egress_router_cni import _pyroute2, plugin, protocol  # noqa: F401  (the ADD/DEL/CHECK import set)

    pr = _pyroute2.load()
    kinds = sorted(pr.ifinfmsg.ifinfo.data_map)
    _check(report, failures, "pyroute2_link_kinds", "macvlan" in kinds and "vlan" in kinds, " ".join(kinds))
    heavy = [m for m in ("pyroute2.iproute", "pyroute2.ndb", "asyncio", "click", "structlog") if m in sys.modules]
    _check(report, failures, "hot_path_stays_lean", not heavy, heavy or "no pyroute2 __init__/asyncio/click/structlog")
    # Informational: avoidable start-up cost still on the hot path (see docs/performance.md).
    report["avoidable_imports"] = [m for m in ("dataclasses", "inspect", "shutil", "_hashlib") if m in sys.modules]

    from egress_router_cni.nat import nftables

    lib = nftables._library()
    detail: Any = "libnftables.so.1 not loadable: the plugin would spawn `nft -f -`"
    if lib:
        ctx = lib.nft_ctx_new(0)
        ok = bool(ctx)
        if ctx:
            lib.nft_ctx_free(ctx)
        deps = ("libnftnl.so.11", "libmnl.so.0", "libjansson.so.4", "libgmp.so.10", "libxtables.so.12")
        detail = {
            "nft_ctx_new": ok,
            "mapped_from": _mapped_from_bundle("libnftables.so.1"),
            "dependencies": {name: _mapped_from_bundle(name) for name in deps},
        }
    report["libnftables"] = {"ok": bool(lib), "detail": detail}  # informational: the nft fallback exists

    try:
        from egress_router_cni.nat import iptables

        iptables.load_iptc()
        report["iptables_backend"] = {"ok": True, "detail": "python-iptables loaded"}
    except Exception as e:  # informational: needs the node's xtables libraries
        report["iptables_backend"] = {"ok": False, "detail": f"{type(e).__name__}: {e}"}

    # Host tools (the nft fallback) must get the caller's LD_LIBRARY_PATH, not the bundle's.
    from egress_router_cni import spawn

    report["ld_library_path"] = {
        "self": os.environ.get("LD_LIBRARY_PATH"),
        "host_tools": spawn.host_environ().get("LD_LIBRARY_PATH"),
    }

    from egress_router_cni import cli

    loaded = []
    for module, attr in cli.COMMANDS.values():
        loaded.append(getattr(importlib.import_module(module), attr).name)
    import structlog  # noqa: F401  (log_format "json")

    _check(report, failures, "cli_commands", bool(loaded), " ".join(loaded))
    report["modules_loaded"] = len(sys.modules)
    report["failures"] = failures
    print(json.dumps(report, indent=1))
    return 1 if failures else 0
