"""The PyInstaller build (scripts/build.sh): its bundle self-test, and a router built through an install.

The rest of the end-to-end suite runs against the frozen executable with
EGRESS_ROUTER_EXE=dist/egress-router/egress-router; these tests cover what only
the frozen forms have: the bundled modules and libraries, the LD_LIBRARY_PATH
the bootloader sets, and the installed layout (a symlink in the CNI bin dir
to a onedir tree elsewhere), which the runtime execs by its symlinked path.
Skipped when dist/ holds no build.
"""

from __future__ import annotations

import json
import marshal
import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Any, Dict, Optional

import pytest

from tests import oracle
from tests.cni import IFNAME, Plugin, router_config, with_prev_result
from tests.topology import RESERVED_IP, Pod, Topology, parse_reply

REPO = Path(__file__).resolve().parents[2]
BUILDS = {
    "onedir": REPO / "dist" / "egress-router" / "egress-router",
    "onefile": REPO / "dist" / "onefile" / "egress-router",
}
CLEAN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def built(form: str) -> Path:
    exe = BUILDS[form]
    if not exe.exists():
        pytest.skip(f"no {exe.relative_to(REPO)}: run scripts/build.sh")
    return exe


def selftest(exe: Path, extra_env: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    env = {"PATH": CLEAN_PATH, "EGRESS_ROUTER_SELFTEST": "1", **(extra_env or {})}
    proc = subprocess.run([str(exe)], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"self-test failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    report: Dict[str, Any] = json.loads(proc.stdout)
    return report


@pytest.mark.parametrize("form", sorted(BUILDS))
def test_frozen_bundle_selftest(form: str) -> None:
    """[form] The plugin and the CLI load from the bundle; CNI mode imports no pyroute2, ctypes or logging.

    ctypes is not even imported by the bootstrap (build.spec: pyimod03_ctypes
    patches it on its first import), and once imported it has the patch.
    """
    report = selftest(built(form))
    assert report["frozen"] is True
    assert report["hot_path_stays_lean"]["ok"], report["hot_path_stays_lean"]
    assert report["ctypes_patched_on_import"]["ok"], report["ctypes_patched_on_import"]
    assert report["zlib_only_for_a_pyz"]["ok"], report["zlib_only_for_a_pyz"]
    assert report["setns_without_ctypes"]["ok"], report["setns_without_ctypes"]
    if form == "onedir":  # its modules are files: nothing to inflate, zlib never loaded
        assert report["zlib_only_for_a_pyz"]["detail"] == "PYZ empty, zlib not loaded"
    assert report["cli_commands"]["ok"], report["cli_commands"]


def pkg_entry(exe: Path, name: str) -> bytes:
    """One entry of the PKG archive PyInstaller appends to the executable, inflated.

    The archive ends with a cookie (magic, archive length, table-of-contents
    offset and length, Python version, libpython name; big-endian); each
    table entry is (entry length, offset, stored length, full length,
    compressed flag, type code) and a NUL-padded name.
    """
    data = exe.read_bytes()
    cookie = struct.Struct("!8sIIII64s")
    start = data.rfind(b"MEI\014\013\012\013\016")
    assert start >= 0, f"{exe} holds no PyInstaller archive"
    _, length, toc_offset, toc_length, _, _ = cookie.unpack_from(data, start)
    base = start + cookie.size - length
    entry = struct.Struct("!IIIIBc")
    pos, end = base + toc_offset, base + toc_offset + toc_length
    while pos < end:
        size, offset, stored, _, compressed, _ = entry.unpack_from(data, pos)
        if data[pos + entry.size : pos + size].rstrip(b"\0").decode() == name:
            blob = data[base + offset : base + offset + stored]
            return zlib.decompress(blob) if compressed else blob
        pos += size
    raise KeyError(f"{name} is not in {exe}'s archive")


@pytest.mark.parametrize("form", sorted(BUILDS))
def test_frozen_bootstrap_does_not_scan_for_eggs(form: str) -> None:
    """[form] The bundled bootstrap script no longer lists _internal/ for .egg directories on every exec.

    PyInstaller's bootstrap ends with a loop that stats every entry of the
    bundle's top directory (~130 in the onedir) to put unpacked eggs on
    sys.path; the bundle has none, and build.spec (EGG_SCAN) drops the loop.
    The entry is a marshalled code object, whose names are stored as plain
    ASCII (whatever the Python version that built it).
    """
    code = pkg_entry(built(form), "pyiboot01_bootstrap")
    assert b"_MEIPASS" in code and b"pyimod03_ctypes" in code  # the bootstrap it is, read whole
    assert b"listdir" not in code
    assert b"listdir" in marshal.dumps(compile("for e in os.listdir(sys._MEIPASS): pass", "egg", "exec"))


def test_frozen_onedir_starts_in_one_exec() -> None:
    """[onedir] One exec per CNI command: the bootloader does not exec itself again (bootloader_patch.py).

    PyInstaller's stock onedir bootloader restarts once on Linux so that
    LD_LIBRARY_PATH takes effect; the dynamic linker reports each program
    start it makes (LD_DEBUG=files, "transferring control").
    """
    exe = built("onedir")
    proc = subprocess.run(
        [str(exe)],
        env={"PATH": CLEAN_PATH, "CNI_COMMAND": "VERSION", "LD_DEBUG": "files"},
        input="{}",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0 and '"supportedVersions"' in proc.stdout, proc.stderr[-2000:]
    starts = [line for line in proc.stderr.splitlines() if "transferring control:" in line]
    assert len(starts) == 1, starts


def _own_runpath(path: Path) -> bool:
    """Whether an ELF file carries a RUNPATH of its own (readelf from binutils, which build.sh requires)."""
    proc = subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True, timeout=60, check=True)
    return "(RUNPATH)" in proc.stdout


@pytest.mark.parametrize("form", sorted(BUILDS))
def test_frozen_bundled_libraries_are_the_ones_mapped(form: str) -> None:
    """[form] The libraries the bundle carries (libffi for ctypes, libxtables...) are mapped from the bundle.

    Without the restart, the onedir finds them through its executable's RPATH;
    an extension module with a RUNPATH of its own (an interpreter built with one,
    like pyenv's) resolves its libraries there first, as the dynamic linker does.
    """
    report = selftest(built(form))
    home = report["meipass"] + "/"
    bundled, mapped = report["bundled_libraries_mapped"]["bundled"], report["bundled_libraries_mapped"]["mapped"]
    ffi = [name for name in bundled if name.startswith("libffi.so")]
    assert ffi and all(name in mapped for name in ffi), (bundled, mapped)  # the self-test imported ctypes
    elsewhere = {name: path for name, path in mapped.items() if not path.startswith(home)}
    if elsewhere and shutil.which("readelf"):
        # The onefile's tree is gone with its process: the onedir's extension modules are the same files.
        tree = built("onedir").parent / "_internal"
        with_runpath = [p.name for p in tree.glob("python3*/lib-dynload/*.so") if _own_runpath(p)]
        if with_runpath:
            pytest.skip(f"{elsewhere} resolved through the interpreter's own RUNPATH ({with_runpath[:3]}...)")
    assert not elsewhere, elsewhere


@pytest.mark.parametrize("form", sorted(BUILDS))
@pytest.mark.parametrize("original", [None, "/opt/vendor/lib"])
def test_frozen_host_tools_get_the_original_ld_library_path(form: str, original: Optional[str]) -> None:
    """[form] The bundle's library dir is on LD_LIBRARY_PATH for the plugin, never for the tools it execs."""
    report = selftest(built(form), {"LD_LIBRARY_PATH": original} if original else None)
    own = report["ld_library_path"]["self"] or ""
    assert report["meipass"] in own.split(":")
    assert report["ld_library_path"]["host_tools"] == original


@pytest.mark.netns
def test_installed_plugin_builds_a_router(tmp_path: Path, topology: Topology, pod: Pod, log_file: Path) -> None:
    """install.sh's symlink in a CNI bin dir serves ADD, CHECK, DEL, DEL; traffic leaves from the reserved IP."""
    built("onedir")
    cni_bin = tmp_path / "cni-bin"
    subprocess.run(
        [
            "bash",
            str(REPO / "scripts" / "install.sh"),
            "--prefix",
            str(tmp_path / "prefix"),
            "--cni-bin-dir",
            str(cni_bin),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    plugin = Plugin(topology.node, command=[str(cni_bin / "egress-router")])
    conf = router_config("1.0.0", str(log_file))

    added = plugin.add(conf, pod.path)
    assert added.returncode == 0, added.describe()
    result = added.document()
    assert [i["name"] for i in result["interfaces"]] == [IFNAME]
    assert oracle.link(pod.ns, IFNAME) is not None
    assert oracle.nft_table_exists(pod.ns, "ip", "egress_cni")
    reply = parse_reply(topology.request("tcp", 8080))
    assert reply["peer_ip"] == RESERVED_IP, reply

    cached = with_prev_result(conf, result)
    checked = plugin.check(cached, pod.path)
    assert checked.returncode == 0, checked.describe()
    for _ in range(2):
        deleted = plugin.delete(cached, pod.path)
        assert deleted.returncode == 0, deleted.describe()
    assert oracle.link(pod.ns, IFNAME) is None
    assert not oracle.nft_table_exists(pod.ns, "ip", "egress_cni")
    assert os.path.islink(cni_bin / "egress-router")
