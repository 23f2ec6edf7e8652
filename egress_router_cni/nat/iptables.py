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
import os
import sys
import types
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

from ..errors import NatError, NotAvailable
from ..ipaddr import ip_address
from ..jsonio import dumps, loads
from ..state import Backend
from .rules import DnatRule, SnatRule, dnat_target

if TYPE_CHECKING:
    from ..state import BackendName
    from .rules import Rule

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
        raise NotAvailable(
            "the iptables NAT backend is not available",
            f"python-iptables is not installed for the plugin's Python: {sys.executable} -m pip install "
            "python-iptables (it compiles a C helper: apt-get install gcc libc6-dev) and install the iptables "
            "package (apt-get install iptables)",
        )
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
                "no xtables extensions directory on the node: install the iptables package "
                "(Debian/Ubuntu: apt-get install iptables; RHEL: dnf install iptables-legacy)",
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
        from iptc import ip4tc, ip6tc, xtables
    except Exception as e:
        raise NotAvailable(
            "the iptables NAT backend is not available",
            f"libxtables/libip4tc could not be loaded ({e}): install the iptables package (apt-get install iptables)",
        ) from None
    _fix_option_tables(xtables)
    _iptc = types.SimpleNamespace(ip4tc=ip4tc, ip6tc=ip6tc)
    return _iptc


