"""The plugin's log file: line format, levels, and the defences of issue 4 item 7 and issue 13 (confinement).

The log path comes from a config a cluster user may write and the plugin runs
as root, so each defence is tested with the attack it stops.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import re
import stat
from pathlib import Path
from typing import Any, List

import pytest

from egress_router_cni import log
from egress_router_cni.log import PluginLog, format_line

LINE_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \[(debug|verbose|error|panic)\] (.*)$")


def lines_of(path: Path) -> List[str]:
    return path.read_text().splitlines() if path.exists() else []


def messages_of(path: Path) -> List[str]:
    out = []
    for line in lines_of(path):
        match = LINE_RE.match(line)
        assert match, f"malformed log line {line!r}"
        out.append(match.group(2))
    return out


@pytest.fixture(autouse=True)
def default_log(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the default log path (where refused paths fall back to) into a directory of its own."""
    fallback = tmp_path_factory.mktemp("default") / "egress-router-log"
    monkeypatch.setattr(log, "DEFAULT_LOG_FILE", str(fallback))
    return fallback


def open_log(path: Path, **kwargs: Any) -> PluginLog:
    kwargs.setdefault("stderr", io.StringIO())
    return PluginLog(str(path), **kwargs)


# --- format ----------------------------------------------------------------------------------


def test_log_line_format_is_rfc3339_utc_level_message() -> None:
    line = format_line("debug", "Called CNI ADD")
    assert line.endswith("\n")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \[debug\] Called CNI ADD", line[:-1])


def test_log_written_line_matches_the_seed_format(tmp_path: Path) -> None:
    path = tmp_path / "egress-router-log"
    plugin_log = open_log(path)
    plugin_log.debug("Gateway: 192.168.12.1")
    plugin_log.close()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \[debug\] Gateway: 192\.168\.12\.1\n", path.read_text())


def test_log_appends_to_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "egress-router-log"
    path.write_text("2021-04-26T12:27:20Z [debug] earlier line\n")
    plugin_log = open_log(path)
    plugin_log.debug("Called CNI ADD")
    plugin_log.close()
    assert messages_of(path) == ["earlier line", "Called CNI ADD"]


@pytest.mark.parametrize(
    ("level", "kept"),
    [
        ("debug", ["d", "v", "e", "p"]),
        ("verbose", ["v", "e", "p"]),
        ("error", ["e", "p"]),
        ("panic", ["p"]),
    ],
)
def test_log_level_filters_lower_levels(tmp_path: Path, level: str, kept: List[str]) -> None:
    path = tmp_path / "egress-router-log"
    plugin_log = open_log(path, level=level)
    plugin_log.debug("d")
    plugin_log.verbose("v")
    plugin_log.error("e")
    plugin_log.write("panic", "p")
    plugin_log.close()
    assert messages_of(path) == kept


@pytest.mark.parametrize("message", ["a\nb", "a\r\nb", "a\rb", "x\n2021-04-26T12:27:20Z [error] forged record"])
def test_log_newline_in_a_message_cannot_forge_a_record(tmp_path: Path, message: str) -> None:
    path = tmp_path / "egress-router-log"
    plugin_log = open_log(path)
    plugin_log.debug(message)
    plugin_log.close()
    assert len(messages_of(path)) == 1
    assert "\\n" in messages_of(path)[0] or "\\r" in messages_of(path)[0]


def test_log_undecodable_text_is_written_not_raised(tmp_path: Path) -> None:
    # os.environ hands non-UTF-8 bytes over as lone surrogates.
    path = tmp_path / "egress-router-log"
    plugin_log = open_log(path)
    plugin_log.debug("ifname \udcff")
    plugin_log.close()
    assert len(lines_of(path)) == 1


def test_log_json_format_is_one_object_per_line(tmp_path: Path) -> None:
    path = tmp_path / "egress-router-log"
    plugin_log = open_log(path, fmt="json", context={"container_id": "3f2a", "command": "ADD"})
    plugin_log.debug("Called CNI ADD")
    plugin_log.error("two\nlines")
    plugin_log.close()
    records = [json.loads(line) for line in lines_of(path)]
    assert [(r["level"], r["msg"]) for r in records] == [("debug", "Called CNI ADD"), ("error", "two\nlines")]
    assert all(r["container_id"] == "3f2a" and r["command"] == "ADD" for r in records)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", r["time"]) for r in records)


