"""`egress-router validate`: check a config (plugin config, conflist or NAD) and show its NAT rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List

import pytest
from click.testing import CliRunner, Result

from egress_router_cni.cli import cli
from tests.samples import seed_plugin_conf

SEED_NFT_RULES = [
    'iifname "eth0" udp dport 80 dnat to 10.0.0.99',
    'iifname "eth0" tcp dport 8080 dnat to 203.0.113.26:80',
    'iifname "eth0" tcp dport 8443 dnat to 203.0.113.27:443',
    'oifname "net1" snat to 192.168.12.99',
]


def plugin_conf(**extra: Any) -> Dict[str, Any]:
    return seed_plugin_conf(**extra)


def conflist(plugins: List[Dict[str, Any]]) -> Dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": "egress-net", "plugins": plugins}


def nad(config: Dict[str, Any]) -> Dict[str, Any]:
    return {
        "apiVersion": "k8s.cni.cncf.io/v1",
        "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": "egress-router-cni-nad", "namespace": "egress"},
        "spec": {"config": json.dumps(config)},
    }


def make_runner() -> CliRunner:
    """A runner with stdout and stderr apart, on click 8.1 (mix_stderr) and 8.2+ (always apart)."""
    legacy: Dict[str, Any] = {"mix_stderr": False}
    try:
        return CliRunner(**legacy)
    except TypeError:
        return CliRunner()


def validate(tmp_path: Path, obj: Any, *args: str) -> Result:
    path = tmp_path / "conf.json"
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return make_runner().invoke(cli, ["validate", str(path), *args])


def test_cli_validate_valid_config_prints_the_rules(tmp_path: Path) -> None:
    result = validate(tmp_path, plugin_conf())
    assert result.exit_code == 0, result.output
    assert "valid: network 'egress-router-cni-nad', cniVersion 0.4.0" in result.stdout
    for rule in SEED_NFT_RULES:
        assert f"  {rule}\n" in result.stdout
    assert result.stderr == ""


def test_cli_validate_invalid_config_exits_1_with_the_message_on_stderr(tmp_path: Path) -> None:
    obj = plugin_conf()
    obj["ip"]["destinations"] = ["80 icmp 10.0.0.1"]
    result = validate(tmp_path, obj)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "'80 icmp 10.0.0.1'" in result.stderr
    assert "(CNI error code 7)" in result.stderr


def test_cli_validate_unsupported_field_reports_code_2(tmp_path: Path) -> None:
    result = validate(tmp_path, plugin_conf(podIP={"10.0.0.1": "x"}))
    assert result.exit_code == 1
    assert "(CNI error code 2)" in result.stderr


def test_cli_validate_bad_json_reports_code_6(tmp_path: Path) -> None:
    result = validate(tmp_path, '{"cniVersion": ')
    assert result.exit_code == 1
    assert "(CNI error code 6)" in result.stderr


def test_cli_validate_reads_stdin_by_default() -> None:
    result = make_runner().invoke(cli, ["validate"], input=json.dumps(plugin_conf()))
    assert result.exit_code == 0, result.output
    assert SEED_NFT_RULES[0] in result.stdout


def test_cli_validate_conflist_uses_the_egress_router_plugin_and_the_list_envelope(tmp_path: Path) -> None:
    inner = plugin_conf()
    del inner["cniVersion"], inner["name"]
    result = validate(tmp_path, conflist([{"type": "tuning"}, inner]))
    assert result.exit_code == 0, result.output
    assert "valid: network 'egress-net', cniVersion 1.0.0" in result.stdout


def test_cli_validate_conflist_without_egress_router_exits_1(tmp_path: Path) -> None:
    result = validate(tmp_path, conflist([{"type": "macvlan"}]))
    assert result.exit_code == 1
    assert "no plugin of type 'egress-router'" in result.stderr


def test_cli_validate_nad_wrapped_config(tmp_path: Path) -> None:
    result = validate(tmp_path, nad(plugin_conf()))
    assert result.exit_code == 0, result.output
    assert SEED_NFT_RULES[1] in result.stdout


def test_cli_validate_nad_wrapping_a_conflist(tmp_path: Path) -> None:
    inner = plugin_conf()
    del inner["cniVersion"], inner["name"]
    result = validate(tmp_path, nad(conflist([inner])))
    assert result.exit_code == 0, result.output
    assert "network 'egress-net'" in result.stdout


def test_cli_validate_nad_with_broken_inner_json_exits_1(tmp_path: Path) -> None:
    result = validate(tmp_path, {"kind": "NetworkAttachmentDefinition", "spec": {"config": "{broken"}})
    assert result.exit_code == 1
    assert "(CNI error code 6)" in result.stderr


def test_cli_validate_output_json(tmp_path: Path) -> None:
    result = validate(tmp_path, plugin_conf(), "--output", "json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["valid"] is True
    assert doc["addresses"] == ["192.168.12.99/24"]
    assert doc["gateways"] == ["192.168.12.1"]
    assert doc["destinations"] == plugin_conf()["ip"]["destinations"]
    assert [r["nft"] for r in doc["rules"]] == SEED_NFT_RULES
    assert doc["rules"][-1]["iptables"] == "iptables -t nat -o net1 -j SNAT --to-source 192.168.12.99"


def test_cli_validate_output_nft_is_a_batch(tmp_path: Path) -> None:
    result = validate(tmp_path, plugin_conf(), "-o", "nft")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "add table ip egress_cni"
    assert lines[-1] == 'add rule ip egress_cni postrouting oifname "net1" snat to 192.168.12.99'
    assert all(line.startswith(("add ", "delete ")) for line in lines)


def test_cli_validate_ifname_option_names_the_snat_interface(tmp_path: Path) -> None:
    result = validate(tmp_path, plugin_conf(), "--ifname", "egress0")
    assert result.exit_code == 0, result.output
    assert 'oifname "egress0" snat to 192.168.12.99' in result.stdout


def test_cli_validate_unsafe_ifname_exits_1(tmp_path: Path) -> None:
    result = validate(tmp_path, plugin_conf(), "--ifname", 'net1"; flush ruleset; "')
    assert result.exit_code == 1
    assert "(CNI error code 7)" in result.stderr


@pytest.mark.parametrize("output", ["xml", "yaml-ish"])
def test_cli_validate_unknown_output_is_a_usage_error(tmp_path: Path, output: str) -> None:
    assert validate(tmp_path, plugin_conf(), "--output", output).exit_code == 2


def test_cli_validate_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    result = make_runner().invoke(cli, ["validate", str(tmp_path / "absent.json")])
    assert result.exit_code == 2


def test_cli_validate_touches_nothing_it_is_pure(tmp_path: Path) -> None:
    before = sorted(p.name for p in tmp_path.iterdir())
    validate(tmp_path, plugin_conf(log_file=str(tmp_path / "should-not-exist")))
    assert sorted(p.name for p in tmp_path.iterdir()) == [*before, "conf.json"]


# --- --policy (issue 13) ----------------------------------------------------------------------------


def write_policy(tmp_path: Path, policy: Any) -> Path:
    path = tmp_path / "policy.json"
    path.write_text(policy if isinstance(policy, str) else json.dumps(policy))
    path.chmod(0o644)
    return path


@pytest.mark.parametrize(
    ("policy", "changes", "named"),
    [
        (
            {"allowedMasters": ["eth1"]},
            {"interfaceArgs": {"master": "ens4"}},
            "allowedMasters does not allow master 'ens4'",
        ),
        ({}, {"interfaceArgs": {"mode": "passthru"}}, "allowedModes does not allow interfaceArgs.mode 'passthru'"),
        (
            {"allowedAddressRanges": ["192.168.13.0/24"]},
            {},
            "allowedAddressRanges does not allow reserved address 192.168.12.99/24",
        ),
        (
            {"allowedDestinationRanges": ["203.0.113.0/24"]},
            {},
            "allowedDestinationRanges does not allow destination '80 UDP 10.0.0.99/30'",
        ),
    ],
)
def test_cli_validate_policy_violation_names_file_key_and_value(
    tmp_path: Path, policy: Dict[str, Any], changes: Dict[str, Any], named: str
) -> None:
    path = write_policy(tmp_path, policy)
    result = validate(tmp_path, plugin_conf(**changes), "--policy", str(path))
    assert result.exit_code == 1, result.output
    assert f"{path}: {named}" in result.stderr
    assert "(CNI error code 106)" in result.stderr


def test_cli_validate_policy_allowing_passthru(tmp_path: Path) -> None:
    path = write_policy(tmp_path, {"allowedModes": ["bridge", "passthru"]})
    result = validate(tmp_path, plugin_conf(interfaceArgs={"mode": "passthru"}), "--policy", str(path))
    assert result.exit_code == 0, result.output
    assert f"allowed by the node policy {path}" in result.stderr


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('{"allowedModes": ["turbo"]}', "allowedModes: 'turbo' is not one of"),
        ('{"allowedMode": ["bridge"]}', "unknown key 'allowedMode'"),
        ('{"allowedAddressRanges": ["nope"]}', "allowedAddressRanges: 'nope' is not a CIDR"),
        ('{"logDirectories": ["/var/../etc"]}', "logDirectories: '/var/../etc' is not an absolute path"),
        ('{"addressConflictDetection": "yes"}', "addressConflictDetection: expected true or false"),
        ("[1]", "expected a JSON object"),
    ],
)
def test_cli_validate_bad_policy_file_is_refused(tmp_path: Path, text: str, named: str) -> None:
    path = write_policy(tmp_path, text)
    result = validate(tmp_path, plugin_conf(), "--policy", str(path))
    assert result.exit_code == 1, result.output
    assert named in result.stderr and "(CNI error code 106)" in result.stderr


def test_cli_validate_escapes_control_characters_of_the_config(tmp_path: Path) -> None:
    """A config author may put terminal escapes in an interface name; the operator's terminal never sees them."""
    result = validate(tmp_path, plugin_conf(interfaceArgs={"master": "e\x1b[2Jx"}))
    assert result.exit_code == 0, result.output
    assert "master:             e\\x1b[2Jx" in result.output and "\x1b" not in result.output
