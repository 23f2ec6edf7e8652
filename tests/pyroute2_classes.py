"""pyroute2's rtnetlink message classes, the reference the plugin's own codec is tested against.

The plugin encodes its messages itself (egress_router_cni/netlink.py: the
classes cost ~20 ms of imports per exec). `import pyroute2` would load every
subsystem and asyncio; an empty package object for `pyroute2` (with the real
search path) lets the message modules resolve while its __init__ never runs.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from typing import Any


def load() -> Any:
    """Return a namespace with ifinfmsg, ifaddrmsg, rtmsg and the NLM_F_* flags."""
    if "pyroute2" not in sys.modules:
        spec = importlib.util.find_spec("pyroute2")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("pyroute2 is not installed")
        package = types.ModuleType("pyroute2")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        sys.modules["pyroute2"] = package
    from pyroute2 import netlink
    from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
    from pyroute2.netlink.rtnl.rtmsg import rtmsg

    return types.SimpleNamespace(netlink=netlink, ifinfmsg=ifinfmsg, ifaddrmsg=ifaddrmsg, rtmsg=rtmsg)