def test_log_json_format_honours_the_level(tmp_path: Path) -> None:
    path = tmp_path / "egress-router-log"
    plugin_log = open_log(path, fmt="json", level="error")
    plugin_log.debug("hidden")
    plugin_log.error("shown")
    plugin_log.close()
    assert [json.loads(line)["msg"] for line in lines_of(path)] == ["shown"]


# --- opening the file safely -----------------------------------------------------------------


def test_log_new_file_is_created_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "egress-router-log"
    old_umask = os.umask(0)
    try:
        open_log(path).close()
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_log_existing_file_mode_is_untouched(tmp_path: Path) -> None:
    path = tmp_path / "egress-router-log"
    path.write_text("")
    path.chmod(0o644)
    plugin_log = open_log(path)
    plugin_log.debug("x")
    plugin_log.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert len(lines_of(path)) == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_log_existing_file_owner_is_untouched(tmp_path: Path) -> None:
    path = tmp_path / "egress-router-log"
    path.write_text("")
    os.chown(path, 65534, 65534)
    plugin_log = open_log(path)
    plugin_log.debug("x")
    plugin_log.close()
    st = path.stat()
    assert (st.st_uid, st.st_gid) == (65534, 65534)
    assert len(lines_of(path)) == 1


def test_log_symlink_at_the_path_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    path = tmp_path / "egress-router-log"
    path.symlink_to(victim)
    stderr = io.StringIO()
    plugin_log = open_log(path, stderr=stderr)
    plugin_log.debug("attacker-controlled text")
    plugin_log.close()
    assert victim.read_text() == "precious\n"
    assert path.is_symlink()
    assert "refusing log_file" in stderr.getvalue()


def test_log_dangling_symlink_is_not_followed_to_create_a_file(tmp_path: Path) -> None:
    target = tmp_path / "created-through-link"
    path = tmp_path / "egress-router-log"
    path.symlink_to(target)
    open_log(path).debug("x")
    assert not target.exists()


