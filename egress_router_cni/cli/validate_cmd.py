"""`egress-router validate CONFIG`: check a config and show the NAT rules it would install."""

from __future__ import annotations

import json
import sys
from typing import IO, Any, Dict, Optional

import click

from ..config import NetConf, decode_json, parse_netconf
from ..errors import CniError, DecodingFailure, ErrorCode
from .output import echo, report


def _load_document(data: bytes) -> Dict[str, Any]:
    """JSON, or YAML (a NetworkAttachmentDefinition manifest) when PyYAML is installed."""
    try:
        return decode_json(data)
    except DecodingFailure:
        try:
            import yaml
        except ImportError:
            raise
        try:
            doc = yaml.safe_load(data)
        except yaml.YAMLError:
            raise DecodingFailure("neither JSON nor YAML", "could not parse the file") from None
        if not isinstance(doc, dict):
            raise DecodingFailure("neither JSON nor YAML", "expected an object at the top level") from None
        return doc


def _plugin_conf(obj: Dict[str, Any]) -> Dict[str, Any]:
    """Accept a plugin config, a conflist (first egress-router plugin) or a NAD's spec.config."""
    if isinstance(obj.get("spec"), dict) and isinstance(obj["spec"].get("config"), str):
        obj = decode_json(obj["spec"]["config"].encode())
    if isinstance(obj.get("plugins"), list):
        for plugin in obj["plugins"]:
            if isinstance(plugin, dict) and plugin.get("type") == "egress-router":
                merged = dict(plugin)
                merged["cniVersion"] = obj.get("cniVersion", plugin.get("cniVersion"))
                merged["name"] = obj.get("name", plugin.get("name"))
                return merged
        raise click.ClickException("the conflist has no plugin of type 'egress-router'")
    return obj


@click.command()
@click.argument("config", type=click.File("rb"), default="-")
@click.option("--ifname", default="net1", show_default=True, help="Router interface name (CNI_IFNAME).")
@click.option("--output", "-o", type=click.Choice(["text", "json", "nft"]), default="text", show_default=True)
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also check CONFIG against this node policy file (exit 1, code 106, on a violation).",
)
def validate(config: IO[bytes], ifname: str, output: str, policy_file: Optional[str]) -> None:
    """Validate CONFIG (a plugin config, conflist or NAD; '-' for stdin) and print its NAT rules.

    Touches nothing on the system. Exit status 1 when the config is invalid,
    with the same message the plugin would return to the runtime.

    Example: egress-router validate conf/egress-router.conf
             egress-router validate --policy conf/policy.json conf/egress-router.conf
    """
    from ..nat.nftables_text import render_install, rule_text
    from ..nat.rules import build_rules, iptables_spelling

    try:
        obj = _plugin_conf(_load_document(config.read()))
        conf = parse_netconf(obj)
        rules = build_rules(conf, ifname)
    except CniError as e:
        report("invalid", e.msg, details=e.details, code=int(e.code))
        sys.exit(1)
    if policy_file is not None:
        _check_policy(policy_file, conf)
    if output == "nft":
        click.echo(render_install(rules, list(conf.families())), nl=False)
        return
    if output == "json":
        click.echo(
            json.dumps(
                {
                    "valid": True,
                    "addresses": [str(a) for a in conf.addresses],
                    "gateways": [str(g) for g in conf.gateways],
                    "destinations": [d.describe() for d in conf.destinations],
                    "rules": [{"nft": rule_text(r), "iptables": iptables_spelling(r)} for r in rules],
                },
                indent=2,
            )
        )
        return
    echo(f"valid: network {conf.name!r}, cniVersion {conf.cni_version}")
    echo(f"  reserved addresses: {', '.join(str(a) for a in conf.addresses)}")
    echo(f"  gateways:           {', '.join(str(g) for g in conf.gateways)}")
    echo(f"  master:             {conf.master or '(the node interface holding the default route)'}")
    echo(f"  macvlan mode:       {conf.mode}; mtu {conf.mtu or 'of the master'}")
    echo("NAT rules (nftables):")
    for rule in rules:
        echo(f"  {rule_text(rule)}")


def _check_policy(path: str, conf: NetConf) -> None:
    """The verdict the node would give, offline; the file's owner and mode are checked only on a node."""
    from ..policy import load_policy, parse_policy

    try:
        with open(path, "rb") as f:
            policy = parse_policy(f.read(), path)
    except OSError as e:
        raise click.ClickException(f"cannot read the policy file {path}: {e.strerror}") from None
    except ValueError as e:
        report("invalid", "node policy file refused", details=f"{path}: {e}", code=int(ErrorCode.POLICY_VIOLATION))
        sys.exit(1)
    problem = load_policy(path).problem
    if problem:
        report("note", "on a node this file would be refused", details=problem)
    violations = policy.violations(conf)
    for violation in violations:
        report(
            "invalid", "the node policy forbids this config", details=violation, code=int(ErrorCode.POLICY_VIOLATION)
        )
    if violations:
        sys.exit(1)
    if conf.master is None and policy.allowed_masters is not None:
        report(
            "note", "interfaceArgs.master is not set: ADD checks the default route's interface against allowedMasters"
        )
    report("note", f"allowed by the node policy {path}")
