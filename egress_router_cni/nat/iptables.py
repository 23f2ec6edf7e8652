"""The second NAT backend: legacy xtables `nat` table through python-iptables (iptc).

python-iptables, imported naively, spends ~190 ms finding its libraries
(ctypes.util.find_library spawns ldconfig and gcc, then it runs ldconfig -v
for the extensions directory). We import its modules without the package
__init__, with fixed sonames and XTABLES_LIBDIR set. It also takes no xtables
lock, so every commit holds /run/xtables.lock as `iptables -w` does.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import glob
import importlib.util
import ipaddress
import os
import sys
import types
from typing import Any, Iterator, List, Optional, Tuple, Union

from ..errors import NatError, NotAvailable
from .rules import DnatRule, Rule, SnatRule, dnat_target, iptables_spelling

COMMENT_PREFIX = "egress-router "
XTABLES_LOCK = "/run/xtables.lock"
_SONAMES = {
    "ip4tc": "libip4tc.so.2",
    "ip6tc": "libip6tc.so.2",
    "xtables": "libxtables.so.12",
    "libxtables.so.12": "libxtables.so.12",
}
# Where distributions put the xtables extensions (libxt_comment.so, libipt_DNAT.so, ...).
_XTABLES_DIRS = (
    "/usr/lib/x86_64-linux-gnu/xtables",
    "/usr/lib/aarch64-linux-gnu/xtables",
    "/usr/lib64/xtables",
    "/usr/lib/xtables",
    "/lib/xtables",
)
_iptc: Any = None


def _load_library(name: str, package_dir: str) -> Tuple[Optional[ctypes.CDLL], Optional[int]]:
    if name == "xtwrapper":
        # python-iptables' compiled helper sits next to the package (or in the frozen bundle).
        candidates = glob.glob(os.path.join(os.path.dirname(package_dir), "libxtwrapper*.so"))
        candidates += glob.glob(os.path.join(package_dir, "libxtwrapper*.so"))
        if not candidates:
            return None, None
        return ctypes.CDLL(candidates[0], mode=ctypes.RTLD_GLOBAL), 0
    soname = _SONAMES.get(name)
    if soname is None:
        return None, None
    try:
        return ctypes.CDLL(soname, mode=ctypes.RTLD_GLOBAL), int(soname.rsplit(".", 1)[1])
    except OSError:
        return None, None


def load_iptc() -> Any:
    """Import python-iptables quickly; raise NotAvailable when it or libxtables is missing."""
    global _iptc
    if _iptc is not None:
        return _iptc
    spec = importlib.util.find_spec("iptc")
    if spec is None or not spec.submodule_search_locations:
        raise NotAvailable("the iptables NAT backend is not available", "python-iptables is not installed")
    package_dir = next(iter(spec.submodule_search_locations))
    if "iptc" not in sys.modules:
        package = types.ModuleType("iptc")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        sys.modules["iptc"] = package
    if not os.environ.get("XTABLES_LIBDIR"):
        libdir = next((d for d in _XTABLES_DIRS if os.path.isdir(d)), None)
        if libdir is None:
            raise NotAvailable(
                "the iptables NAT backend is not available",
                "no xtables extensions directory on the node (install iptables)",
            )
        os.environ["XTABLES_LIBDIR"] = libdir
    from iptc import util

    def find_library(*names: str) -> Tuple[Optional[ctypes.CDLL], Optional[int]]:
        for name in names:
            lib, major = _load_library(name, package_dir)
            if lib is not None:
                return lib, major
        return None, None

    util.find_library = find_library
    util.find_libc = lambda: ctypes.CDLL("libc.so.6", mode=ctypes.RTLD_GLOBAL)
    try:
        from iptc import ip4tc, ip6tc
    except Exception as e:
        raise NotAvailable(
            "the iptables NAT backend is not available", f"libxtables/libip4tc could not be loaded: {e}"
        ) from None
    _iptc = types.SimpleNamespace(ip4tc=ip4tc, ip6tc=ip6tc)
    return _iptc


@contextlib.contextmanager
def xtables_lock() -> Iterator[None]:
    """Hold the lock iptables(8) uses, so our commit and theirs never interleave."""
    fd = os.open(XTABLES_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class IptablesBackend:
    """Install, remove, list and verify the router's NAT rules in the legacy xtables nat table."""

    name = "iptables"

    def __init__(self) -> None:
        self.iptc = load_iptc()

    def _table(self, family: int) -> Any:
        mod = self.iptc.ip4tc if family == 4 else self.iptc.ip6tc
        cls = mod.Table if family == 4 else mod.Table6
        table = cls("nat", autocommit=False)
        # python-iptables caches one handle per table name for the process; the
        # process only ever works in one (pod) namespace, but refresh anyway so
        # we never act on a stale snapshot.
        table.refresh()
        return table

    def _rule(self, family: int, rule: Rule, note: str) -> Any:
        mod = self.iptc.ip4tc if family == 4 else self.iptc.ip6tc
        cls = mod.Rule if family == 4 else mod.Rule6
        r = cls()
        if isinstance(rule, DnatRule):
            r.in_interface = rule.in_iface
            if rule.protocol:
                r.protocol = rule.protocol
                match = r.create_match(rule.protocol)
                match.dport = str(rule.port)
            target = r.create_target("DNAT")
            target.to_destination = dnat_target(rule)
        else:
            r.out_interface = rule.out_iface
            target = r.create_target("SNAT")
            target.to_source = str(rule.to_addr)
        comment = r.create_match("comment")
        comment.comment = note
        return r

    def install(self, rules: List[Rule], families: List[int], note: str = "") -> None:
        note = note or COMMENT_PREFIX.strip()
        with xtables_lock():
            for family in families:
                table = self._table(family)
                try:
                    self._delete_ours(table)
                    for rule in rules:
                        if rule.family == family:
                            chain = "PREROUTING" if isinstance(rule, DnatRule) else "POSTROUTING"
                            mod = self.iptc.ip4tc
                            mod.Chain(table, chain).append_rule(self._rule(family, rule, note))
                    table.commit()  # one commit per family: all of its rules or none
                except Exception as e:
                    with contextlib.suppress(Exception):
                        table.refresh()  # drop the uncommitted changes
                    if isinstance(e, NatError):
                        raise
                    raise NatError("iptables rejected the change", str(e)) from e

    def _delete_ours(self, table: Any) -> int:
        removed = 0
        for chain in table.chains:
            for rule in list(chain.rules):
                if _comment(rule).startswith(COMMENT_PREFIX.strip()):
                    chain.delete_rule(rule)
                    removed += 1
        return removed

    def remove(self, families: List[int]) -> None:
        with xtables_lock():
            for family in families:
                try:
                    table = self._table(family)
                    if self._delete_ours(table):
                        table.commit()
                except NatError:
                    raise
                except Exception as e:
                    if _missing_table(e):
                        continue
                    raise NatError("failed to remove iptables rules", str(e)) from e

    def describe(self, rule: Rule) -> str:
        return f"Added iptables rule: {iptables_spelling(rule)}"

    def note(self, families: List[int]) -> Optional[str]:
        for family in families:
            try:
                table = self._table(family)
            except Exception:
                continue
            for chain in table.chains:
                for rule in chain.rules:
                    text = _comment(rule)
                    if text.startswith(COMMENT_PREFIX):
                        return text
        return None

    def list(self, families: List[int]) -> Optional[List[Union[Rule, str]]]:
        found: List[Union[Rule, str]] = []
        for family in families:
            try:
                table = self._table(family)
            except Exception:
                continue
            for chain_name in ("PREROUTING", "POSTROUTING"):
                mod = self.iptc.ip4tc
                chain = mod.Chain(table, chain_name)
                for rule in chain.rules:
                    if _comment(rule).startswith(COMMENT_PREFIX.strip()):
                        found.append(_parse(family, chain_name, rule))
        return found or None

    def available(self) -> None:
        try:
            self._table(4)
        except Exception as e:
            raise NotAvailable("the iptables nat table is not usable", str(e)) from None


