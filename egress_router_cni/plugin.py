"""The CNI commands of egress-router, by name: what __main__ hands to protocol.run.

Each entry imports its command's module only when that command runs, so a
VERSION call or a rejected request never loads netlink or NAT code. ADD lives
in add.py, DEL in delete.py (its undo list, shared with ADD's rollback, in
teardown.py), CHECK in check.py, GC and STATUS in status.py.
"""

from __future__ import annotations

# typing costs ~15 ms to import on a cold interpreter (VERSION imports this module).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, Optional

    from .cmdargs import CmdArgs, Handler
    from .result import Result


def _add(args: CmdArgs) -> Optional[Result]:
    from .add import cmd_add

    return cmd_add(args)


def _del(args: CmdArgs) -> Optional[Result]:
    from .delete import cmd_del

    cmd_del(args)
    return None


def _check(args: CmdArgs) -> Optional[Result]:
    from .check import cmd_check

    cmd_check(args)
    return None


def _gc(args: CmdArgs) -> Optional[Result]:
    from .status import cmd_gc

    cmd_gc(args)
    return None


def _status(args: CmdArgs) -> Optional[Result]:
    from .status import cmd_status

    cmd_status(args)
    return None


HANDLERS: Dict[str, Handler] = {"ADD": _add, "DEL": _del, "CHECK": _check, "GC": _gc, "STATUS": _status}
