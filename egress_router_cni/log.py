"""The plugin's debug log: `<RFC3339 UTC time> [<level>] <message>` lines appended to a file.

The path comes from a config that a cluster user may write, and the plugin runs
as root, so the path is confined (see confine()) and the file opened
defensively; a refused path or a logging problem is reported on stderr (and a
refused path in the default log) and never fails the CNI operation.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import sys
import time

from .config import DEFAULT_LOG_FILE

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Any, Callable, Dict, List, Optional, Sequence, Tuple

# Where a config's log_file may point (subdirectories included), unless the
# node policy's logDirectories replaces the list; and how its name must start.
# A config is written by whoever may create a NetworkAttachmentDefinition, not
# by the node's root: anywhere else, a root-owned append or rename is a weapon.
LOG_DIRECTORIES = ("/var/log", "/tmp")
LOG_NAME_PREFIX = "egress-router"

LEVELS = {"debug": 0, "verbose": 1, "error": 2, "panic": 3}
MAX_LOG_BYTES = 10 << 20  # then rotate to one ".1" file


_last_stamp: Tuple[int, str] = (-1, "")


def timestamp() -> str:
    """Now in UTC, as the log lines start: 2024-01-31T12:00:00Z."""
    global _last_stamp
    now = int(time.time())  # what time.gmtime() would read: formatted once per second (1000 lines, one ADD)
    if now != _last_stamp[0]:
        _last_stamp = (now, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)))
    return _last_stamp[1]


def format_line(level: str, message: str) -> str:
    """One log record: '<timestamp> [level] message', newlines in message escaped."""
    # One line per record, whatever the message holds: a newline inside a
    # message (e.g. from a config value) must not forge a second record.
    clean = message.replace("\r", "\\r").replace("\n", "\\n")
    return f"{timestamp()} [{level}] {clean}\n"


class RefusedPath(Exception):
    """A log path the confinement rules do not accept; the message says why."""


def _is_inside(directory: str, allowed: str) -> bool:
    root = allowed.rstrip("/")
    return directory == (root or "/") or directory.startswith(root + "/")


def _open_directory(directory: str) -> int:
    """A descriptor of DIRECTORY reached one component at a time, none of them a symlink."""
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for component in directory.split("/")[1:]:
            if not component:
                continue
            try:
                next_fd = os.open(component, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as e:
                try:
                    is_link = stat.S_ISLNK(os.stat(component, dir_fd=fd, follow_symlinks=False).st_mode)
                except OSError:
                    is_link = False
                if is_link:
                    raise RefusedPath(f"its path component {component!r} is a symbolic link") from None
                raise RefusedPath(f"its directory is not usable ({e.strerror})") from None
            os.close(fd)
            fd = next_fd
        st = os.fstat(fd)
        if st.st_mode & stat.S_IWOTH and not st.st_mode & stat.S_ISVTX:
            raise RefusedPath(f"its directory {directory} is writable by everyone and not sticky")
        return fd
    except BaseException:
        os.close(fd)
        raise


def confine(path: str, directories: Sequence[str]) -> Tuple[int, str]:
    """(directory fd, file name) for a log path the rules accept; raise RefusedPath otherwise.

    The rules: an absolute, normalized path inside one of DIRECTORIES (or below),
    a file name starting with "egress-router", no component a symlink. The file
    is then opened relative to the directory descriptor, so renaming or
    replacing a directory after the check cannot redirect it.
    """
    if not path.startswith("/"):
        raise RefusedPath("it is not an absolute path")
    if "\0" in path:
        raise RefusedPath("it contains a NUL byte")
    parts = path.split("/")[1:]
    if any(p in ("", ".", "..") for p in parts):
        raise RefusedPath("it is not a normalized path (an empty, '.' or '..' component)")
    directory, name = os.path.split(path)
    if not name.startswith(LOG_NAME_PREFIX):
        raise RefusedPath(f"its file name does not start with {LOG_NAME_PREFIX!r}")
    if not any(_is_inside(directory or "/", d) for d in directories):
        raise RefusedPath(f"it is not inside {' or '.join(directories)}")
    return _open_directory(directory or "/"), name


def open_log_file(dir_fd: int, name: str) -> int:
    """Open NAME in DIR_FD for appending without following a symlink; raise OSError with the reason."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
    try:
        _check_regular(os.fstat(fd))
        os.set_blocking(fd, True)
        return fd
    except BaseException:
        os.close(fd)
        raise