def _comment(rule: Any) -> str:
    for match in rule.matches:
        if match.name == "comment":
            return str(match.comment or "")
    return ""


def _missing_table(e: Exception) -> bool:
    text = str(e).lower()
    return "table does not exist" in text or "no such file" in text or getattr(e, "errno", None) == errno.ENOENT


def _iface(value: Any) -> str:
    return str(value or "").lstrip("!")


def _parse(family: int, chain: str, rule: Any) -> Union[Rule, str]:
    """Map an iptc rule back to our rule types; anything unexpected is returned as text."""
    try:
        target = rule.target
        proto = rule.protocol if rule.protocol not in (None, "", "ip", "all") else None
        port: Optional[int] = None
        for match in rule.matches:
            if match.name in ("tcp", "udp", "sctp"):
                port = int(match.dport)
        if chain == "PREROUTING" and target.name == "DNAT":
            dest = target.to_destination
            addr, to_port = _split_destination(dest)
            return DnatRule(
                family=family,
                in_iface=_iface(rule.in_interface),
                to_addr=ipaddress.ip_address(addr),
                protocol=proto,
                port=port,
                to_port=to_port,
            )
        if chain == "POSTROUTING" and target.name == "SNAT" and proto is None:
            return SnatRule(
                family=family, out_iface=_iface(rule.out_interface), to_addr=ipaddress.ip_address(target.to_source)
            )
    except (AttributeError, TypeError, ValueError):
        pass
    return f"{chain}: {rule.protocol} -> {getattr(rule.target, 'name', '?')}"


def _split_destination(dest: str) -> Tuple[str, Optional[int]]:
    if dest.startswith("["):
        addr, _, rest = dest[1:].partition("]")
        return addr, int(rest[1:]) if rest.startswith(":") else None
    if dest.count(":") == 1:
        addr, port = dest.split(":")
        return addr, int(port)
    return dest, None
