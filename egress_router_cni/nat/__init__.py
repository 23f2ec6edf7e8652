"""NAT backends behind one small interface."""

from __future__ import annotations

import sys
from typing import List, Optional, Protocol, Union

from ..errors import NotAvailable
from ..state import Backend, RouterState
from .rules import Rule


class NatBackend(Protocol):
    name: Backend

    def install(self, rules: List[Rule], families: List[int], note: str = "") -> None: ...

    def note(self, families: List[int]) -> Optional[str]: ...

    def remove(self, families: List[int]) -> None: ...

    def describe(self, rule: Rule) -> str: ...

    def list(self, families: List[int]) -> Optional[List[Union[Rule, str]]]: ...

    def available(self) -> None: ...


def get_backend(name: str) -> NatBackend:
    """The backend for a natBackend value, imported lazily; call "auto" inside the pod namespace."""
    if name == "nftables":
        from .nftables import NftablesBackend

        return NftablesBackend()
    if name == "iptables":
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


def release_contexts() -> None:
    """Close what a backend kept open during the command (see nftables.release)."""
    nftables = sys.modules.get(__name__ + ".nftables")
    if nftables is not None:
        nftables.release()
