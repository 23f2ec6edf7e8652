"""Issue 13: a hostile network config cannot hurt the node.

Each finding of the review is replayed against the real executable in
throwaway namespaces; the assertions look at the file system and the kernel
(ip, nft) rather than at the plugin's own words.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from tests import oracle
from tests.cni import Outcome, Plugin, plugin_command, router_config
from tests.netns.test_bad_input import assert_cni_error
from tests.topology import Pod, Topology

pytestmark = pytest.mark.netns

DEFAULT_LOG = Path("/tmp/egress-router-log")
VICTIM_BYTES = 11 * 1000 * 1000  # above the 10 MiB rotation threshold


@pytest.fixture
def outside_dir() -> Iterator[Path]:
    """A directory outside /tmp and /var/log, where no config may make the plugin write or rename."""
    path = Path(tempfile.mkdtemp(prefix="ert-victim-", dir="/var/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def log_dir() -> Iterator[Path]:
    """A directory the rules accept: /tmp/egress-router-*."""
    path = Path(tempfile.mkdtemp(prefix="egress-router-test-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def big_file(path: Path) -> None:
    with open(path, "wb") as f:
        f.truncate(VICTIM_BYTES)  # sparse: large to stat(), cheap on disk


def failing_add(plugin: Plugin, pod: Pod, log_file: str) -> Outcome:
    """An ADD that logs and then fails (no such master): what a retrying kubelet repeats."""
    conf = router_config("1.0.0", log_file, interfaceArgs={"master": "nosuch0"})
    outcome = plugin.add(conf, pod.path)
    assert_cni_error(outcome, 7)
    return outcome


def assert_refused(outcome: Outcome, path: str) -> None:
    """One warning on stderr, and an [error] line naming the refused path in the default log."""
    warnings = [line for line in outcome.stderr.splitlines() if "refusing log_file" in line]
    assert len(warnings) == 1 and repr(path) in warnings[0], outcome.describe()
    lines = DEFAULT_LOG.read_text(errors="replace").splitlines()
    assert any("[error] refusing log_file" in line and repr(path) in line for line in lines[-200:]), (
        f"no [error] line for {path} in {DEFAULT_LOG}"
    )


# --- finding 1: log_file ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ld.so.preload", "egress-router-log"])
def test_log_file_outside_the_log_directories_is_never_created(
    name: str, topology: Topology, pod: Pod, plugin: Plugin, outside_dir: Path
) -> None:
    """The router still works; the config's path is neither created nor appended to."""
    target = outside_dir / name
    existing = outside_dir / "nologin"
    existing.write_text("precious\n")
    conf = router_config("1.0.0", str(target))
    outcome = plugin.add(conf, pod.path)
    assert outcome.returncode == 0, outcome.describe()
    assert_refused(outcome, str(target))
    assert sorted(p.name for p in outside_dir.iterdir()) == ["nologin"]
    conf_existing = router_config("1.0.0", str(existing))
    assert plugin.delete(conf_existing, pod.path).returncode == 0
    assert existing.read_text() == "precious\n"


def test_rotation_never_moves_a_large_file_outside_the_log_rules(
    pod: Pod, plugin: Plugin, outside_dir: Path, log_dir: Path
) -> None:
    """An 11 MB file outside the directories, or with another name inside them, stays where it is."""
    victims = [outside_dir / "egress-router-meta.db", log_dir / "meta.db"]
    for victim in victims:
        big_file(victim)
        for _ in range(3):  # a kubelet retrying a failing pod
            assert_refused(failing_add(plugin, pod, str(victim)), str(victim))
        assert victim.stat().st_size == VICTIM_BYTES
        assert not Path(f"{victim}.1").exists()


def test_rotation_never_replaces_a_symlink(pod: Pod, plugin: Plugin, outside_dir: Path, log_dir: Path) -> None:
    """A legitimate log at its cap, whose backup name is a symlink: the link and its target survive."""
    log_file = log_dir / "egress-router-log"
    big_file(log_file)
    victim = outside_dir / "lib.so.1"
    victim.write_text("precious\n")
    (log_dir / "egress-router-log.1").symlink_to(victim)
    for _ in range(2):
        outcome = failing_add(plugin, pod, str(log_file))
        assert "not rotating" in outcome.stderr, outcome.describe()
    assert (log_dir / "egress-router-log.1").is_symlink()
    assert victim.read_text() == "precious\n"
    assert log_file.stat().st_size == VICTIM_BYTES, "log writing must stop rather than grow past the cap"


def test_rotation_of_an_accepted_log_stays_in_its_directory(pod: Pod, plugin: Plugin, log_dir: Path) -> None:
    log_file = log_dir / "egress-router-log"
    big_file(log_file)
    failing_add(plugin, pod, str(log_file))
    assert (log_dir / "egress-router-log.1").stat().st_size == VICTIM_BYTES
    assert "CNI ADD failed" in log_file.read_text()


def test_log_file_in_proc_sys_is_never_written(topology: Topology, pod: Pod) -> None:
    """A log_file of /proc/sys/kernel/hostname once set the node's hostname; run in a private UTS namespace."""
    script = 'hostname ert-uts-probe; "$@"; rc=$?; echo "hostname-after=$(hostname)" >&2; exit $rc'
    plugin = Plugin(topology.node, ["unshare", "--uts", "sh", "-c", script, "sh", *plugin_command()])
    path = "/proc/sys/kernel/hostname"
    outcome = plugin.add(router_config("1.0.0", path, interfaceArgs={"master": "nosuch0"}), pod.path)
    assert_cni_error(outcome, 7)
    assert "hostname-after=ert-uts-probe" in outcome.stderr, outcome.describe()
    assert_refused(outcome, path)


def test_log_file_through_a_symlinked_directory_is_refused(
    pod: Pod, plugin: Plugin, outside_dir: Path, log_dir: Path
) -> None:
    (log_dir / "link").symlink_to(outside_dir)
    path = str(log_dir / "link" / "egress-router-log")
    outcome = failing_add(plugin, pod, path)
    assert_refused(outcome, path)
    assert "is a symbolic link" in outcome.stderr
    assert list(outside_dir.iterdir()) == []


def test_a_refused_log_file_never_changes_the_verdict(topology: Topology, pod: Pod, plugin: Plugin) -> None:
    """ADD/DEL with a refused path behave exactly as with an accepted one; only the log moves."""
    path = f"/etc/egress-router-{uuid.uuid4().hex}"
    before = oracle.snapshot(pod.ns)
    conf = router_config("1.0.0", path)
    assert plugin.add(conf, pod.path).returncode == 0
    assert plugin.delete(conf, pod.path).returncode == 0
    assert not oracle.snapshot_diff(before, oracle.snapshot(pod.ns))
    assert not os.path.exists(path)
