"""What a CNI command handler receives and returns (Go's skel.CmdArgs and the handler type).

A leaf module: the protocol layer, which builds CmdArgs, and the commands,
which consume them, both import it, and it imports neither.
"""

from __future__ import annotations

from .record import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Optional

    from .result import Result


# Record (a NamedTuple to mypy), not @dataclass: dataclasses imports inspect, ~12 ms of every plugin exec.
class CmdArgs(Record):
    """One invocation, decoded: the Go skel.CmdArgs plus the parsed config object."""

    command: str
    container_id: str
    netns: str
    ifname: str
    args: Dict[str, str]
    path: str
    config: Dict[str, Any]
    cni_version: str
    stdin_data: bytes = b""


if TYPE_CHECKING:
    # A command: the decoded invocation in, a Result (ADD) or None out; failures are
    # raised as CniError. The protocol layer prints the Result in args.cni_version.
    Handler = Callable[[CmdArgs], Optional[Result]]
