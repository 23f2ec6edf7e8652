"""A pip-installed plugin on a stock Debian 12 node: no libnftables, no `nft`, no python-iptables.

That is what `pip install egress-router-cni` gives on a stock cloud image
(python3 and iptables, nothing else). The test builds that node for the real
executable: it runs `python3 -S` (no site-packages, so no python-iptables)
with only the plugin and its required dependencies on the path, in a private
mount namespace where libnftables.so.1 and the nft tool are /dev/null. The
node's network namespace and the pod are the usual test topology.

With `natBackend: auto`, ADD either sets up NAT anyway (the nftables backend
speaks nfnetlink itself: it needs neither), or fails with one error naming
both backends and what to install for each, leaving the pod exactly as it was
(tests/unit/test_nat_selection.py pins that error for a kernel without nf_tables).
"""

from __future__ import annotations

import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Dict, List, Set

import pytest

from tests import oracle
from tests.cni import IFNAME, Outcome, Plugin, router_config, single_json_document, with_prev_result
from tests.topology import Pod, Topology

pytestmark = pytest.mark.netns

REPO = Path(__file__).resolve().parents[2]
REQUIRED = ("pyroute2", "click", "structlog", "yaml")  # the [project] dependencies, by import name


def _hidden_nftables() -> List[str]:
    """Every file a stock node would lack: libnftables.so.1 wherever the loader finds it, and nft."""
    paths = set()
    for libdir in ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64"):
        candidate = Path(libdir) / "libnftables.so.1"
        if candidate.exists():
            paths.add(str(candidate.resolve()))
    nft = shutil.which("nft", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if nft:
        paths.add(str(Path(nft).resolve()))
    return sorted(paths)


@pytest.fixture
def stock_site(tmp_path: Path) -> Path:
    """A directory holding the plugin and its required dependencies only (no python-iptables)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "egress_router_cni").symlink_to(REPO / "egress_router_cni")
    for name in REQUIRED:
        # PathFinder looks on sys.path only: sys.modules may hold the plugin's lean pyroute2 stand-in.
        spec = importlib.machinery.PathFinder.find_spec(name)
        assert spec is not None and spec.submodule_search_locations, f"{name} is not installed"
        (site / name).symlink_to(next(iter(spec.submodule_search_locations)))
    return site


def _stock_run(
    topology: Topology, pod: Pod, site: Path, command: str, conf: Dict[str, object], cid: str
) -> Dict[str, object]:
    """Run one CNI command as the stock node would: exit status, stdout, stderr."""
    hide = " && ".join(f"mount --bind /dev/null {p}" for p in _hidden_nftables()) or "true"
    script = (
        f"{hide} && exec ip netns exec {topology.node} env PYTHONPATH={site} "
        f"CNI_COMMAND={command} CNI_CONTAINERID={cid} CNI_NETNS={pod.path} CNI_IFNAME={IFNAME} "
        f"CNI_PATH=/opt/cni/bin {sys.executable} -S -m egress_router_cni"
    )
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script],
        input=json.dumps(conf).encode(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    return {"rc": proc.returncode, "stdout": proc.stdout.decode(errors="replace"), "stderr": proc.stderr.decode()}


def test_stock_node_sets_up_nat_or_names_both_backends(
    topology: Topology, pod: Pod, stock_site: Path, log_file: Path
) -> None:
    conf = router_config("1.0.0", str(log_file), natBackend="auto")
    cid = "stock" + os.urandom(8).hex()
    # The stock node really lacks both: python-iptables is not importable there.
    probe = subprocess.run(
        [sys.executable, "-S", "-c", "import importlib.util as u; print(u.find_spec('iptc'), u.find_spec('yaml'))"],
        env={"PYTHONPATH": str(stock_site)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.startswith("None ModuleSpec"), probe.stdout
    before = oracle.snapshot(pod.ns, xtables=oracle.xtables_available())

    outcome = _stock_run(topology, pod, stock_site, "ADD", conf, cid)
    try:
        if outcome["rc"] == 0:
            # A backend that needs neither (nfnetlink spoken directly) set NAT up.
            assert oracle.nft_table_exists(pod.ns, "ip", "egress_cni"), outcome
            assert 'oifname "net1" snat to 192.168.12.99' in oracle.nft_rule_lines(
                pod.ns, "ip", "egress_cni", "postrouting"
            )
            return
        assert outcome["rc"] == 1, outcome
        error = single_json_document(str(outcome["stdout"]))
        assert error["code"] == 50, error
        assert error["msg"] == "no NAT backend is available (natBackend auto tried nftables, then iptables)"
        details = str(error["details"])
        # One error, both backends, and exactly what to install for each.
        assert details.startswith("nftables: neither libnftables.so.1 nor the nft tool was found"), details
        assert "apt-get install nftables" in details
        assert "; iptables: python-iptables is not installed" in details
        assert f"{sys.executable} -m pip install python-iptables" in details
        assert "apt-get install iptables" in details
        assert "Traceback" not in str(outcome["stderr"])
        assert oracle.snapshot(pod.ns, xtables=oracle.xtables_available()) == before, "a failed ADD changed the pod"
        lines = log_file.read_text().splitlines()
        assert any("[error] CNI ADD failed: no NAT backend is available" in line for line in lines), lines
    finally:
        # DEL as the same stock node: it must succeed (nothing to remove, or the rules ADD made).
        removed = _stock_run(topology, pod, stock_site, "DEL", conf, cid)
        assert removed["rc"] == 0, removed
        assert not oracle.nft_table_exists(pod.ns, "ip", "egress_cni")


def test_plain_install_reads_yaml(stock_site: Path) -> None:
    """`render` of the product page's YAML with only the required dependencies: PyYAML is one of them."""
    proc = subprocess.run(
        [sys.executable, "-S", "-m", "egress_router_cni", "render", "-o", "json", "conf/egressrouter-example.yaml"],
        env={"PYTHONPATH": str(stock_site), "PATH": os.environ.get("PATH", "")},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    kinds = [o["kind"] for o in json.loads(proc.stdout)["items"]]
    assert kinds == ["NetworkAttachmentDefinition", "Deployment", "Service"]


def test_pyyaml_is_a_required_dependency() -> None:
    from importlib.metadata import requires

    required = [r for r in requires("egress-router-cni") or [] if "extra ==" not in r]
    assert any(r.replace(" ", "").startswith("PyYAML>=") for r in required), required


# Modules CNI mode (ADD, CHECK, DEL, VERSION) must not import: the human CLI and its
# libraries, and the stdlib modules the hot path was weaned off (each costs
# milliseconds per exec, see docs/performance.md). Extend it as modules go.
# What is left is the interpreter's start-up and C modules (_json, _socket, _struct,
# fcntl, zlib, and _ctypes for setns before Python 3.12...).
FORBIDDEN_IN_CNI_MODE = (
    "yaml",
    "click",
    "structlog",
    "egress_router_cni.cli",
    "egress_router_cni.k8s",
    "logging",
    "subprocess",
    # typing and what it pulls in: annotations are strings, typing is imported for mypy only
    "typing",
    "_typing",
    "collections.abc",
    "contextlib",
    "warnings",
    "enum",  # error codes and NAT backend names are plain constants
    # records are record.Record, not dataclasses (which import inspect, ast, dis)
    "dataclasses",
    "inspect",
    # only an error path may print a traceback
    "traceback",
    # JSON through jsonio on `_json` (the package's decoder compiles regexes); no regex anywhere
    "json",
    "json.decoder",
    "json.encoder",
    "json.scanner",
    "re",
    # addresses through egress_router_cni.ipaddr (ipaddress imports functools and collections)
    "ipaddress",
    # what typing, enum, re and ipaddress pulled in; records use _collections' C field getter only
    "functools",
    "collections",
    "operator",
    "keyword",
    "reprlib",
    "itertools",
    "heapq",
    "copyreg",
    # setns(2) before Python 3.12 goes through `_ctypes` (netns.py); only the iptables backend
    # imports the package (the frozen bootstrap patches it then, see build.spec)
    "ctypes",
    "types",
    "struct",
)


def _cni_imports(outcome: Outcome) -> Set[str]:
    """The modules an `-X importtime` run imported, by name."""
    # "import time:       123 |        456 | package.module" (and one header line, not numeric)
    rows = [line[len("import time:") :].split("|") for line in outcome.stderr.splitlines()]
    return {row[2].strip() for row in rows if len(row) == 3 and row[0].strip().isdigit()}


def test_cni_mode_imports_only_what_it_uses(topology: Topology, pod: Pod, log_file: Path) -> None:
    """VERSION, ADD, CHECK and DEL of a real router, with every import the interpreter made listed (-X importtime).

    `-S`: no site, so no `.pth` file (an editable install's finder imports pathlib,
    re, ipaddress... itself) pollutes the list; the package comes from the
    checkout and its dependencies from site-packages, both on PYTHONPATH. Only
    the plugin's own imports and the interpreter's start-up are listed.
    """
    env = {"PYTHONPATH": f"{REPO}:{sysconfig.get_paths()['purelib']}"}
    found = subprocess.run(
        [sys.executable, "-S", "-c", "import egress_router_cni as p; print(p.__file__)"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert found.stdout.strip() == str(REPO / "egress_router_cni" / "__init__.py"), found.stdout

    # As the frozen entry (scripts/lib/pyi_entry.py) starts it: `-m` would list runpy's imports too.
    entry = "from egress_router_cni.__main__ import main; main()"
    plugin = Plugin(topology.node, [sys.executable, "-S", "-X", "importtime", "-c", entry])
    conf = router_config("1.0.0", str(log_file))
    version = plugin.run("VERSION", {"cniVersion": "1.0.0"}, env=env)
    assert version.returncode == 0, version.describe()
    added = plugin.run("ADD", conf, pod.path, env=env)
    try:
        assert added.returncode == 0, added.describe()
        checked = plugin.run("CHECK", with_prev_result(conf, added.document()), pod.path, env=env)
        assert checked.returncode == 0, checked.describe()
    finally:
        deleted = plugin.run("DEL", conf, pod.path, env=env)
    assert deleted.returncode == 0, deleted.describe()
    for outcome, last in ((version, "protocol"), (added, "add"), (checked, "check"), (deleted, "teardown")):
        imported = _cni_imports(outcome)
        assert f"egress_router_cni.{last}" in imported, imported  # the import list is complete
        leaked = sorted(
            name for name in imported if any(name == f or name.startswith(f + ".") for f in FORBIDDEN_IN_CNI_MODE)
        )
        assert not leaked, f"CNI mode imported {leaked}"
    # A good ADD never rolls back: the undo list and the link deletion it forks for stay unloaded.
    rollback_only = {"egress_router_cni.teardown", "egress_router_cni.unlink", "select"}
    assert not rollback_only & _cni_imports(added), _cni_imports(added)
