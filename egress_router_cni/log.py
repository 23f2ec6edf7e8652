"""The plugin's debug log: `<RFC3339 UTC time> [<level>] <message>` lines appended to a file.

The path comes from a config that a cluster user may write, and the plugin runs
as root, so the file is opened defensively; a logging problem is reported on
stderr and never fails the CNI operation.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import sys
import time
from typing import IO, Any, Callable, Dict, Optional

from .config import DEFAULT_LOG_FILE

LEVELS = {"debug": 0, "verbose": 1, "error": 2, "panic": 3}
MAX_LOG_BYTES = 10 << 20  # then rotate to one ".1" file


def timestamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def format_line(level: str, message: str) -> str:
    # One line per record, whatever the message holds: a newline inside a
    # message (e.g. from a config value) must not forge a second record.
    clean = message.replace("\r", "\\r").replace("\n", "\\n")
    return f"{timestamp()} [{level}] {clean}\n"


def _unsafe_dir_reason(path: str) -> Optional[str]:
    """Why a log file must not be created in path's directory, or None when it may."""
    if not os.path.isabs(path):
        return "it is not an absolute path"
    parent = os.path.dirname(path) or "/"
    try:
        st = os.stat(parent)
    except OSError as e:
        return f"its directory is not usable ({e.strerror})"
    if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
        return f"its directory {parent} is writable by everyone and not sticky"
    return None


def open_log_file(path: str) -> int:
    """Open path for appending without following a symlink; raise OSError with the reason."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    fd = os.open(path, flags, 0o600)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if st.st_nlink > 1:
            # A hard link planted in a shared directory would let us append to any file.
            raise OSError(errno.EMLINK, "the file has more than one hard link")
        os.set_blocking(fd, True)
        return fd
    except BaseException:
        os.close(fd)
        raise


class PluginLog:
    """Leveled, line-atomic, size-capped log file shared by every plugin process on the node."""

    def __init__(
        self,
        path: str = DEFAULT_LOG_FILE,
        level: str = "debug",
        fmt: str = "text",
        context: Optional[Dict[str, str]] = None,
        stderr: IO[str] = sys.stderr,
    ) -> None:
        self.threshold = LEVELS.get(level, 0)
        self.context = dict(context or {})
        self.stderr = stderr
        self.fd: Optional[int] = None
        self.path = path
        self._render: Optional[Callable[[str, str], str]] = None
        if fmt == "json":
            self._render = _json_renderer(self.context)
        reason = _unsafe_dir_reason(path)
        if reason is not None and path != DEFAULT_LOG_FILE:
            self._warn(f"refusing log_file {path!r}: {reason}; logging to {DEFAULT_LOG_FILE}")
            self.path = DEFAULT_LOG_FILE
        self._open()

    def _warn(self, text: str) -> None:
        with contextlib.suppress(OSError, ValueError):  # a closed stderr must not fail the operation
            self.stderr.write(f"egress-router: warning: {text}\n")

    def _open(self) -> None:
        try:
            self.fd = open_log_file(self.path)
        except (OSError, ValueError) as e:  # ValueError: a NUL in the path
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            self._warn(f"cannot open log file {self.path!r}: {reason}; continuing without a log file")
            self.fd = None

    def debug(self, message: str) -> None:
        self.write("debug", message)

    def verbose(self, message: str) -> None:
        self.write("verbose", message)

    def error(self, message: str) -> None:
        self.write("error", message)

    def write(self, level: str, message: str) -> None:
        if LEVELS[level] < self.threshold or self.fd is None:
            return
        line = self._render(level, message) if self._render else format_line(level, message)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
            try:
                self._rotate_if_needed()
                if self.fd is not None:
                    os.write(self.fd, line.encode("utf-8", "replace"))
            finally:
                if self.fd is not None:
                    fcntl.flock(self.fd, fcntl.LOCK_UN)
        except OSError as e:
            self._warn(f"cannot write log file {self.path!r}: {e.strerror or e}")

    def _rotate_if_needed(self) -> None:
        assert self.fd is not None
        st = os.fstat(self.fd)
        try:
            current = os.lstat(self.path)
        except FileNotFoundError:
            current = None
        if current is None or current.st_ino != st.st_ino or current.st_dev != st.st_dev:
            # Another process rotated while we held the old file open.
            self._reopen()
            return
        if st.st_size < MAX_LOG_BYTES:
            return
        os.replace(self.path, self.path + ".1")
        self._reopen()

    def _reopen(self) -> None:
        old = self.fd
        try:
            self.fd = open_log_file(self.path)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except OSError as e:
            self._warn(f"cannot reopen log file {self.path!r}: {e.strerror or e}")
            self.fd = None
        if old is not None:
            os.close(old)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _json_renderer(context: Dict[str, str]) -> Callable[[str, str], str]:
    # structlog only when asked for: it costs ~45 ms of imports per exec.
    import structlog

    processors: Any = [structlog.processors.JSONRenderer(sort_keys=False)]

    def render(level: str, message: str) -> str:
        event: Dict[str, Any] = {"time": timestamp(), "level": level, "msg": message, **context}
        out = processors[0](None, level, event)
        return str(out) + "\n"

    return render
