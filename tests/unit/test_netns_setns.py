"""setns(2) through `_ctypes` (netns._setns_via_libc): what Python < 3.12 uses, tested on every version.

The end-to-end suites enter pod namespaces through it on Python 3.9-3.11; here
its errors and its effect are checked directly, and that it stays off the
`ctypes` package (which a CNI command must not import, see docs/performance.md).
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

from egress_router_cni import netns

REPO = Path(__file__).resolve().parents[2]


def _namespace_inode() -> int:
    return os.stat("/proc/self/ns/net").st_ino


@pytest.mark.parametrize("fd", [-1, 1_000_000])
def test_setns_on_a_bad_descriptor_raises_ebadf(fd: int) -> None:
    with pytest.raises(OSError) as raised:
        netns._setns_via_libc(fd)
    assert raised.value.errno == errno.EBADF
    assert raised.value.strerror == os.strerror(errno.EBADF)
    assert raised.value.args == (errno.EBADF, os.strerror(errno.EBADF))  # as OSError(code, strerror) was


def test_setns_on_a_file_that_is_no_namespace_raises_einval(tmp_path: Path) -> None:
    path = tmp_path / "not-a-namespace"
    path.write_text("")
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(OSError) as raised:
            netns._setns_via_libc(fd)
    finally:
        os.close(fd)
    assert raised.value.errno == errno.EINVAL
    assert raised.value.strerror == os.strerror(errno.EINVAL)


def test_entering_our_own_namespace_succeeds_and_changes_nothing() -> None:
    before = _namespace_inode()
    fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        netns._setns_via_libc(fd)
        netns._setns_via_libc(fd)  # the cached function, a second time
    finally:
        os.close(fd)
    assert _namespace_inode() == before


@pytest.fixture
def other_namespace() -> Iterator[str]:
    """/proc/PID/ns/net of a child sleeping in a network namespace of its own (this test's to remove)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("no unshare(1)")
    child = subprocess.Popen([unshare, "--net", "--", "sleep", "60"])
    try:
        path = f"/proc/{child.pid}/ns/net"
        for _ in range(1000):  # until the child has entered its namespace
            if os.stat(path).st_ino != _namespace_inode():
                break
            time.sleep(0.005)
        yield path
    finally:
        child.kill()
        child.wait()


def test_entering_another_namespace_and_coming_back(other_namespace: str) -> None:
    home_inode = _namespace_inode()
    target_inode = os.stat(other_namespace).st_ino
    assert target_inode != home_inode
    home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    target = os.open(other_namespace, os.O_RDONLY | os.O_CLOEXEC)
    try:
        netns._setns_via_libc(target)
        try:
            assert _namespace_inode() == target_inode
            assert [name for _, name in socket.if_nameindex()] == ["lo"]  # a fresh namespace: only its loopback
        finally:
            netns._setns_via_libc(home)
    finally:
        os.close(target)
        os.close(home)
    assert _namespace_inode() == home_inode


def test_setns_imports_no_ctypes_package() -> None:
    """A fresh interpreter (pytest has ctypes loaded already): `_ctypes` only, never the package."""
    code = (
        "import os, sys\n"
        "from egress_router_cni import netns\n"
        "fd = os.open('/proc/self/ns/net', os.O_RDONLY)\n"
        "netns._setns_via_libc(fd)\n"
        "try:\n"
        "    netns._setns_via_libc(-1)\n"
        "except OSError as e:\n"
        "    print(e.errno)\n"
        "print(sorted(m for m in sys.modules if 'ctypes' in m))\n"
    )
    out = subprocess.run(
        [sys.executable, "-S", "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert out[:2] == [str(errno.EBADF), "['_ctypes']"], out
