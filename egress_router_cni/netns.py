"""Network namespaces: opened by path (never created) and entered with setns(2)."""

from __future__ import annotations

import errno
import os
import stat

from .errors import InvalidNetns, UnknownContainer

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Optional, Tuple

CLONE_NEWNET = 0x40000000
_libc_setns: Any = None
_setns_impl: Any = None  # setns(fd, nstype), picked at the first switch


def _setns(fd: int) -> None:
    global _setns_impl
    if _setns_impl is None:
        _setns_impl = pick_setns()
    _setns_impl(fd, CLONE_NEWNET)


def pick_setns() -> Any:
    """The cheapest setns(fd, nstype) this interpreter has.

    os.setns from Python 3.12 on; before, the frozen build's _egress_setns
    (scripts/native/egress_setns.c, one small C function), else libc through
    _ctypes, which loads _ctypes and libffi (~0.4 ms per exec).
    """
    if hasattr(os, "setns"):
        return os.setns
    try:
        from _egress_setns import setns  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return lambda fd, nstype: _setns_via_libc(fd, nstype)
    return setns


def _setns_via_libc(fd: int, nstype: int = CLONE_NEWNET) -> None:
    """setns(fd, nstype) through libc, for Python < 3.12; OSError(errno, strerror) on failure.

    Built on the C module `_ctypes` as ctypes.CDLL("libc.so.6", use_errno=True)
    builds its .setns: the `ctypes` package around it costs ~2.5 ms more per
    exec (its classes, `types`, `struct`, `ctypes._endian`), and the frozen
    build no longer imports it at start-up either (build.spec, pyi_lazy_ctypes).
    """
    global _libc_setns
    if _libc_setns is None:
        import _ctypes

        # typeshed's _SimpleCData is generic; the run-time class cannot be subscripted.
        class CInt(_ctypes._SimpleCData):  # type: ignore[type-arg]  # ctypes.c_int: returned as a Python int
            _type_ = "i"

        class LibcFunction(_ctypes.CFuncPtr):  # CDLL's _FuncPtr with use_errno=True
            _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
            _restype_ = CInt

        class Libc:  # what CFuncPtr((name, library)) reads: the dlopen handle
            # Fixed soname: ctypes.util.find_library would spawn ldconfig on every exec.
            _handle = _ctypes.dlopen("libc.so.6", _ctypes.RTLD_LOCAL)

        _libc_setns = LibcFunction(("setns", Libc()))  # type: ignore[arg-type]  # typeshed: a ctypes.CDLL
    if _libc_setns(fd, nstype) != 0:
        import _ctypes

        code = _ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def identity(fd: int) -> Tuple[int, int]:
    """(device, inode) of a namespace file: equal for two handles on the same namespace."""
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


class NetNS:
    """An open handle on a network namespace, plus a handle on the one we started in.

    `with NetNS(path) as ns:` opens both; `ns.enter()` switches this (single-
    threaded) process into the namespace and `ns.leave()` switches back. The
    process is returned to its own namespace on exit whatever happened.
    """

    def __init__(self, path: str, fd: int = -1) -> None:
        """path names the namespace; fd, when given, is a descriptor open_nsfs() returned for it (then owned here)."""
        self.path = path
        self.fd = fd
        self.home_fd = -1
        self.inside = False

    def open(self) -> NetNS:
        """Open the namespace and our own; raise UnknownContainer or InvalidNetns (the node's own namespace)."""
        try:
            self.home_fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            if self.fd < 0:
                self.fd = _open_checked(self.path, os.fstat(self.home_fd).st_dev)
        except FileNotFoundError:
            self.close()
            raise UnknownContainer(
                "network namespace not found", f"CNI_NETNS {self.path!r} does not exist (has the pod gone?)"
            ) from None
        except _NotNetns:
            self.close()
            raise UnknownContainer(
                "not a network namespace", f"CNI_NETNS {self.path!r} is not a network namespace"
            ) from None
        except OSError as e:
            self.close()
            raise UnknownContainer("failed to open network namespace", f"{self.path!r}: {e.strerror}") from None
        if identity(self.fd) == identity(self.home_fd):
            self.close()
            # A stale /proc/<pid>/ns/net can point at the node's own namespace
            # (containernetworking/plugins#714): configuring it would break the node.
            raise InvalidNetns(
                "refusing to configure the node's own network namespace",
                f"CNI_NETNS {self.path!r} is the namespace the plugin runs in",
            )
        return self

    def enter(self) -> None:
        """Switch this process into the namespace (idempotent)."""
        if not self.inside:
            _setns(self.fd)
            self.inside = True

    def leave(self) -> None:
        """Switch this process back to the namespace it started in (idempotent)."""
        if self.inside:
            _setns(self.home_fd)
            self.inside = False

    def close(self) -> None:
        """Leave the namespace and close both handles."""
        try:
            self.leave()
        finally:
            for attr in ("fd", "home_fd"):
                fd = getattr(self, attr)
                if fd >= 0:
                    os.close(fd)
                    setattr(self, attr, -1)

    def __enter__(self) -> NetNS:
        return self if self.home_fd >= 0 else self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()


class _NotNetns(Exception):
    """The path is something other than a network namespace file."""


def _open_checked(path: str, nsfs_dev: int) -> int:
    """An O_RDONLY descriptor of path, a network namespace file; raise OSError or _NotNetns.

    O_PATH first: it neither opens a device nor blocks on a FIFO, and without
    O_CREAT a missing path is an error, never a new namespace. Namespace files
    live on nsfs, one device for all of them (nsfs_dev): anything else is never
    opened for real. Reopening the O_PATH descriptor reaches the very inode checked.
    """
    path_fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        st = os.fstat(path_fd)
        if not stat.S_ISREG(st.st_mode) or st.st_dev != nsfs_dev:
            raise _NotNetns(path)
        fd = os.open(f"/proc/self/fd/{path_fd}", os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    finally:
        os.close(path_fd)
    if not _is_netns(fd):
        os.close(fd)
        raise _NotNetns(path)
    return fd


def open_nsfs(path: str) -> Optional[int]:
    """A descriptor of path when it is a network namespace file, else None (gone, not one, not allowed).

    For paths nobody vouches for, e.g. every /proc/PID/ns/net and /run/netns entry of `inspect --all`.
    """
    try:
        return _open_checked(path, os.stat("/proc/self/ns/net").st_dev)
    except (OSError, _NotNetns):
        return None


def _is_netns(fd: int) -> bool:
    """True when fd is a network namespace (NS_GET_NSTYPE ioctl; older kernels: assume yes)."""
    import fcntl

    ns_get_nstype = 0xB703
    try:
        return fcntl.ioctl(fd, ns_get_nstype) == CLONE_NEWNET
    except OSError as e:
        # ENOTTY/EINVAL: not an nsfs file. Anything else: a kernel without the ioctl.
        return e.errno not in (errno.ENOTTY, errno.EINVAL)


def open_optional(path: str) -> Optional[NetNS]:
    """Open path for DEL: None when it is empty or gone (DEL must then succeed)."""
    if not path:
        return None
    ns = NetNS(path)
    try:
        return ns.open()
    except UnknownContainer:
        return None
