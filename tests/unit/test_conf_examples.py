"""Every example under conf/ is a valid config (what the README points people at must work)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from egress_router_cni.cli import cli

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
POLICY = CONF_DIR / "policy.json"  # a node policy, not a network config
EXAMPLES = sorted(p for p in CONF_DIR.iterdir() if p.suffix in (".conf", ".conflist", ".json") and p != POLICY)


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_conf_example_validates(path: Path) -> None:
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("valid: ")
    assert "snat to" in result.output


def test_nad_example_validates() -> None:
    pytest.importorskip("yaml")
    result = CliRunner().invoke(cli, ["validate", str(CONF_DIR / "egress-router-nad.yaml")])
    assert result.exit_code == 0, result.output
    assert 'iifname "eth0" tcp dport 8080 dnat to 203.0.113.26:80' in result.output


@pytest.mark.parametrize("name", ["egress-router.conf", "egress-router-full.conf"])
def test_policy_example_allows_the_config_examples(name: str) -> None:
    result = CliRunner().invoke(cli, ["validate", "--policy", str(POLICY), str(CONF_DIR / name)])
    assert result.exit_code == 0, result.output
    assert f"allowed by the node policy {POLICY}" in result.output
