"""Self-test of a frozen egress-router bundle: `EGRESS_ROUTER_SELFTEST=1 dist/egress-router/egress-router`.

Imports what CNI mode imports lazily (the plugin and the nftables backend),
checks that this stayed lean (no pyroute2, asyncio, click, logging,
subprocess or ctypes), checks that ctypes gets PyInstaller's patch once
something imports it (the bootstrap defers it, see build.spec), then imports
the CLI. Prints one JSON report; exits 1 if a required check failed. Never
touches the network: nothing here opens a netlink socket.
"""

from __future__ import annotations

import sys

# Whether the bundle's start-up loaded zlib, noted before this module's own imports.
ZLIB_AT_START = "zlib" in sys.modules

import importlib  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
from typing import Any, Dict, List, Tuple  # noqa: E402


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


def _bundled_libraries_mapped() -> Dict[str, Any]:
    """The bundle's shared libraries, and {library: the path it is mapped from} for those this process mapped.

    The onedir starts in one exec (scripts/lib/bootloader_patch.py): its
    executable's RPATH, not LD_LIBRARY_PATH, is what finds these in _internal/.
    """
    home = getattr(sys, "_MEIPASS", "")
    bundled = [name for name in os.listdir(home) if ".so" in name] if home else []
    mapped: Dict[str, str] = {}
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1] if line.count(" ") >= 5 else ""
            base = os.path.basename(path)
            for name in bundled:
                if base == name or base.startswith(name + "."):  # libffi.so.8 or the system's libffi.so.8.1.2
                    mapped[name] = path
    return {"bundled": sorted(bundled), "mapped": mapped}


def _ctypes_patch() -> Tuple[bool, str]:
    """Whether ctypes, imported now, has PyInstaller's CDLL (bundle lookup, PyInstallerImportError)."""
    import ctypes

    missing = f"egress-router-selftest-{os.getpid()}.so"  # not a literal: the build would look for it
    try:
        ctypes.CDLL(missing)
        error = "none"
    except OSError as e:
        error = type(e).__name__
    hooks = [type(f).__name__ for f in sys.meta_path if type(f).__name__ == "_CtypesImportHook"]
    ok = ctypes.CDLL.__name__ == "PyInstallerCDLL" and error == "PyInstallerImportError" and not hooks
    detail = f"CDLL is {ctypes.CDLL.__module__}.{ctypes.CDLL.__name__}, a missing library raises {error}"
    return ok, detail + (f", {hooks} still on sys.meta_path" if hooks else "")


def main() -> int:
    report: Dict[str, Any] = {"frozen": bool(getattr(sys, "frozen", False)), "meipass": getattr(sys, "_MEIPASS", None)}
    failures: List[str] = []

    from egress_router_cni import plugin, protocol  # noqa: F401  (the ADD/DEL/CHECK import set)
    from egress_router_cni.nat import nftables, nftables_netlink  # noqa: F401

    lean = ("pyroute2", "asyncio", "click", "structlog", "logging", "subprocess", "selectors", "ctypes")
    heavy = [m for m in lean if m in sys.modules]
    _check(report, failures, "hot_path_stays_lean", not heavy, heavy or "none of " + " ".join(lean))
    # Entering the pod's namespace: os.setns (3.12+) or the bundled _egress_setns, never _ctypes.
    from egress_router_cni import netns

    setns_from = getattr(netns.pick_setns(), "__module__", None)
    expected = "posix" if sys.version_info >= (3, 12) else "_egress_setns"
    ctypes_loaded = "_ctypes" in sys.modules
    _check(
        report,
        failures,
        "setns_without_ctypes",
        setns_from == expected and not ctypes_loaded,
        f"setns from {setns_from} (expected {expected}), _ctypes {'loaded' if ctypes_loaded else 'not loaded'}",
    )
    # build.spec (LAZY_ZLIB): PyInstaller's archive reader imports zlib when it first inflates a
    # PYZ entry. The onedir's PYZ is empty (its modules are .pyc files): its start-up loads none.
    importers = sys.modules.get("pyimod02_importers")
    pyz_empty = importers is not None and not importers.pyz_archive.toc
    zlib_loaded = ZLIB_AT_START
    _check(
        report,
        failures,
        "zlib_only_for_a_pyz",
        not (pyz_empty and zlib_loaded),
        f"PYZ {'empty' if pyz_empty else 'holds modules'}, zlib {'loaded' if zlib_loaded else 'not loaded'}",
    )
    # Informational: avoidable start-up cost still on the hot path (see docs/performance.md).
    report["avoidable_imports"] = [
        m for m in ("dataclasses", "inspect", "shutil", "_hashlib", "socket", "enum", "re") if m in sys.modules
    ]
    report["hot_path_modules"] = len(sys.modules)

    try:
        from egress_router_cni.nat import iptables

        iptables.load_iptc()
        mapped = _mapped_from_bundle("libxtables.so.12")
        report["iptables_backend"] = {"ok": True, "detail": f"python-iptables loaded, libxtables from {mapped}"}
    except Exception as e:  # informational: needs the node's xtables libraries
        report["iptables_backend"] = {"ok": False, "detail": f"{type(e).__name__}: {e}"}

    _check(report, failures, "ctypes_patched_on_import", *_ctypes_patch())

    # Host tools must get the caller's LD_LIBRARY_PATH, not the bundle's.
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
    report["bundled_libraries_mapped"] = _bundled_libraries_mapped()
    report["modules_loaded"] = len(sys.modules)
    report["failures"] = failures
    print(json.dumps(report, indent=1))
    return 1 if failures else 0
