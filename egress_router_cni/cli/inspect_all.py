"""`egress-router inspect --all`: every egress router on the node, one row each, with a health verdict."""

from __future__ import annotations

import json
import os
import sys
from typing import Any, List, Optional, Sequence

import click

from ..errors import CniError
from .output import escaped, report


def find_routers(netns_dirs: Sequence[str], log_file: Optional[str]) -> List[Any]:
    """The rows of every router in the namespaces found (router_health.rows), in discovery order."""
    from ..node_scan import find_netns
    from ..router_health import rows
    from ..router_view import inspect_router

    found: List[Any] = []
    for ns in find_netns(netns_dirs):
        try:
            view = inspect_router(ns.path, ns.fd, log_file)
        except CniError:
            continue  # the namespace went away between finding and reading it: nothing to report
        if view is not None:
            found += rows(view)
    return found


def _table(routers: List[Any]) -> List[str]:
    header = ("NETNS", "CONTAINER", "POD", "INTERFACE", "ADDRESSES", "GATEWAY", "NAT", "HEALTH")
    lines = [header]
    for r in routers:
        lines.append(
            (
                r.netns,
                (r.container_id or "-")[:12],
                r.pod or "-",
                f"{r.interface}@{r.master}",
                ",".join(r.addresses) or "-",
                ",".join(r.gateways) or "-",
                f"{r.nat_backend or '-'}/{r.nat_rules}",
                "healthy" if r.healthy else "UNHEALTHY",
            )
        )
    cells = [[escaped(str(c)) for c in line] for line in lines]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    out = []
    for index, row in enumerate(cells):
        out.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
        if index > 0:
            out += [f"    - {escaped(p)}" for p in routers[index - 1].problems]
    return out


def run_all(netns_dirs: Sequence[str], log_file: Optional[str], output: str) -> None:
    """Print every router and exit: 0 when all are healthy (or there are none), 1 otherwise."""
    if os.geteuid() != 0:
        report("error", "inspect --all must run as root on the node (it enters every network namespace)")
        sys.exit(1)
    routers = find_routers(netns_dirs, log_file)
    unhealthy = sum(not r.healthy for r in routers)
    if output == "json":
        click.echo(json.dumps({"routers": [r.to_dict() for r in routers], "unhealthy": unhealthy}, indent=2))
    elif not routers:
        click.echo("No egress routers on this node.")
    else:
        for line in _table(routers):
            click.echo(line)
        click.echo(f"{len(routers)} egress router(s), {unhealthy} unhealthy")
    sys.exit(1 if unhealthy else 0)
