"""scripts/install.sh: install into a temporary prefix, re-install, upgrade, uninstall.

Every path is under tmp_path: the tests never touch /opt. A fake onedir tree
(a shell script plus an _internal/ directory) stands in for the PyInstaller
build, so no build is needed; one test uses the real dist/egress-router when
it exists.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import List

import pytest

REPO = Path(__file__).resolve().parents[2]
INSTALL = REPO / "scripts" / "install.sh"
DIST = REPO / "dist" / "egress-router"


def make_tree(root: Path, marker: str) -> Path:
    """A stand-in for a onedir build whose executable prints marker and the _internal file next to it."""
    tree = root / f"tree-{marker}"
    (tree / "_internal").mkdir(parents=True)
    (tree / "_internal" / "payload.txt").write_text(marker)
    exe = tree / "egress-router"
    # Like the PyInstaller bootloader, resolve the real location through the symlinks.
    exe.write_text('#!/bin/sh\nd=$(dirname "$(readlink -f "$0")")\ncat "$d/_internal/payload.txt"\n')
    exe.chmod(0o755)
    return tree


def run_install(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["bash", str(INSTALL), *args], capture_output=True, text=True, timeout=120, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"install.sh {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def listing(root: Path) -> List[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    return {"prefix": tmp_path / "opt" / "egress-router", "bin": tmp_path / "cni" / "bin", "root": tmp_path}


def install_args(dirs: dict[str, Path], tree: Path) -> List[str]:
    return ["--prefix", str(dirs["prefix"]), "--cni-bin-dir", str(dirs["bin"]), "--from", str(tree)]


def test_install_creates_tree_and_cni_symlink(dirs: dict[str, Path]) -> None:
    tree = make_tree(dirs["root"], "v1")
    run_install(*install_args(dirs, tree))
    link = dirs["bin"] / "egress-router"
    assert link.is_symlink()
    assert os.readlink(link) == str(dirs["prefix"] / "egress-router")
    apps = list(dirs["prefix"].glob("app-*"))
    assert len(apps) == 1
    assert (apps[0] / "_internal" / "payload.txt").read_text() == "v1"
    assert subprocess.run([str(link)], capture_output=True, text=True, check=True).stdout == "v1"


def test_install_twice_changes_nothing(dirs: dict[str, Path]) -> None:
    tree = make_tree(dirs["root"], "v1")
    run_install(*install_args(dirs, tree))
    before = {p: p.lstat().st_ino for p in dirs["prefix"].rglob("*") if p.name != ".install-manifest"}
    proc = run_install(*install_args(dirs, tree))
    assert "already installed" in proc.stdout
    after = {p: p.lstat().st_ino for p in dirs["prefix"].rglob("*") if p.name != ".install-manifest"}
    assert before == after


def test_install_upgrade_switches_link_and_keeps_one_previous_tree(dirs: dict[str, Path]) -> None:
    link = dirs["bin"] / "egress-router"
    for version in ("v1", "v2", "v3"):
        run_install(*install_args(dirs, make_tree(dirs["root"], version)))
        assert subprocess.run([str(link)], capture_output=True, text=True, check=True).stdout == version
    payloads = sorted((app / "_internal" / "payload.txt").read_text() for app in dirs["prefix"].glob("app-*"))
    assert payloads == ["v2", "v3"]
    assert not list(dirs["prefix"].glob(".*.tmp.*"))


def test_uninstall_removes_exactly_what_was_installed(dirs: dict[str, Path]) -> None:
    dirs["bin"].mkdir(parents=True)
    dirs["prefix"].parent.mkdir(parents=True)  # like /opt: there before, there after
    other_plugin = dirs["bin"] / "macvlan"
    other_plugin.write_text("not ours")
    tree = make_tree(dirs["root"], "v1")
    before = listing(dirs["root"])
    run_install(*install_args(dirs, tree))
    run_install(*install_args(dirs, make_tree(dirs["root"], "v2")))
    proc = run_install("--prefix", str(dirs["prefix"]), "--uninstall")
    assert "removed" in proc.stdout
    v2 = ["tree-v2", "tree-v2/_internal", "tree-v2/_internal/payload.txt", "tree-v2/egress-router"]
    assert listing(dirs["root"]) == sorted(before + v2)
    assert other_plugin.read_text() == "not ours"
    assert dirs["bin"].is_dir()  # it existed before the install


def test_uninstall_removes_bin_dir_it_created(dirs: dict[str, Path]) -> None:
    run_install(*install_args(dirs, make_tree(dirs["root"], "v1")))
    run_install("--prefix", str(dirs["prefix"]), "--uninstall")
    assert not dirs["bin"].exists()
    assert not dirs["prefix"].exists()


def test_uninstall_twice_succeeds(dirs: dict[str, Path]) -> None:
    run_install(*install_args(dirs, make_tree(dirs["root"], "v1")))
    run_install("--prefix", str(dirs["prefix"]), "--uninstall")
    proc = run_install("--prefix", str(dirs["prefix"]), "--uninstall")
    assert "nothing installed" in proc.stdout


def test_uninstall_leaves_a_replaced_cni_link(dirs: dict[str, Path]) -> None:
    run_install(*install_args(dirs, make_tree(dirs["root"], "v1")))
    link = dirs["bin"] / "egress-router"
    link.unlink()
    link.write_text("someone else's plugin")
    proc = run_install("--prefix", str(dirs["prefix"]), "--uninstall")
    assert link.read_text() == "someone else's plugin"
    assert "leaving" in proc.stderr


def test_install_refuses_foreign_cni_binary_without_force(dirs: dict[str, Path]) -> None:
    dirs["bin"].mkdir(parents=True)
    foreign = dirs["bin"] / "egress-router"
    foreign.write_text("the Go plugin")
    tree = make_tree(dirs["root"], "v1")
    proc = run_install(*install_args(dirs, tree), check=False)
    assert proc.returncode == 1
    assert "--force" in proc.stderr
    assert foreign.read_text() == "the Go plugin"
    assert not dirs["prefix"].exists()
    run_install(*install_args(dirs, tree), "--force")
    assert foreign.is_symlink()


def test_install_refuses_a_prefix_it_does_not_own(dirs: dict[str, Path]) -> None:
    dirs["prefix"].mkdir(parents=True)
    (dirs["prefix"] / "data").write_text("keep me")
    proc = run_install(*install_args(dirs, make_tree(dirs["root"], "v1")), check=False)
    assert proc.returncode == 1
    assert "refusing" in proc.stderr
    assert listing(dirs["prefix"]) == ["data"]


def test_install_refuses_a_system_prefix(dirs: dict[str, Path]) -> None:
    tree = make_tree(dirs["root"], "v1")
    proc = run_install("--prefix", "/usr", "--cni-bin-dir", str(dirs["bin"]), "--from", str(tree), check=False)
    assert proc.returncode == 1
    assert "refusing --prefix /usr" in proc.stderr


def test_install_rejects_a_tree_that_is_not_a_onedir_build(dirs: dict[str, Path]) -> None:
    empty = dirs["root"] / "empty"
    empty.mkdir()
    proc = run_install(*install_args(dirs, empty), check=False)
    assert proc.returncode == 1
    assert "not a onedir build" in proc.stderr


@pytest.mark.skipif(not (DIST / "egress-router").exists(), reason="no dist/egress-router: run scripts/build.sh")
def test_installed_frozen_build_answers_version(dirs: dict[str, Path]) -> None:
    run_install("--prefix", str(dirs["prefix"]), "--cni-bin-dir", str(dirs["bin"]))
    proc = subprocess.run(
        [str(dirs["bin"] / "egress-router")],
        env={"CNI_COMMAND": "VERSION", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert '"supportedVersions"' in proc.stdout
    run_install("--prefix", str(dirs["prefix"]), "--uninstall")
    assert not dirs["prefix"].exists()
