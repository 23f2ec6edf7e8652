"""What every CNI command shares: its log file, error logging, and the node's master interface."""

from __future__ import annotations

from .cmdargs import CmdArgs
from .config import NetConf
from .errors import CniError, InvalidConfig
from .link import LinkInfo, resolve_master
from .log import PluginLog
from .netlink import Netlink
from .policy import node_policy
from .route import default_routes
from .state import FAMILIES

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Optional


def open_log(conf: Optional[NetConf], args: CmdArgs, recorded: Optional[str] = None) -> PluginLog:
    """The plugin log of this invocation: the config's, else the one ADD recorded, else the default.

    recorded is the path ADD recorded with the router (DEL without a readable config): it is
    confined like a config's log_file.
    """
    context = {"command": args.command, "container_id": args.container_id, "ifname": args.ifname}
    if conf is None:
        if recorded:
            return PluginLog(recorded, context=context, directories=node_policy().log_directories)
        return PluginLog(context=context)
    directories = node_policy().log_directories
    return PluginLog(conf.log_file, conf.log_level, conf.log_format, context, directories=directories)


def logged(command: str, log: PluginLog, fn: Callable[[], Any]) -> Any:
    """Run fn; log its failure (traceback for unexpected ones) before the protocol layer reports it."""
    try:
        return fn()
    except CniError as e:
        log.error(f"CNI {command} failed: {e}")
        raise
    except Exception:
        import traceback

        log.error(f"CNI {command} failed with an internal error: {traceback.format_exc()}")
        raise
    finally:
        log.close()


def _node_default_ifindex(host: Netlink) -> Optional[int]:
    for version in FAMILIES:
        for route in default_routes(host, version):
            if route.oif:
                return route.oif
    return None


def master_of(host: Netlink, conf: NetConf) -> LinkInfo:
    """The node interface the macvlan hangs off; raise InvalidConfig when it is missing or too small."""
    master = resolve_master(host, conf.master, None if conf.master else _node_default_ifindex(host))
    if conf.mtu and conf.mtu > master.mtu:
        raise InvalidConfig(
            "invalid interfaceArgs.mtu", f"{conf.mtu} exceeds the MTU {master.mtu} of master {master.name!r}"
        )
    return master