def _check_regular(st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EINVAL, "not a regular file")
    if st.st_nlink > 1:
        # A hard link planted in a shared directory would let us append to (or rotate) any file.
        raise OSError(errno.EMLINK, "the file has more than one hard link")


def open_for_reading(path: str) -> IO[str]:
    """A log file opened to read it (inspect): never blocks on a FIFO, never opens a device; raise OSError."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        os.set_blocking(fd, True)
        return open(fd, errors="replace", closefd=True)
    except BaseException:
        os.close(fd)
        raise


class PluginLog:
    """Leveled, line-atomic, size-capped log file shared by every plugin process on the node."""

    def __init__(
        self,
        path: Optional[str] = None,
        level: str = "debug",
        fmt: str = "text",
        context: Optional[Dict[str, str]] = None,
        stderr: IO[str] = sys.stderr,
        directories: Optional[Sequence[str]] = None,
    ) -> None:
        self.threshold = LEVELS.get(level, 0)
        self.context = dict(context or {})
        self.stderr = stderr
        self.fd: Optional[int] = None
        self.dir_fd: Optional[int] = None
        default = DEFAULT_LOG_FILE  # read at call time: tests point it elsewhere
        self.path = path or default
        self.name = ""
        self._render: Optional[Callable[[str, str], str]] = None
        self._pending: List[str] = []
        if fmt == "json":
            self._render = _json_renderer(self.context)
        refused = ""
        if self.path != default:
            try:
                self._open(self.path, directories or LOG_DIRECTORIES)
            except (RefusedPath, OSError) as e:
                refused = f"refusing log_file {self.path!r}: {_reason(e)}; logging to {default}"
                self._warn(refused)
                self.path = default
        if self.fd is None:
            try:
                # The default path is the plugin's own: its directory is always allowed.
                self._open(default, (os.path.dirname(default),))
            except (RefusedPath, OSError) as e:
                self._warn(f"cannot open log file {default!r}: {_reason(e)}; continuing without a log file")
                return
        if refused:
            # Whatever the level: whoever reads the default log learns why their file stayed empty.
            self._append("error", refused)

    def _warn(self, text: str) -> None:
        try:  # noqa: SIM105 (contextlib costs ~0.5 ms per exec)
            self.stderr.write(f"egress-router: warning: {text}\n")
        except (OSError, ValueError):
            pass  # a closed stderr must not fail the operation

    def _open(self, path: str, directories: Sequence[str]) -> None:
        dir_fd, name = confine(path, directories)
        try:
            self.fd = open_log_file(dir_fd, name)
        except BaseException:
            os.close(dir_fd)
            raise
        self.dir_fd, self.name = dir_fd, name

    def debug(self, message: str) -> None:
        """Log message at debug level (when log_level lets it through)."""
        self.write("debug", message)

    def verbose(self, message: str) -> None:
        """Log message at verbose level (when log_level lets it through)."""
        self.write("verbose", message)

    def error(self, message: str) -> None:
        """Log message at error level (when log_level lets it through)."""
        self.write("error", message)

    def write(self, level: str, message: str) -> None:
        """Append one record at level when it reaches the threshold; a write error is warned about, not raised."""
        if LEVELS[level] >= self.threshold:
            self._append(level, message)

    def _append(self, level: str, message: str) -> None:
        if self.fd is None:
            return
        self._pending.append(self._render(level, message) if self._render else format_line(level, message))
        if level == "error":
            self.flush()

    def flush(self) -> None:
        """Append the lines logged since the last flush; a write error is warned about, not raised.

        Lines are buffered between flushes (ADD flushes after each step, an error
        line at once, close() the rest) and appended with one O_APPEND write per
        flush: a single write of whole lines never interleaves with another
        process's. The lock is shared for that write (writers do not wait for
        each other) and exclusive only to rotate, which must not happen between
        a writer's look at the file and its write.
        """
        if not self._pending:
            return
        data = "".join(self._pending).encode("utf-8", "replace")
        self._pending = []
        try:
            while data and self.fd is not None:
                data = self._write_some(data)
        except OSError as e:
            self._warn(f"cannot write log file {self.path!r}: {e.strerror or e}")

    def _write_some(self, data: bytes) -> bytes:
        """Write the lines of data that fit under the size cap (at least one); return the rest."""
        assert self.fd is not None
        fcntl.flock(self.fd, fcntl.LOCK_SH)
        try:
            if self._must_rotate():
                fcntl.flock(self.fd, fcntl.LOCK_EX)
                self._rotate_if_needed()
            fd = self._current_fd()  # rotation reopened it, or closed it (a backup it must not replace)
            if fd is None:
                return b""
            # Whole lines while the file is under the cap: it ends at most one line above it.
            room = MAX_LOG_BYTES - os.fstat(fd).st_size
            cut = len(data) if room >= len(data) else data.find(b"\n", max(room - 1, 0)) + 1
            os.write(fd, data[: cut or len(data)])
            return data[cut:] if cut else b""
        finally:
            if self.fd is not None:
                fcntl.flock(self.fd, fcntl.LOCK_UN)

    def _current_fd(self) -> Optional[int]:
        return self.fd

    def _must_rotate(self) -> bool:
        """Whether the open file is over the cap or no longer the one at the path (another process rotated)."""
        assert self.fd is not None
        st = os.fstat(self.fd)
        current = self._entry(self.name)
        if current is None or (current.st_ino, current.st_dev) != (st.st_ino, st.st_dev):
            return True
        return st.st_size >= MAX_LOG_BYTES

    def _entry(self, name: str) -> Optional[os.stat_result]:
        assert self.dir_fd is not None
        try:
            return os.stat(name, dir_fd=self.dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def _rotate_if_needed(self) -> None:
        assert self.fd is not None
        st = os.fstat(self.fd)
        current = self._entry(self.name)
        if current is None or current.st_ino != st.st_ino or current.st_dev != st.st_dev:
            # Another process rotated while we held the old file open.
            self._reopen()
            return
        if st.st_size < MAX_LOG_BYTES:
            return
        backup_name = self.name + ".1"
        backup = self._entry(backup_name)
        if backup is not None:
            try:
                _check_regular(backup)
            except OSError as e:
                # Never replace a symlink, a device or a hard-linked file: stop logging instead of growing.
                self._warn(f"not rotating log file {self.path!r}: {backup_name} is {e.strerror}; log writing stopped")
                self._close_file()
                return
        # Both names live in the directory we hold open: rotation cannot leave it.
        os.rename(self.name, backup_name, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
        self._reopen()

    def _reopen(self) -> None:
        assert self.dir_fd is not None
        old = self.fd
        try:
            self.fd = open_log_file(self.dir_fd, self.name)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except OSError as e:
            self._warn(f"cannot reopen log file {self.path!r}: {e.strerror or e}")
            self.fd = None
        if old is not None:
            os.close(old)

    def _close_file(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def close(self) -> None:
        """Write what is buffered, close the log file and its directory; later writes are dropped."""
        self.flush()
        self._close_file()
        if self.dir_fd is not None:
            os.close(self.dir_fd)
            self.dir_fd = None


def _reason(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e)


def _json_renderer(context: Dict[str, str]) -> Callable[[str, str], str]:
    # structlog only when asked for: it costs ~45 ms of imports per exec.
    import structlog

    processors: Any = [structlog.processors.JSONRenderer(sort_keys=False)]

    def render(level: str, message: str) -> str:
        event: Dict[str, Any] = {"time": timestamp(), "level": level, "msg": message, **context}
        out = processors[0](None, level, event)
        return str(out) + "\n"

    return render
