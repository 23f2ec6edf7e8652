"""Independent view of a network namespace, through iproute2 and nft only.

It MUST NOT import the plugin (or pyroute2): the tests judge the plugin's work
with a second, unrelated reader of the kernel state. Only the stdlib and the
`ip` / `nft` tools (and, for the iptables backend, `iptables-legacy-save` /
`ip6tables-legacy-save`) are used.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from typing import Any, Dict, List, Optional, Tuple

SNAPSHOT_SYSCTLS = ("net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding")
# Besides those two, a snapshot holds every forwarding flag under conf/*/ of both
# families: writing ip_forward or conf/all/forwarding rewrites all of them.
_FORWARDING_GLOBS = ("/proc/sys/net/ipv4/conf/*/forwarding", "/proc/sys/net/ipv6/conf/*/forwarding")
XTABLES_SAVE = {4: "iptables-legacy-save", 6: "ip6tables-legacy-save"}
# Fields that change without anyone touching the object (counters, timers) or
# that nft renumbers on every reload.
_VOLATILE_LINK_KEYS = frozenset({"stats", "stats64"})
_VOLATILE_ADDR_KEYS = frozenset({"valid_life_time", "preferred_life_time"})
_VOLATILE_ROUTE_KEYS = frozenset({"expires", "cacheinfo"})
_VOLATILE_NFT_KEYS = frozenset({"handle"})
_NOT_RULES = ("table ", "chain ", "type ", "policy ", "}")

Json = Any


def _run(argv: List[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def ip_json(ns: str, *args: str) -> Json:
    """`ip -j -n NS ARGS...` decoded; an empty answer is an empty list."""
    out = _run(["ip", "-j", "-n", ns, *args])
    return json.loads(out) if out.strip() else []


def netns_exec(ns: str, *argv: str) -> str:
    """Run a command inside NS (`ip netns exec`) and return its stdout."""
    return _run(["ip", "netns", "exec", ns, *argv])


def links(ns: str) -> List[Json]:
    """All links with details (`ip -d link`), as ip prints them."""
    return list(ip_json(ns, "-d", "link", "show"))


def link(ns: str, name: str) -> Optional[Json]:
    """One link by name with details, or None when it does not exist."""
    return next((x for x in links(ns) if x.get("ifname") == name), None)


def addresses(ns: str) -> List[Json]:
    """`ip addr show` per link: ifname plus its addr_info entries."""
    return list(ip_json(ns, "addr", "show"))


def ipv4_addresses(ns: str, ifname: str) -> List[str]:
    """The IPv4 CIDRs on one link, e.g. ['192.168.12.99/24']."""
    result: List[str] = []
    for entry in addresses(ns):
        if entry.get("ifname") != ifname:
            continue
        for info in entry.get("addr_info", []):
            if info.get("family") == "inet":
                result.append(f"{info['local']}/{info['prefixlen']}")
    return result


def ipv6_addresses(ns: str, ifname: str, scope: str = "global") -> List[str]:
    """The IPv6 CIDRs of one scope ('global', 'link') on one link, e.g. ['2001:db8:12::99/64']."""
    result: List[str] = []
    for entry in addresses(ns):
        if entry.get("ifname") != ifname:
            continue
        for info in entry.get("addr_info", []):
            if info.get("family") == "inet6" and info.get("scope") == scope:
                result.append(f"{info['local']}/{info['prefixlen']}")
    return result


def ipv6_address_flags(ns: str, ifname: str) -> Dict[str, List[str]]:
    """IPv6 address -> the DAD-related flags ip reports for it ('tentative', 'dadfailed', 'optimistic')."""
    flags: Dict[str, List[str]] = {}
    for entry in addresses(ns):
        if entry.get("ifname") != ifname:
            continue
        for info in entry.get("addr_info", []):
            if info.get("family") == "inet6":
                flags[info["local"]] = [k for k in ("tentative", "dadfailed", "optimistic") if info.get(k)]
    return flags


def routes(ns: str, family: str = "-4", table: str = "all") -> List[Json]:
    """`ip -4|-6 route show table TABLE`."""
    return list(ip_json(ns, family, "route", "show", "table", table))


def main_routes(ns: str, family: str = "-4") -> List[Tuple[str, str, str]]:
    """The main table of one family ('-4', '-6') as sorted (dst, gateway, dev) triples, 'default' for /0."""
    return sorted((r["dst"], r.get("gateway", ""), r.get("dev", "")) for r in routes(ns, family, "main"))


def route_lines(ns: str, family: str = "-4") -> List[str]:
    """`ip route` (or `ip -6 route`) as text lines, the way the product manual shows it."""
    out = _run(["ip", "-n", ns, family, "route", "show"])
    return [line.rstrip() for line in out.splitlines() if line.strip()]


def rules(ns: str) -> List[Json]:
    """Policy routing rules of both families."""
    return list(ip_json(ns, "-4", "rule", "show")) + list(ip_json(ns, "-6", "rule", "show"))


def sysctl(ns: str, key: str) -> str:
    """A sysctl read inside NS, key like 'net/ipv4/ip_forward'."""
    return netns_exec(ns, "cat", f"/proc/sys/{key}").strip()


def forwarding_sysctls(ns: str) -> Dict[str, str]:
    """SNAPSHOT_SYSCTLS plus net/ipv{4,6}/conf/*/forwarding (all, default, every link), read in one go."""
    paths = " ".join(f"/proc/sys/{key}" for key in SNAPSHOT_SYSCTLS) + " " + " ".join(_FORWARDING_GLOBS)
    out = netns_exec(ns, "sh", "-c", f"grep -H . {paths}")
    values: Dict[str, str] = {}
    for line in out.splitlines():
        path, _, value = line.partition(":")
        values[path.removeprefix("/proc/sys/")] = value.strip()
    return values


def xtables_available() -> bool:
    """iptables-legacy-save and ip6tables-legacy-save are installed (the iptables backend's oracle)."""
    return all(shutil.which(tool) for tool in XTABLES_SAVE.values())


def xtables_save(ns: str, family: int = 4, table: str = "nat") -> List[str]:
    """`iptables-legacy-save -t TABLE` (ip6tables- for 6) inside NS: chain policies and rules, no counters.

    Lines like ':POSTROUTING ACCEPT' and '-A PREROUTING -i eth0 -p tcp -m tcp --dport 8080 ... -j DNAT ...'.
    """
    text = netns_exec(ns, XTABLES_SAVE[family], "-t", table)
    return [
        re.sub(r"\s*\[\d+:\d+\]", "", line)
        for line in text.splitlines()
        if line.strip() and not line.startswith(("#", "*", "COMMIT"))
    ]


def xtables_rules(ns: str, family: int = 4, chain: Optional[str] = None) -> List[str]:
    """The '-A CHAIN ...' lines of the legacy nat table (of one CHAIN), in order."""
    prefix = f"-A {chain} " if chain else "-A "
    return [line for line in xtables_save(ns, family) if line.startswith(prefix)]


def nft_ruleset(ns: str) -> List[Json]:
    """`nft -j list ruleset` entries without metainfo (it carries the nft version)."""
    doc = json.loads(netns_exec(ns, "nft", "-j", "list", "ruleset"))
    return [item for item in doc.get("nftables", []) if "metainfo" not in item]


def nft_chains(ns: str, family: str, table: str) -> Dict[str, Json]:
    """The chains of one table by name, with type, hook and prio."""
    return {
        item["chain"]["name"]: item["chain"]
        for item in nft_ruleset(ns)
        if "chain" in item and item["chain"]["family"] == family and item["chain"]["table"] == table
    }


def nft_rule_lines(ns: str, family: str, table: str, chain: str) -> List[str]:
    """The rules of one chain in nft's own text form, e.g. 'iifname "eth0" tcp dport 8080 dnat to 203.0.113.26:80'."""
    text = netns_exec(ns, "nft", "list", "chain", family, table, chain)
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith(_NOT_RULES)]


def nft_table_exists(ns: str, family: str, table: str) -> bool:
    return any(
        "table" in item and item["table"]["family"] == family and item["table"]["name"] == table
        for item in nft_ruleset(ns)
    )


def netns_names() -> List[str]:
    """Names under /run/netns (`ip netns list`)."""
    return [entry["name"] for entry in json.loads(_run(["ip", "-j", "netns", "list"]) or "[]")]


def _strip(value: Json, volatile: frozenset[str]) -> Json:
    if isinstance(value, dict):
        return {k: _strip(v, volatile) for k, v in value.items() if k not in volatile}
    if isinstance(value, list):
        return [_strip(v, volatile) for v in value]
    return value


def _sorted(items: List[Json]) -> List[Json]:
    return sorted(items, key=lambda x: json.dumps(x, sort_keys=True))


def snapshot(ns: str, xtables: bool = False) -> Dict[str, Json]:
    """Everything the plugin may change in NS, in a form that compares with ==.

    Links (details, no counters), addresses, routes of every table of both
    families, policy rules, the forwarding sysctls (global and per link, both
    families) and the nft ruleset; with XTABLES, also the legacy nat tables of
    both families (iptables-legacy-save / ip6tables-legacy-save).
    """
    snap = {
        "links": _sorted(_strip(links(ns), _VOLATILE_LINK_KEYS)),
        "addresses": _sorted(_strip(addresses(ns), _VOLATILE_ADDR_KEYS)),
        "routes4": _sorted(_strip(routes(ns, "-4"), _VOLATILE_ROUTE_KEYS)),
        "routes6": _sorted(_strip(routes(ns, "-6"), _VOLATILE_ROUTE_KEYS)),
        "rules": _sorted(rules(ns)),
        "sysctls": forwarding_sysctls(ns),
        "nft": _strip(nft_ruleset(ns), _VOLATILE_NFT_KEYS),
    }
    if xtables:
        snap["xtables4"] = xtables_save(ns, 4)
        snap["xtables6"] = xtables_save(ns, 6)
    return snap


def snapshot_diff(before: Dict[str, Json], after: Dict[str, Json]) -> List[str]:
    """Human-readable differences between two snapshots (empty when equal)."""
    diffs: List[str] = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if isinstance(old, list) and isinstance(new, list):
            gone = [x for x in old if x not in new]
            added = [x for x in new if x not in old]
            diffs.append(f"{key}: removed {json.dumps(gone)} added {json.dumps(added)}")
        else:
            diffs.append(f"{key}: {json.dumps(old)} -> {json.dumps(new)}")
    return diffs
