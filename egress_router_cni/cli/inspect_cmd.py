"""`egress-router inspect`: one command instead of the product page's eight verification steps."""

from __future__ import annotations

import json
import sys
from typing import IO, Any, Dict, Optional, Tuple

import click

from ..config import DEFAULT_LOG_FILE
from ..errors import CniError
from .output import escaped, report


def _check(view: Any, netns: str, config: Optional[Dict[str, Any]], cached: Any) -> Any:
    """Run CHECK's verification against the config given or the one libcni cached."""
    from ..check import Expected, verify
    from ..config import parse_netconf
    from ..link import get_link
    from ..nat import recorded_backend
    from ..nat.rules import build_rules
    from ..netlink import Netlink
    from ..netns import NetNS
    from .validate_cmd import _plugin_conf

    if config is None and cached is not None:
        config = _plugin_conf(cached.config)
    if config is None:
        raise click.UsageError("--check needs --config FILE (or --container-id with a libcni cache entry)")
    conf = parse_netconf(_plugin_conf(config))
    ifname = cached.ifname if cached is not None else (view.interfaces[0]["name"] if view.interfaces else "net1")
    rules = build_rules(conf, ifname)
    with NetNS(netns) as ns:
        ns.enter()
        with Netlink() as pod:
            link = get_link(pod, ifname)
            container = cached.container_id if cached is not None else None
            with recorded_backend(link.state() if link else None, conf.nat_backend) as backend:
                return verify(pod, backend, conf, Expected(ifname, rules, container))


def _echo(text: str) -> None:
    click.echo(escaped(text))


def _print_text(view: Any) -> None:
    _echo(f"Router network namespace: {view.netns}")
    if not view.interfaces:
        _echo("  no egress-router interface found")
    for i in view.interfaces:
        _echo(
            f"Interface {i['name']}: {i['type']} mode {i['mode']} on master {i['master']}, mac {i['mac']}, "
            f"mtu {i['mtu']}, {i['state']}"
        )
        _echo(f"  addresses: {', '.join(i['addresses']) or '(none)'}")
    _echo("Routes (ip route):")
    for r in view.routes:
        _echo(f"  {r}")
    if view.saved_routes:
        _echo("Pod's original default routes (restored on DEL):")
        for r in view.saved_routes:
            _echo(f"  {r}")
    _echo("Forwarding: " + ", ".join(f"{k}={v}" for k, v in view.forwarding.items()))
    if not view.nat:
        _echo("NAT rules: none")
    for backend, rules in view.nat.items():
        _echo(f"NAT rules ({backend}):")
        for r in rules:
            _echo(f"  {r}")
    if view.problems is not None:
        _echo("CHECK: passed" if not view.problems else "CHECK: FAILED")
        for p in view.problems:
            _echo(f"  - {p}")
    _echo(f"Log ({view.log_file}):" if view.log_lines else f"Log ({view.log_file}): no lines for this router")
    for line in view.log_lines:
        _echo(f"  {line}")


@click.command()
@click.option("--netns", "netns", metavar="PATH", help="The router pod's network namespace path.")
@click.option("--pid", type=int, help="A process in the router pod (e.g. from `crictl inspect`).")
@click.option("--container-id", metavar="ID", help="The pod sandbox id (a prefix is enough).")
@click.option(
    "--all",
    "all_routers",
    is_flag=True,
    help="Every egress router on the node, one row each; exit 1 if any is unhealthy.",
)
@click.option(
    "--log-file",
    metavar="PATH",
    help=f"The plugin's log file [default: the one ADD recorded with the router, else {DEFAULT_LOG_FILE}].",
)
@click.option("--check", "run_check", is_flag=True, help="Also verify it as CNI CHECK does; exit 1 if wrong.")
@click.option("--config", type=click.File("rb"), help="Config (plugin conf, conflist or NAD) for --check.")
@click.option(
    "--netns-dir",
    "netns_dirs",
    metavar="DIR",
    multiple=True,
    help="With --all: where namespaces are pinned, instead of /run/netns and /var/run/netns (repeatable).",
)
@click.option("--output", "-o", type=click.Choice(["text", "json"]), default="text", show_default=True)
def inspect(
    netns: Optional[str],
    pid: Optional[int],
    container_id: Optional[str],
    all_routers: bool,
    log_file: Optional[str],
    run_check: bool,
    config: Optional[IO[bytes]],
    netns_dirs: Tuple[str, ...],
    output: str,
) -> None:
    """Show a running router: interface, routes, NAT rules, forwarding and its log lines.

    Read-only. Run it on the router's node (as root), e.g. from `oc debug node/NODE` after `chroot /host`.
    With --all, every router on the node (in every pinned namespace and every process's namespace),
    one row each with a health verdict.

    Examples: egress-router inspect --container-id 3f2a --check; egress-router inspect --all
    """
    from ..config import decode_json
    from ..router_view import inspect_netns, resolve_target

    if all_routers:
        if netns or pid is not None or container_id or run_check or config:
            raise click.UsageError("--all takes none of --netns, --pid, --container-id, --check or --config")
        from ..node_scan import NETNS_DIRS
        from .inspect_all import run_all

        run_all(netns_dirs or NETNS_DIRS, log_file, output)
    if netns_dirs:
        raise click.UsageError("--netns-dir goes with --all")
    if sum(x is not None for x in (netns, pid, container_id)) != 1:
        raise click.UsageError("give exactly one of --netns, --pid, --container-id or --all")
    try:
        path, cached = resolve_target(netns, pid, container_id, log_file)
        view = inspect_netns(path, log_file)
        if run_check:
            view.problems = _check(view, path, decode_json(config.read()) if config else None, cached)
    except CniError as e:
        report("error", e.msg, details=e.details, code=int(e.code))
        sys.exit(1)
    if output == "json":
        click.echo(json.dumps(view.to_dict(), indent=2))
    else:
        _print_text(view)
    if view.problems:
        sys.exit(1)
