"""NAT backends behind one small interface, and the spelling of a rule in each backend's syntax.

A backend is used as a context manager: what it keeps open during a command
(nftables: its netfilter socket) is released when the block ends, after the
command's other kernel work, so that closing it never delays that work.
"""

from __future__ import annotations

from ..errors import NotAvailable
from ..state import Backend
from .nftables_text import rule_text
from .rules import iptables_spelling

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import TracebackType
    from typing import List, Optional, Protocol, Type, Union

    from ..state import BackendName, RouterState
    from .rules import Rule
else:
    Protocol = object  # NatBackend is an interface for mypy only: typing costs ~15 ms per exec


class NatBackend(Protocol):
    """The router's NAT rules in one backend; every method acts on the current network namespace."""

    name: BackendName

    def __enter__(self) -> NatBackend: ...

    def __exit__(
        self, kind: Optional[Type[BaseException]], value: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None: ...

    def install(self, rules: List[Rule], families: List[int], note: str = "") -> None:
        """Replace the plugin's rules of these families with rules, atomically per family; note goes with them."""

    def note(self, families: List[int]) -> Optional[str]:
        """The note stored with the rules at install time, or None when there is none."""

    def remove(self, families: List[int]) -> None:
        """Remove every rule (and table) of the plugin in these families; nothing there is not an error."""

    def installed(self, families: List[int]) -> Optional[List[Union[Rule, str]]]:
        """The plugin's rules (unrecognised ones as text), or None when nothing of the plugin is installed.

        "Nothing" is the same for both backends: no egress_cni table (nftables),
        no rule carrying the plugin's comment (iptables). An nftables table
        without rules is something: an empty list.
        """


def get_backend(name: str) -> NatBackend:
    """The backend for a natBackend value, imported lazily; call "auto" inside the pod namespace."""
    if name == Backend.NFTABLES:
        from .nftables import NftablesBackend

        return NftablesBackend()
    if name == Backend.IPTABLES:
        from .iptables import IptablesBackend

        return IptablesBackend()
    if name == "auto":
        from .nftables import NftablesBackend, nftables_problem

        why_not_nftables = nftables_problem()
        if why_not_nftables is None:
            return NftablesBackend()
        from .iptables import IptablesBackend

        try:
            return IptablesBackend()
        except NotAvailable as e:
            raise no_backend(why_not_nftables, e.details) from None
    raise ValueError(f"unknown NAT backend {name!r}")


def no_backend(why_not_nftables: str, why_not_iptables: str) -> NotAvailable:
    """The one error of natBackend "auto" when neither backend works: each reason, and what to install."""
    return NotAvailable(
        "no NAT backend is available (natBackend auto tried nftables, then iptables)",
        f"nftables: {why_not_nftables}; iptables: {why_not_iptables}. "
        "Either one is enough; the self-contained build (scripts/build.sh) carries both.",
    )


def recorded_backend(state: Optional[RouterState], configured: str) -> NatBackend:
    """The backend ADD recorded in state, else the configured one ("auto" decides in this namespace)."""
    return get_backend(state.nat if state is not None and state.nat is not None else configured)


def spell(backend: str, rule: Rule) -> str:
    """rule in the backend's own syntax, as `nft list` or `iptables -S` would show it."""
    return rule_text(rule) if backend == Backend.NFTABLES else iptables_spelling(rule)