def option_entry_stride(table_address: int, entry_cls: Any) -> int:
    """The size of libxtables' `struct xt_option_entry` that the option table at table_address uses.

    iptables 1.8.11 appended `unsigned int base` to the struct (the guided
    option parser's integers with a fixed base), growing it from 48 to 56
    bytes on 64-bit systems without a new soname (and XTABLES_VERSION is
    "libxtables.so.12" for both). python-iptables' ctypes copy has the old
    layout and walks every table in 48-byte steps: the first option is found,
    then it reads the first entry's `base` and padding, which are zero and look
    like the table's end. That is ldx/python-iptables#353: `udp` (moved to the
    guided parser) refuses `dport`, `multiport` refuses `dports`; `tcp` (old
    parser) and DNAT, SNAT, comment (the option used is the first) still work.

    The table itself tells the layouts apart, at byte 48 of its first entry:
    the old layout has the second entry's `name` there, a pointer into a
    shared library, which on 64-bit Linux is mapped above 4 GiB; the new one
    has `base` (0 unless an option asks for a fixed base, always small) and
    four bytes of zero padding. An old table with one option has its zeroed
    terminator there, which the new stride reads as a terminator too.
    """
    old = ctypes.sizeof(entry_cls)
    if ctypes.sizeof(ctypes.c_void_p) != 8:
        return old  # (only 64-bit builds are supported; the padding argument needs 8-byte pointers)
    at_old_end = ctypes.c_uint64.from_address(table_address + old).value
    if at_old_end >> 32:
        return old
    end = entry_cls.max.offset + entry_cls.max.size + ctypes.sizeof(ctypes.c_uint)  # ..., max, base
    align = ctypes.alignment(entry_cls)
    return int((end + align - 1) // align * align)


def _fix_option_tables(xtables: Any) -> None:
    """Make python-iptables walk x6 option tables with the entry size the loaded libxtables uses.

    Only the two helpers that walk a table are replaced (option lookup and the
    mandatory-option check); parsing itself stays python-iptables' own.
    """
    cls = xtables.xtables
    if getattr(cls, "_egress_router_fixed", False):
        return
    entry_cls = xtables.xt_option_entry

    def entries(table: Any) -> Iterator[Any]:
        address = ctypes.cast(table, ctypes.c_void_p).value
        if not address:
            return
        stride = option_entry_stride(address, entry_cls)
        index = 0
        while True:
            entry = entry_cls.from_address(address + index * stride)
            if not entry.name:
                return
            yield entry
            index += 1

    def option_lookup(self: Any, table: Any, name: bytes) -> Any:
        return next((entry for entry in entries(table) if entry.name == name), None)

    def options_fcheck(self: Any, name: bytes, xflags: int, table: Any) -> None:
        for entry in entries(table):
            if entry.flags & xtables.XTOPT_MAND and not xflags & (1 << entry.id):
                raise xtables.XTablesError(f"{name!r}: --{entry.name!r} must be specified")

    cls._option_lookup = option_lookup
    cls._options_fcheck = options_fcheck
    cls._egress_router_fixed = True


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
    """Install, remove, list and verify the router's NAT rules in the legacy xtables nat table.

    Every operation on a family runs in a forked child. libxtables registers an
    extension's targets only for the family current when the extension is first
    loaded, so once a process has seen IPv4 DNAT it can never find IPv6 DNAT
    (ldx/python-iptables#325): a dual-stack router, or a foreign ip6tables rule
    met while removing ours, would fail. The parent imports python-iptables but
    never loads an extension; each child loads them for its one family.
    """

    name: BackendName = Backend.IPTABLES

    def __init__(self) -> None:
        self.iptc = load_iptc()

    def __enter__(self) -> IptablesBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        pass  # every operation ran in a child that has exited: nothing is left open

    def install(self, rules: List[Rule], families: List[int], note: str = "") -> None:
        """Replace the plugin's rules of each family with rules (one commit per family), note in each comment."""
        note = note or COMMENT_PREFIX.strip()
        with xtables_lock():
            for family in families:
                mine = [_rule_to_json(r) for r in rules if r.family == family]
                _in_child(partial(_install_family, self.iptc, family, mine, note))

    def remove(self, families: List[int]) -> None:
        """Delete every rule carrying the plugin's comment; a missing table is not an error."""
        with xtables_lock():
            for family in families:
                _in_child(partial(_remove_family, self.iptc, family))

    def note(self, families: List[int]) -> Optional[str]:
        """The comment of the plugin's first rule (the state note), or None."""
        for family in families:
            text = _in_child(partial(_note_family, self.iptc, family))
            if text:
                return str(text)
        return None

    def installed(self, families: List[int]) -> Optional[List[Union[Rule, str]]]:
        """The rules carrying the plugin's comment (unrecognised ones as text), or None when there are none."""
        found: List[Union[Rule, str]] = []
        for family in families:
            for item in _in_child(partial(_list_family, self.iptc, family)) or []:
                found.append(item if isinstance(item, str) else _rule_from_json(item))
        return found or None


def _in_child(fn: Callable[[], Any]) -> Any:
    """Run fn in a forked child (same namespace, fresh extension registry); return its JSON-able value.

    A NatError or NotAvailable raised in the child is raised again here; any
    other exception becomes a NatError naming it.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns
        status = 0
        try:
            os.close(read_fd)
            try:
                reply: Dict[str, Any] = {"ok": fn()}
            except (NatError, NotAvailable) as e:
                reply = {"error": type(e).__name__, "msg": e.msg, "details": e.details}
            except Exception as e:
                reply = {"error": "NatError", "msg": "iptables failed", "details": f"{type(e).__name__}: {e}"}
            data = dumps(reply).encode()
            while data:
                data = data[os.write(write_fd, data) :]
        except BaseException:
            status = 1
        finally:
            os._exit(status)
    os.close(write_fd)
    chunks = []
    try:
        while True:
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_fd)
        os.waitpid(pid, 0)
    if not chunks:
        raise NatError("iptables failed", "the helper process died without an answer")
    reply = loads(b"".join(chunks).decode())
    if "error" in reply:
        cls = NotAvailable if reply["error"] == "NotAvailable" else NatError
        raise cls(reply["msg"], reply["details"])
    return reply["ok"]


def _table(iptc: Any, family: int) -> Any:
    mod = iptc.ip4tc if family == 4 else iptc.ip6tc
    cls = mod.Table if family == 4 else mod.Table6
    # python-iptables caches one handle per table name per process; each child is fresh.
    table = cls("nat", autocommit=False)
    table.refresh()
    return table


def _new_rule(iptc: Any, family: int, rule: Rule, note: str) -> Any:
    cls = iptc.ip4tc.Rule if family == 4 else iptc.ip6tc.Rule6
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


def _ours(table: Any) -> Iterator[Tuple[Any, Any]]:
    """(chain, rule) for each rule carrying our comment; a rule python-iptables cannot read is skipped."""
    for chain in table.chains:
        try:
            rules = list(chain.rules)
        except Exception:
            continue
        for rule in rules:
            if _comment(rule).startswith(COMMENT_PREFIX.strip()):
                yield chain, rule


def _install_family(iptc: Any, family: int, rules: List[Dict[str, Any]], note: str) -> None:
    table = _table(iptc, family)
    try:
        for chain, rule in list(_ours(table)):
            chain.delete_rule(rule)
        for item in rules:
            rule = _rule_from_json(item)
            chain_name = "PREROUTING" if isinstance(rule, DnatRule) else "POSTROUTING"
            iptc.ip4tc.Chain(table, chain_name).append_rule(_new_rule(iptc, family, rule, note))
        table.commit()  # one commit per family: all of its rules or none
    except Exception as e:
        raise NatError("iptables rejected the change", f"{type(e).__name__}: {e}") from e


def _remove_family(iptc: Any, family: int) -> None:
    try:
        table = _table(iptc, family)
    except Exception as e:
        if _missing_table(e):
            return
        raise NatError("failed to remove iptables rules", str(e)) from e
    ours = list(_ours(table))
    for chain, rule in ours:
        chain.delete_rule(rule)
    if ours:
        table.commit()


def _note_family(iptc: Any, family: int) -> Optional[str]:
    try:
        table = _table(iptc, family)
    except Exception:
        return None
    for _, rule in _ours(table):
        text = _comment(rule)
        if text.startswith(COMMENT_PREFIX):
            return text
    return None


def _list_family(iptc: Any, family: int) -> List[Any]:
    try:
        table = _table(iptc, family)
    except Exception:
        return []
    found: List[Any] = []
    for chain, rule in _ours(table):
        parsed = _parse(family, chain.name, rule)
        found.append(parsed if isinstance(parsed, str) else _rule_to_json(parsed))
    return found


def _rule_to_json(rule: Rule) -> Dict[str, Any]:
    data = {k: v for k, v in rule._asdict().items()}
    data["to_addr"] = str(rule.to_addr)
    data["kind"] = "dnat" if isinstance(rule, DnatRule) else "snat"
    return data


def _rule_from_json(data: Dict[str, Any]) -> Rule:
    fields = {k: v for k, v in data.items() if k != "kind"}
    fields["to_addr"] = ip_address(fields["to_addr"])
    return DnatRule(**fields) if data["kind"] == "dnat" else SnatRule(**fields)


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
                to_addr=ip_address(addr),
                protocol=proto,
                port=port,
                to_port=to_port,
            )
        if chain == "POSTROUTING" and target.name == "SNAT" and proto is None:
            return SnatRule(family=family, out_iface=_iface(rule.out_interface), to_addr=ip_address(target.to_source))
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
