"""The human CLI through the real entry point (not CliRunner): wiring, exit codes, stderr formats."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List

ROOT = Path(__file__).resolve().parents[2]


def run(args: List[str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    return subprocess.run(
        [sys.executable, "-m", "egress_router_cni", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
        timeout=60,
    )


def test_help_lists_every_command() -> None:
    proc = run(["--help"])
    assert proc.returncode == 0
    for command in ("inspect", "render", "validate", "version"):
        assert f"  {command} " in proc.stdout


def test_render_of_the_product_page_example_matches_the_golden_file() -> None:
    proc = run(["render", "-o", "json", "conf/egressrouter-example.yaml"])
    assert proc.returncode == 0, proc.stderr
    golden = json.loads((ROOT / "tests/golden/egressrouter-example.json").read_text())
    assert json.loads(proc.stdout) == golden


def test_validate_error_is_a_json_record_with_log_format_json() -> None:
    proc = run(["--log-format", "json", "validate", "-"], stdin='{"cniVersion": "0.4.0", "name": "x"}')
    assert proc.returncode == 1
    assert proc.stdout == ""
    record = json.loads(proc.stderr.strip().splitlines()[-1])
    assert record["level"] == "error"
    assert record["code"] == 7
    assert record["event"] == "missing 'ip' object"


def test_usage_error_exits_2() -> None:
    proc = run(["inspect"])
    assert proc.returncode == 2
    assert "exactly one of --netns, --pid, --container-id or --all" in proc.stderr
