"""The node policy file: who may write it, how it parses, what it allows (issue 13)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict

import pytest

from egress_router_cni import policy as policy_module
from egress_router_cni.config import parse_netconf
from egress_router_cni.errors import CniError, ErrorCode
from egress_router_cni.policy import DEFAULT_MODES, DEFAULT_POLICY_FILE, POLICY_ENV, load_policy, node_policy
from tests.samples import seed_plugin_conf


def write(tmp_path: Path, obj: Any, mode: int = 0o644) -> Path:
    path = tmp_path / "policy.json"
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    path.chmod(mode)
    return path


def conf(**extra: Any) -> Any:
    return parse_netconf(seed_plugin_conf(**extra))


def test_policy_missing_file_is_the_default_policy(tmp_path: Path) -> None:
    policy = load_policy(str(tmp_path / "absent.json"))
    assert not policy.present and not policy.problem
    assert policy.allowed_modes == DEFAULT_MODES and "passthru" not in DEFAULT_MODES
    assert policy.violations(conf()) == []


def test_policy_default_refuses_passthru_naming_the_key_and_the_file(tmp_path: Path) -> None:
    policy = load_policy(str(tmp_path / "absent.json"))
    with pytest.raises(CniError) as exc:
        policy.enforce(conf(interfaceArgs={"mode": "passthru"}))
    assert exc.value.code == ErrorCode.POLICY_VIOLATION == 106
    assert str(tmp_path / "absent.json") in str(exc.value) and "allowedModes" in str(exc.value)


@pytest.mark.skipif(os.geteuid() != 0, reason="a root-owned file needs root")
@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666])
def test_policy_writable_by_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    policy = load_policy(str(write(tmp_path, {"allowedModes": ["passthru"]}, mode)))
    assert policy.problem and "writable by group or others" in policy.problem
    # Fail closed: nothing is allowed, not even what the defaults allow.
    with pytest.raises(CniError) as exc:
        policy.enforce(conf())
    assert exc.value.code == 106 and str(tmp_path) in str(exc.value)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_policy_not_owned_by_root_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, {})
    os.chown(path, 65534, 65534)
    assert "owned by uid 65534, not root" in load_policy(str(path)).problem


def test_policy_directory_or_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert "not a regular file" in load_policy(str(fifo)).problem
    assert load_policy(str(tmp_path)).problem


@pytest.mark.skipif(os.geteuid() != 0, reason="a root-owned file needs root")
def test_policy_keys_parse(tmp_path: Path) -> None:
    policy = load_policy(
        str(
            write(
                tmp_path,
                {
                    "allowedMasters": ["ens4"],
                    "allowedModes": ["Bridge", "passthru"],
                    "allowedAddressRanges": ["192.168.12.0/24"],
                    "allowedDestinationRanges": ["203.0.113.0/24", "10.0.0.96/30"],
                    "logDirectories": ["/var/log/egress/"],
                    "addressConflictDetection": True,
                },
            )
        )
    )
    assert not policy.problem
    assert policy.allowed_masters == ("ens4",) and policy.allowed_modes == ("bridge", "passthru")
    assert policy.log_directories == ("/var/log/egress",)
    assert policy.conflict_detection(conf()) is True
    assert policy.conflict_detection(conf(addressConflictDetection=False)) is False


@pytest.mark.parametrize(
    ("policy", "extra", "key"),
    [
        ({"allowedMasters": ["eth1"]}, {"interfaceArgs": {"master": "ens4"}}, "allowedMasters"),
        ({"allowedModes": ["vepa"]}, {}, "allowedModes"),
        ({"allowedAddressRanges": ["2001:db8::/32"]}, {}, "allowedAddressRanges"),
        ({"allowedDestinationRanges": ["10.0.0.96/30", "203.0.113.26/32"]}, {}, "allowedDestinationRanges"),
    ],
)
def test_policy_each_key_violated(policy: Dict[str, Any], extra: Dict[str, Any], key: str) -> None:
    parsed = policy_module.parse_policy(json.dumps(policy).encode(), "/etc/egress-router/policy.json")
    found = parsed.violations(conf(**extra))
    assert found and all(f.startswith(f"/etc/egress-router/policy.json: {key} does not allow") for f in found)


def test_policy_fallback_destination_must_be_in_range() -> None:
    parsed = policy_module.parse_policy(b'{"allowedDestinationRanges": ["10.0.0.0/8", "203.0.113.0/24"]}', "p")
    config = seed_plugin_conf()
    config["ip"]["fallbackIP"] = "198.51.100.1"
    assert parsed.violations(parse_netconf(config)) == [
        "p: allowedDestinationRanges does not allow fallback '198.51.100.1' (allowed: 10.0.0.0/8, 203.0.113.0/24)"
    ]


def test_policy_master_is_checked_against_the_resolved_interface() -> None:
    parsed = policy_module.parse_policy(b'{"allowedMasters": ["ens4"]}', "p")
    assert parsed.violations(conf()) == []  # no master in the config: ADD resolves it first
    assert parsed.violations(conf(), master="ens5") and parsed.violations(conf(), master="ens4") == []


def test_policy_path_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(policy_module, "_loaded", None)
    monkeypatch.delenv(POLICY_ENV, raising=False)
    assert policy_module.policy_path() == DEFAULT_POLICY_FILE
    monkeypatch.setenv(POLICY_ENV, str(tmp_path / "p.json"))
    assert node_policy().path == str(tmp_path / "p.json")
