"""setns(2) before Python 3.12: through `_ctypes` (netns._setns_via_libc) and the frozen build's C module.

Python < 3.12 has no os.setns. The end-to-end suites enter pod namespaces
through _setns_via_libc on Python 3.9-3.11 and the frozen build through
_egress_setns (scripts/native/egress_setns.c); here both are checked on every
version, for their errors and their effect, and _setns_via_libc for staying
off the `ctypes` package (which a CNI command must not import, see
docs/performance.md).
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from egress_router_cni import netns

REPO = Path(__file__).resolve().parents[2]


def _namespace_inode() -> int:
    return os.stat("/proc/self/ns/net").st_ino


@pytest.fixture(scope="module")
def native_module(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """scripts/native/egress_setns.c compiled as scripts/build.sh compiles it, imported."""
    include = sysconfig.get_paths()["include"]
    if shutil.which("gcc") is None or not os.path.exists(os.path.join(include, "Python.h")):
        pytest.skip("no gcc or no Python headers to compile scripts/native/egress_setns.c")
    out = tmp_path_factory.mktemp("native") / ("_egress_setns" + sysconfig.get_config_var("EXT_SUFFIX"))
    source = REPO / "scripts" / "native" / "egress_setns.c"
    flags = ["-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC"]
    subprocess.run(["gcc", *flags, f"-I{include}", "-o", str(out), str(source)], check=True)
    import importlib.util

    spec = importlib.util.spec_from_file_location("_egress_setns", out)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(params=["libc", "native"])
def setns(request: pytest.FixtureRequest) -> Callable[[int], None]:
    """setns(fd) into a network namespace, by _setns_via_libc or by the compiled _egress_setns."""
    if request.param == "libc":
        return netns._setns_via_libc
    native = request.getfixturevalue("native_module")
    return lambda fd: native.setns(fd, netns.CLONE_NEWNET)


@pytest.mark.parametrize("fd", [-1, 1_000_000])
def test_setns_on_a_bad_descriptor_raises_ebadf(setns: Callable[[int], None], fd: int) -> None:
    with pytest.raises(OSError) as raised:
        setns(fd)
    assert raised.value.errno == errno.EBADF
    assert raised.value.strerror == os.strerror(errno.EBADF)
    assert raised.value.args == (errno.EBADF, os.strerror(errno.EBADF))  # as OSError(code, strerror) was


def test_setns_on_a_file_that_is_no_namespace_raises_einval(setns: Callable[[int], None], tmp_path: Path) -> None:
    path = tmp_path / "not-a-namespace"
    path.write_text("")
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(OSError) as raised:
            setns(fd)
    finally:
        os.close(fd)
    assert raised.value.errno == errno.EINVAL
    assert raised.value.strerror == os.strerror(errno.EINVAL)


def test_entering_our_own_namespace_succeeds_and_changes_nothing(setns: Callable[[int], None]) -> None:
    before = _namespace_inode()
    fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(fd)
        setns(fd)  # _setns_via_libc's cached function, a second time
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


def test_entering_another_namespace_and_coming_back(setns: Callable[[int], None], other_namespace: str) -> None:
    home_inode = _namespace_inode()
    target_inode = os.stat(other_namespace).st_ino
    assert target_inode != home_inode
    home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    target = os.open(other_namespace, os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(target)
        try:
            assert _namespace_inode() == target_inode
            assert [name for _, name in socket.if_nameindex()] == ["lo"]  # a fresh namespace: only its loopback
        finally:
            setns(home)
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


def test_the_cheapest_setns_is_picked(native_module: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """os.setns from 3.12 on; before, _egress_setns when importable, else libc through _ctypes."""
    if sys.version_info >= (3, 12):
        assert netns.pick_setns() is os.setns
        monkeypatch.delattr(os, "setns")
    monkeypatch.setitem(sys.modules, "_egress_setns", native_module)
    assert netns.pick_setns() is native_module.setns
    monkeypatch.setitem(sys.modules, "_egress_setns", None)  # import fails: not bundled
    fallback = netns.pick_setns()
    assert fallback.__module__ == "egress_router_cni.netns"
    with pytest.raises(OSError) as raised:
        fallback(-1, netns.CLONE_NEWNET)
    assert raised.value.errno == errno.EBADF