def test_log_hard_linked_file_is_refused(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    path = tmp_path / "egress-router-log"
    os.link(victim, path)
    stderr = io.StringIO()
    plugin_log = open_log(path, stderr=stderr)
    plugin_log.debug("attacker-controlled text")
    plugin_log.close()
    assert victim.read_text() == "precious\n"
    assert "hard link" in stderr.getvalue()


def test_log_fifo_is_refused_without_blocking(default_log: Path, tmp_path: Path) -> None:
    path = tmp_path / "egress-router-log"
    os.mkfifo(path)
    stderr = io.StringIO()
    plugin_log = open_log(path, stderr=stderr)  # must not wait for a reader
    plugin_log.debug("x")
    plugin_log.close()
    assert "refusing log_file" in stderr.getvalue()
    assert messages_of(default_log)[-1] == "x"


def test_log_directory_is_refused(default_log: Path, tmp_path: Path) -> None:
    path = tmp_path / "egress-router-log"
    path.mkdir()
    stderr = io.StringIO()
    plugin_log = open_log(path, stderr=stderr)
    plugin_log.debug("x")
    plugin_log.close()
    assert "refusing log_file" in stderr.getvalue()
    assert messages_of(default_log)[-1] == "x"


def test_log_device_is_refused(default_log: Path) -> None:
    stderr = io.StringIO()
    PluginLog("/dev/null", stderr=stderr).close()
    assert "refusing log_file '/dev/null'" in stderr.getvalue()


def test_log_device_inside_an_allowed_directory_is_refused(default_log: Path, tmp_path: Path) -> None:
    stderr = io.StringIO()
    PluginLog("/dev/null", stderr=stderr, directories=["/dev"]).close()
    assert "file name does not start with 'egress-router'" in stderr.getvalue()
    stderr = io.StringIO()
    path = tmp_path / "egress-router-null"
    os.symlink("/dev/null", path)  # a name the rules accept, pointing at a device
    PluginLog(str(path), stderr=stderr).close()
    assert "refusing log_file" in stderr.getvalue()


def test_log_relative_path_falls_back_to_the_default_with_a_warning(
    default_log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    stderr = io.StringIO()
    plugin_log = PluginLog("relative-log", stderr=stderr)
    plugin_log.debug("Called CNI ADD")
    plugin_log.close()
    assert not (tmp_path / "relative-log").exists()
    assert messages_of(default_log)[-1] == "Called CNI ADD"
    assert "refusing log_file 'relative-log'" in stderr.getvalue()
    assert "not an absolute path" in stderr.getvalue()


def test_log_world_writable_non_sticky_directory_is_refused(default_log: Path, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    stderr = io.StringIO()
    plugin_log = PluginLog(str(shared / "egress-router-log"), stderr=stderr)
    plugin_log.debug("Called CNI ADD")
    plugin_log.close()
    assert not (shared / "egress-router-log").exists()
    assert messages_of(default_log)[-1] == "Called CNI ADD"
    assert "writable by everyone and not sticky" in stderr.getvalue()


def test_log_world_writable_sticky_directory_like_tmp_is_accepted(default_log: Path, tmp_path: Path) -> None:
    shared = tmp_path / "sticky"
    shared.mkdir()
    shared.chmod(0o1777)
    plugin_log = open_log(shared / "egress-router-log")
    plugin_log.debug("x")
    plugin_log.close()
    assert messages_of(shared / "egress-router-log") == ["x"]
    assert not default_log.exists()


def test_log_missing_directory_falls_back_to_the_default(default_log: Path, tmp_path: Path) -> None:
    stderr = io.StringIO()
    plugin_log = PluginLog(str(tmp_path / "no" / "such" / "dir" / "egress-router-log"), stderr=stderr)
    plugin_log.debug("x")
    plugin_log.close()
    assert "its directory is not usable" in stderr.getvalue()
    assert messages_of(default_log)[-1] == "x"


def test_log_unusable_default_only_warns(default_log: Path) -> None:
    default_log.parent.rmdir()
    stderr = io.StringIO()
    plugin_log = PluginLog(str(default_log), stderr=stderr)
    plugin_log.debug("x")
    assert plugin_log.fd is None
    assert "continuing without a log file" in stderr.getvalue()


# --- confinement (issue 13) --------------------------------------------------------------------


def refused(path: str, stderr: io.StringIO, **kwargs: Any) -> str:
    PluginLog(path, stderr=stderr, **kwargs).close()
    return stderr.getvalue()


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/etc/ld.so.preload", "file name does not start with 'egress-router'"),
        ("/etc/egress-router-log", "it is not inside /var/log or /tmp"),
        ("/proc/sys/kernel/egress-router", "it is not inside /var/log or /tmp"),
        ("/proc/sys/kernel/hostname", "file name does not start with 'egress-router'"),
        ("/tmp/../etc/egress-router-log", "not a normalized path"),
        ("/tmp//egress-router-log", "not a normalized path"),
        ("/tmp/./egress-router-log", "not a normalized path"),
        ("/tmpfoo/egress-router-log", "it is not inside /var/log or /tmp"),
        ("/var/logs/egress-router-log", "it is not inside /var/log or /tmp"),
        ("/tmp/egress-router-log/", "not a normalized path"),
    ],
)
def test_log_path_outside_the_rules_falls_back_with_one_warning_and_an_error_line(
    default_log: Path, path: str, reason: str
) -> None:
    stderr = io.StringIO()
    plugin_log = PluginLog(path, stderr=stderr, level="panic")
    plugin_log.debug("Called CNI ADD")
    plugin_log.close()
    warnings = stderr.getvalue().splitlines()
    assert len(warnings) == 1
    assert f"refusing log_file {path!r}" in warnings[0] and reason in warnings[0]
    # The [error] line is written whatever the level: the operator sees why their file stayed empty.
    lines = lines_of(default_log)
    assert len(lines) == 1 and "[error] refusing log_file" in lines[0] and path in lines[0]


def test_log_accepted_in_a_subdirectory_of_an_allowed_directory(default_log: Path, tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "egress-router-router1.log"
    path.parent.mkdir(parents=True)
    stderr = io.StringIO()
    plugin_log = PluginLog(str(path), stderr=stderr)
    plugin_log.debug("x")
    plugin_log.close()
    assert messages_of(path) == ["x"] and stderr.getvalue() == ""
    assert not default_log.exists()


def test_log_symlinked_directory_component_is_refused(default_log: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "link").symlink_to(outside)
    stderr = io.StringIO()
    warning = refused(str(tmp_path / "link" / "egress-router-log"), stderr)
    assert "path component 'link' is a symbolic link" in warning
    assert list(outside.iterdir()) == []


def test_log_allowed_directory_list_comes_from_the_caller(default_log: Path, tmp_path: Path) -> None:
    allowed, other = tmp_path / "allowed", tmp_path / "other"
    allowed.mkdir()
    other.mkdir()
    stderr = io.StringIO()
    assert f"it is not inside {allowed}" in refused(
        str(other / "egress-router-log"), stderr, directories=[str(allowed)]
    )
    assert not (other / "egress-router-log").exists()
    plugin_log = PluginLog(str(allowed / "egress-router-log"), stderr=io.StringIO(), directories=[str(allowed)])
    plugin_log.debug("x")
    plugin_log.close()
    assert messages_of(allowed / "egress-router-log") == ["x"]


def test_log_renamed_directory_cannot_redirect_an_open_log(default_log: Path, tmp_path: Path) -> None:
    """The file is reached through a directory descriptor: swapping the directory after the check is useless."""
    logdir, outside = tmp_path / "logs", tmp_path / "outside"
    logdir.mkdir()
    outside.mkdir()
    plugin_log = PluginLog(str(logdir / "egress-router-log"), stderr=io.StringIO())
    plugin_log.debug("before")
    logdir.rename(tmp_path / "moved")
    logdir.symlink_to(outside)
    plugin_log.debug("after")
    plugin_log.close()
    assert messages_of(tmp_path / "moved" / "egress-router-log") == ["before", "after"]
    assert list(outside.iterdir()) == []


def test_log_rotation_never_replaces_a_symlinked_backup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(log, "MAX_LOG_BYTES", 100)
    victim = tmp_path / "lib.so.1"
    victim.write_text("precious\n")
    path = tmp_path / "egress-router-log"
    (tmp_path / "egress-router-log.1").symlink_to(victim)
    stderr = io.StringIO()
    plugin_log = open_log(path, stderr=stderr)
    for i in range(20):
        plugin_log.debug(f"line {i}")
    plugin_log.close()
    assert (tmp_path / "egress-router-log.1").is_symlink()
    assert victim.read_text() == "precious\n"
    assert "not rotating" in stderr.getvalue()
    assert path.stat().st_size <= 100 + len(format_line("debug", "line 19"))


def test_log_rotation_never_replaces_a_hard_linked_backup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(log, "MAX_LOG_BYTES", 100)
    victim = tmp_path / "meta.db"
    victim.write_text("precious\n")
    os.link(victim, tmp_path / "egress-router-log.1")
    plugin_log = open_log(tmp_path / "egress-router-log")
    for i in range(20):
        plugin_log.debug(f"line {i}")
    plugin_log.close()
    assert victim.read_text() == "precious\n"
    assert victim.stat().st_nlink == 2


# --- failures never raise --------------------------------------------------------------------


class _FullDisk:
    """Stands in for the os module inside log.py: every write fails with ENOSPC."""

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    @staticmethod
    def write(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")


def test_log_write_failure_is_reported_on_stderr_not_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stderr = io.StringIO()
    plugin_log = open_log(tmp_path / "egress-router-log", stderr=stderr)
    monkeypatch.setattr(log, "os", _FullDisk())
    plugin_log.debug("x")
    plugin_log.flush()  # lines are buffered until a flush (a step's end, an error line, close)
    monkeypatch.undo()
    plugin_log.close()
    assert "No space left on device" in stderr.getvalue()


def test_log_closed_stderr_does_not_raise(default_log: Path) -> None:
    default_log.parent.rmdir()
    stderr = io.StringIO()
    stderr.close()
    plugin_log = PluginLog(str(default_log), stderr=stderr)  # warns on a closed stream
    plugin_log.debug("x")
    assert plugin_log.fd is None


def test_log_write_after_close_is_a_no_op(tmp_path: Path) -> None:
    path = tmp_path / "egress-router-log"
    plugin_log = open_log(path)
    plugin_log.close()
    plugin_log.debug("x")
    assert lines_of(path) == []


def test_log_path_with_nul_only_warns(default_log: Path, tmp_path: Path) -> None:
    """Regression: a NUL in the path raised ValueError (only OSError was caught)."""
    stderr = io.StringIO()
    PluginLog(str(tmp_path / "a\0b"), stderr=stderr)
    assert "log" in stderr.getvalue()


# --- rotation --------------------------------------------------------------------------------


def test_log_rotates_at_max_bytes_to_exactly_one_backup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(log, "MAX_LOG_BYTES", 300)
    path = tmp_path / "egress-router-log"
    plugin_log = open_log(path)
    for i in range(60):
        plugin_log.debug(f"line {i:03d}")
    plugin_log.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["egress-router-log", "egress-router-log.1"]
    current, backup = messages_of(path), messages_of(tmp_path / "egress-router-log.1")
    # Nothing is lost at a rotation: the backup ends just before the current file starts.
    assert int(backup[-1].split()[1]) + 1 == int(current[0].split()[1])
    assert current[-1] == "line 059"
    assert path.stat().st_size <= 300 + len(format_line("debug", "line 059"))


def test_log_rotated_file_is_recreated_mode_0600(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(log, "MAX_LOG_BYTES", 100)
    path = tmp_path / "egress-router-log"
    plugin_log = open_log(path)
    for i in range(10):
        plugin_log.debug(f"line {i}")
    plugin_log.close()
    assert (tmp_path / "egress-router-log.1").exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_log_under_the_cap_does_not_rotate(tmp_path: Path) -> None:
    path = tmp_path / "egress-router-log"
    plugin_log = open_log(path)
    for i in range(100):
        plugin_log.debug(f"line {i}")
    plugin_log.close()
    assert not (tmp_path / "egress-router-log.1").exists()


# --- concurrent writers ----------------------------------------------------------------------

WRITERS = 8
LINES_PER_WRITER = 200
PAYLOAD = "x" * 300  # lines well above a small write, to give interleaving a chance
CONCURRENT_RE = re.compile(rf"^w(\d) n(\d{{3}}) {PAYLOAD}$")


def _writer(path: str, writer: int, max_bytes: int) -> None:
    log.MAX_LOG_BYTES = max_bytes
    plugin_log = PluginLog(path, stderr=io.StringIO())
    for n in range(LINES_PER_WRITER):
        plugin_log.debug(f"w{writer} n{n:03d} {PAYLOAD}")
    plugin_log.close()


def _run_writers(path: Path, max_bytes: int) -> None:
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(path), w, max_bytes)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * WRITERS


def test_log_concurrent_writers_never_interleave_mid_line(tmp_path: Path) -> None:
    path = tmp_path / "egress-router-log"
    _run_writers(path, max_bytes=10 << 20)
    messages = messages_of(path)
    assert len(messages) == WRITERS * LINES_PER_WRITER
    assert all(CONCURRENT_RE.match(m) for m in messages)
    for w in range(WRITERS):
        mine = [m for m in messages if m.startswith(f"w{w} ")]
        assert [int(m.split()[1][1:]) for m in mine] == list(range(LINES_PER_WRITER))


def test_log_concurrent_writers_rotating_keep_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "egress-router-log"
    _run_writers(path, max_bytes=40_000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["egress-router-log", "egress-router-log.1"]
    for name in ("egress-router-log", "egress-router-log.1"):
        messages = messages_of(tmp_path / name)
        assert messages
        assert all(CONCURRENT_RE.match(m) for m in messages)


# --- buffering: one append per flush -----------------------------------------------------------


class _CountingWrites:
    """Stands in for the os module inside log.py, recording each write."""

    def __init__(self) -> None:
        self.writes: List[bytes] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def write(self, fd: int, data: bytes) -> int:
        self.writes.append(bytes(data))
        return os.write(fd, data)


def test_log_lines_wait_for_a_flush_then_go_out_in_one_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "egress-router-log"
    plugin_log = open_log(path)
    counting = _CountingWrites()
    monkeypatch.setattr(log, "os", counting)
    for i in range(5):
        plugin_log.debug(f"line {i}")
    assert lines_of(path) == []
    plugin_log.flush()
    assert messages_of(path) == [f"line {i}" for i in range(5)]
    assert len(counting.writes) == 1
    plugin_log.flush()  # nothing pending: no write
    plugin_log.verbose("last")
    plugin_log.close()
    assert len(counting.writes) == 2
    assert messages_of(path)[-1] == "last"


def test_log_error_line_is_written_at_once_with_what_came_before(tmp_path: Path) -> None:
    path = tmp_path / "egress-router-log"
    plugin_log = open_log(path)
    plugin_log.debug("step done")
    plugin_log.error("ADD failed: rolling back")
    assert messages_of(path) == ["step done", "ADD failed: rolling back"]
    plugin_log.close()
