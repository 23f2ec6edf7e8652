"""DEL: the router's links are deleted first, in the background; the rest of DEL is imported and run meanwhile.

RTM_DELLINK waits ~20 ms in the kernel (see unlink.py). This module imports
only what finding the router needs (netns, netlink, link); the config, the
log, the NAT backends and the route code (teardown.py, shared with ADD's
rollback) load while the kernel waits.
"""

from __future__ import annotations

from .unlink import FoundRouter

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .cmdargs import CmdArgs


def cmd_del(args: CmdArgs) -> None:
    """Remove what ADD set up for this container; succeed when nothing is left (or never was)."""
    with FoundRouter(args.netns, args.container_id) as found:
        from .teardown import run_del  # here, not at the top: imported while the link is being deleted

        run_del(args, found)
