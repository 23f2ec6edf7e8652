"""The pure parts of `inspect`: finding an attachment in libcni's cache and in the log file."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from egress_router_cni.router_view import find_cached, find_in_log, log_lines_for
from egress_router_cni.state import owner_id

CID = "3f2a9c" + "0" * 58


def _cache_entry(directory: Path, cid: str, plugin_type: str = "egress-router") -> None:
    config = {"cniVersion": "1.0.0", "name": "egress", "type": plugin_type}
    entry = {
        "kind": "cniCacheV1",
        "containerId": cid,
        "config": base64.b64encode(json.dumps(config).encode()).decode(),
        "ifName": "net1",
        "networkName": "egress",
        "result": {"cniVersion": "1.0.0", "interfaces": [{"name": "net1", "sandbox": "/var/run/netns/cni-1"}]},
    }
    (directory / f"egress-{cid}-net1").write_text(json.dumps(entry))


def test_find_cached_matches_a_container_id_prefix(tmp_path: Path) -> None:
    _cache_entry(tmp_path, CID)
    found = find_cached("3f2a", (str(tmp_path),))
    assert [(c.container_id, c.ifname, c.netns) for c in found] == [(CID, "net1", "/var/run/netns/cni-1")]
    assert found[0].config["type"] == "egress-router"


def test_find_cached_ignores_other_plugins_and_garbage(tmp_path: Path) -> None:
    _cache_entry(tmp_path, CID, plugin_type="bridge")
    (tmp_path / "broken").write_text("{not json")
    assert find_cached("3f2a", (str(tmp_path),)) == []


def _line(message: str) -> str:
    return f"2026-11-25T08:58:57Z [debug] {message}\n"


def test_log_lines_for_keeps_only_this_containers_latest_attachment(tmp_path: Path) -> None:
    log = tmp_path / "log"
    other = "b" * 64
    log.write_text(
        _line("Called CNI ADD")
        + _line(f"Container ID: {CID} Netns: /run/netns/old Interface: net1")
        + _line("first attach")
        + _line("Called CNI ADD")
        + _line(f"Container ID: {other} Netns: /run/netns/x Interface: net1")
        + _line("someone else")
        + _line("Called CNI ADD")
        + _line(f"Container ID: {CID} Netns: /run/netns/new Interface: net1")
        + _line("second attach")
        + _line("Called CNI CHECK")
        + _line(f"Container ID: {CID} Netns: /run/netns/new Interface: net1")
        + _line("CHECK passed")
    )
    lines = log_lines_for(owner_id(CID), str(log))
    assert [line.split("] ", 1)[1] for line in lines] == [
        "Called CNI ADD",
        f"Container ID: {CID} Netns: /run/netns/new Interface: net1",
        "second attach",
        "Called CNI CHECK",
        f"Container ID: {CID} Netns: /run/netns/new Interface: net1",
        "CHECK passed",
    ]
    assert find_in_log("3f2a", str(log)) == (CID, "/run/netns/new", "net1")


def test_log_lines_for_a_missing_file_is_empty(tmp_path: Path) -> None:
    assert log_lines_for(owner_id(CID), str(tmp_path / "absent")) == []
    assert find_in_log("3f2a", str(tmp_path / "absent")) is None


def test_log_readers_never_block_on_a_fifo_nor_follow_a_symlink(tmp_path: Path) -> None:
    """A local user may plant /tmp/egress-router-log as a FIFO or a symlink to a device: inspect must not hang."""
    import os

    fifo = tmp_path / "egress-router-log"
    os.mkfifo(fifo)
    assert log_lines_for(owner_id(CID), str(fifo)) == []
    assert find_in_log("3f2a", str(fifo)) is None
    link = tmp_path / "egress-router-link"
    link.symlink_to("/dev/zero")
    assert log_lines_for(owner_id(CID), str(link)) == []
