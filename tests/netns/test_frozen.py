"""The PyInstaller build (scripts/build.sh): its bundle self-test, and a router built through an install.

The rest of the end-to-end suite runs against the frozen executable with
EGRESS_ROUTER_EXE=dist/egress-router/egress-router; these tests cover what only
the frozen forms have: the bundled modules and libraries, the LD_LIBRARY_PATH
the bootloader sets, and the installed layout (a symlink in the CNI bin dir
to a onedir tree elsewhere), which the runtime execs by its symlinked path.
Skipped when dist/ holds no build.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any, Dict, Optional

import pytest

from tests import oracle
from tests.cni import IFNAME, Plugin, router_config, with_prev_result
from tests.topology import RESERVED_IP, Pod, Topology, parse_reply

REPO = Path(__file__).resolve().parents[2]
BUILDS = {
    "onedir": REPO / "dist" / "egress-router" / "egress-router",
    "onefile": REPO / "dist" / "onefile" / "egress-router",
}
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def built(form: str) -> Path:
    exe = BUILDS[form]
    if not exe.exists():
        pytest.skip(f"no {exe.relative_to(REPO)}: run scripts/build.sh")
    return exe


def selftest(exe: Path, extra_env: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    env = {"PATH": CLEAN_PATH, "EGRESS_ROUTER_SELFTEST": "1", **(extra_env or {})}
    proc = subprocess.run([str(exe)], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"self-test failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    report: Dict[str, Any] = json.loads(proc.stdout)
    return report


@pytest.mark.parametrize("form", sorted(BUILDS))
def test_frozen_bundle_selftest(form: str) -> None:
    """[form] The plugin and the CLI load from the bundle; CNI mode imports no pyroute2, ctypes or logging.

    ctypes is not even imported by the bootstrap (build.spec: pyimod03_ctypes
    patches it on its first import), and once imported it has the patch.
    """
    report = selftest(built(form))
    assert report["frozen"] is True
    assert report["hot_path_stays_lean"]["ok"], report["hot_path_stays_lean"]
    assert report["ctypes_patched_on_import"]["ok"], report["ctypes_patched_on_import"]
    assert report["cli_commands"]["ok"], report["cli_commands"]


@pytest.mark.parametrize("form", sorted(BUILDS))
@pytest.mark.parametrize("original", [None, "/opt/vendor/lib"])
def test_frozen_host_tools_get_the_original_ld_library_path(form: str, original: Optional[str]) -> None:
    """[form] The bundle's library dir is on LD_LIBRARY_PATH for the plugin, never for the tools it execs."""
    report = selftest(built(form), {"LD_LIBRARY_PATH": original} if original else None)
    own = report["ld_library_path"]["self"] or ""
    assert report["meipass"] in own.split(":")
    assert report["ld_library_path"]["host_tools"] == original


@pytest.mark.netns
def test_installed_plugin_builds_a_router(tmp_path: Path, topology: Topology, pod: Pod, log_file: Path) -> None:
    """install.sh's symlink in a CNI bin dir serves ADD, CHECK, DEL, DEL; traffic leaves from the reserved IP."""
    built("onedir")
    cni_bin = tmp_path / "cni-bin"
    subprocess.run(
        [
            "bash",
            str(REPO / "scripts" / "install.sh"),
            "--prefix",
            str(tmp_path / "prefix"),
            "--cni-bin-dir",
            str(cni_bin),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    plugin = Plugin(topology.node, command=[str(cni_bin / "egress-router")])
    conf = router_config("1.0.0", str(log_file))

    added = plugin.add(conf, pod.path)
    assert added.returncode == 0, added.describe()
    result = added.document()
    assert [i["name"] for i in result["interfaces"]] == [IFNAME]
    assert oracle.link(pod.ns, IFNAME) is not None
    assert oracle.nft_table_exists(pod.ns, "ip", "egress_cni")
    reply = parse_reply(topology.request("tcp", 8080))
    assert reply["peer_ip"] == RESERVED_IP, reply

    cached = with_prev_result(conf, result)
    checked = plugin.check(cached, pod.path)
    assert checked.returncode == 0, checked.describe()
    for _ in range(2):
        deleted = plugin.delete(cached, pod.path)
        assert deleted.returncode == 0, deleted.describe()
    assert oracle.link(pod.ns, IFNAME) is None
    assert not oracle.nft_table_exists(pod.ns, "ip", "egress_cni")
    assert os.path.islink(cni_bin / "egress-router")
