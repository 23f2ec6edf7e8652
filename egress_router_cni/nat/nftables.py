"""The default NAT backend: nftables, one atomic batch, a table the plugin owns.

libnftables (the library behind `nft`) is loaded with ctypes by its fixed
soname and runs in-process; where it is missing, `nft -f -` is spawned.
Either acts on the network namespace the process is in when it is called.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any, List, Optional, Union

from .. import spawn
from ..errors import NatError, NotAvailable
from ..state import Backend
from .nftables_text import FAMILIES, TABLE, render_install, render_remove, rule_text
from .rules import DnatRule, Rule, SnatRule

NFT_CTX_OUTPUT_JSON = 1 << 4
NOT_FOUND = (
    "neither libnftables.so.1 nor the nft tool was found on the node: install the nftables package "
    "(Debian/Ubuntu: apt-get install nftables; RHEL: dnf install nftables)"
)
_lib: Any = None
# Contexts are freed by release() when the CNI command ends, not after each
# batch: closing a netfilter socket right after a commit waits for nf_tables to
# free the transaction (an RCU grace period, 6-20 ms here); DEL deletes the
# link during that time instead of waiting.
_spent: List[Any] = []


def _library() -> Any:
    global _lib
    if _lib is None:
        import ctypes

        try:
            lib = ctypes.CDLL("libnftables.so.1")
        except OSError:
            _lib = False
            return _lib
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
        lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        _lib = lib
    return _lib


def release() -> None:
    """Free the libnftables contexts of this command (closing their netlink sockets)."""
    while _spent:
        _lib.nft_ctx_free(_spent.pop())


def nft(commands: str, json_output: bool = False) -> str:
    """Run an nft batch in the current network namespace; return its output or raise NatError."""
    lib = _library()
    if lib:
        # At most one context alive at a time: libnftables before 1.0 (Debian 11's
        # 0.9.8, bundled in the portable build) keeps global state that every
        # nft_ctx_free tears down, so freeing two contexts that were alive at the
        # same time aborts with a double free. Only the last batch of a command
        # commits (ADD: list, install; DEL: note, list, remove), so its context is
        # still the one left for release() at the end.
        release()
        ctx = lib.nft_ctx_new(0)
        if not ctx:
            raise NatError("failed to run nftables", "nft_ctx_new failed")
        try:
            lib.nft_ctx_buffer_output(ctx)
            lib.nft_ctx_buffer_error(ctx)
            if json_output:
                lib.nft_ctx_output_set_flags(ctx, NFT_CTX_OUTPUT_JSON)
            rc = lib.nft_run_cmd_from_buffer(ctx, commands.encode())
            out = (lib.nft_ctx_get_output_buffer(ctx) or b"").decode("utf-8", "replace")
            err = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode("utf-8", "replace")
        finally:
            _spent.append(ctx)
        if rc != 0:
            raise NatError("nftables rejected the change", err.strip() or f"nft returned {rc}")
        return out
    tool = spawn.find_tool("nft")
    if tool is None:
        raise NotAvailable("nftables is not available", NOT_FOUND)
    argv = (tool, "-j", "-f", "-") if json_output else (tool, "-f", "-")
    status, out_b, err_b = spawn.run(argv, commands.encode())
    if status != 0:
        raise NatError("nftables rejected the change", err_b.decode("utf-8", "replace").strip())
    return out_b.decode("utf-8", "replace")


class NftablesBackend:
    """Install, remove, list and verify the router's NAT rules with nftables."""

    name = Backend.NFTABLES

    def install(self, rules: List[Rule], families: List[int], note: str = "") -> None:
        nft(render_install(rules, families, note))

    def note(self, families: List[int]) -> Optional[str]:
        """The note stored with the rules at install time (the table comment), if any."""
        for family in families:
            try:
                out = nft(f"list table {FAMILIES[family]} {TABLE}")
            except NatError:
                continue
            # nft 1.0.x leaves table comments out of its JSON output: read the text form.
            match = re.search(r'^\s*comment "([^"]*)"', out, re.MULTILINE)
            if match:
                return match.group(1)
        return None

    def remove(self, families: List[int]) -> None:
        nft(render_remove(families))

    def describe(self, rule: Rule) -> str:
        return f"Added nftables rule: {rule_text(rule)}"

    def exists(self, family: int) -> bool:
        try:
            nft(f"list table {FAMILIES[family]} {TABLE}", json_output=True)
        except NatError:
            return False
        return True

    def list(self, families: List[int]) -> Optional[List[Union[Rule, str]]]:
        """The rules in the plugin's tables (unrecognised ones as text), or None if no table exists."""
        found: List[Union[Rule, str]] = []
        any_table = False
        for family in families:
            try:
                out = nft(f"list table {FAMILIES[family]} {TABLE}", json_output=True)
            except NatError:
                continue
            any_table = True
            for item in json.loads(out).get("nftables", []):
                rule = item.get("rule")
                if rule is not None:
                    found.append(_parse_rule(family, rule))
        return found if any_table else None

    def available(self) -> None:
        """Raise NotAvailable when nftables cannot be used here."""
        nft("list tables")


def _parse_rule(family: int, rule: Any) -> Union[Rule, str]:
    """Map an nft JSON rule back to our rule types; anything else is returned as a short text."""
    exprs = rule.get("expr", [])
    iface = proto = None
    port = None
    try:
        for expr in exprs:
            if "match" in expr:
                left, right = expr["match"]["left"], expr["match"]["right"]
                if "meta" in left and left["meta"]["key"] in ("iifname", "oifname"):
                    iface = (left["meta"]["key"], right)
                elif "payload" in left and left["payload"].get("field") == "dport":
                    proto, port = left["payload"]["protocol"], int(right)
                else:
                    raise ValueError
            elif "dnat" in expr and iface and iface[0] == "iifname" and rule["chain"] == "prerouting":
                d = expr["dnat"]
                return DnatRule(
                    family=family,
                    in_iface=iface[1],
                    to_addr=ipaddress.ip_address(d["addr"]),
                    protocol=proto,
                    port=port,
                    to_port=int(d["port"]) if "port" in d else None,
                )
            elif "snat" in expr and iface and iface[0] == "oifname" and rule["chain"] == "postrouting":
                if proto is not None or "port" in expr["snat"]:
                    raise ValueError
                return SnatRule(family=family, out_iface=iface[1], to_addr=ipaddress.ip_address(expr["snat"]["addr"]))
            else:
                raise ValueError
    except (KeyError, TypeError, ValueError):
        pass
    return f"{rule.get('chain', '?')}: " + json.dumps(exprs)[:200]


def nftables_present() -> bool:
    """True when nft rules can be loaded here (library or tool), without touching any ruleset."""
    return bool(_library()) or spawn.find_tool("nft") is not None


def nftables_problem() -> Optional[str]:
    """Why nftables does not work in the current namespace (None when it does), with what to install."""
    if not nftables_present():
        return NOT_FOUND
    try:
        nft("list tables")
    except (NatError, NotAvailable) as e:
        # The kernel may lack nf_tables (module not loadable, or forbidden in this namespace).
        return f"the kernel refused nf_tables here ({e.details or e.msg}): check that the nf_tables module loads"
    return None
