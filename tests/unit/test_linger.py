"""linger: a CNI exec's netfilter sockets are closed after it exits, by a child that holds nothing else."""

from __future__ import annotations

import os
import select
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest

from egress_router_cni import linger

ROOT = Path(__file__).resolve().parents[2]

# Defers the close of the descriptor it is given (and of two copies), hands them off,
# and exits when the "go" pipe (its second argument) reaches end of file. A third
# argument replaces linger.HOLDER.
SCRIPT = """
import os, sys
from egress_router_cni import linger
if len(sys.argv) > 3:
    linger.HOLDER = sys.argv[3]
linger.defer()
fd = int(sys.argv[1])
for copy in (fd, os.dup(fd), os.dup(fd)):  # adjacent descriptors, as a command's sockets are
    linger.close(copy)
sys.stdout.write("handed\\n")
sys.stdout.flush()
linger.finish()
os.read(int(sys.argv[2]), 1)
os._exit(0)
"""


def _closed_within(fd: int, seconds: float) -> bool:
    """True when the pipe's write end is gone (end of file on fd) within seconds."""
    ready, _, _ = select.select([fd], [], [], seconds)
    return bool(ready) and os.read(fd, 1) == b""


def test_close_without_defer_is_immediate() -> None:
    r, w = os.pipe()
    linger.close(w)
    assert _closed_within(r, 0)
    os.close(r)


def _holders(pipe_fd: int, exclude: int) -> Dict[int, Tuple[str, List[str]]]:
    """{pid: (executable, descriptor targets)} of every process but exclude (and us) holding pipe_fd's pipe."""
    target = os.readlink(f"/proc/self/fd/{pipe_fd}")
    found: Dict[int, Tuple[str, List[str]]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in (exclude, os.getpid()):
            continue
        try:
            fds = sorted(os.listdir(f"/proc/{entry}/fd"), key=int)
            targets = [os.readlink(f"/proc/{entry}/fd/{fd}") for fd in fds]
            exe = os.path.realpath(f"/proc/{entry}/exe")
        except OSError:
            continue  # gone, or not ours to read
        if target in targets:
            found[int(entry)] = (exe, targets)
    return found


def _run(holder: Optional[str]) -> Dict[int, Tuple[str, List[str]]]:
    """SCRIPT with holder; checks the close happens only after exit; returns who held the descriptor."""
    r, w = os.pipe()
    go_r, go_w = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(w), str(go_r), *([holder] if holder else [])],
        stdout=subprocess.PIPE,
        pass_fds=[w, go_r],
        cwd=ROOT,
    )
    os.close(w)
    os.close(go_r)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"handed\n"
        # The standard streams are closed by finish(): end of file while the process still runs...
        assert _closed_within(proc.stdout.fileno(), 30)
        assert proc.poll() is None
        # ...and the child keeps the descriptor while the process lives.
        assert not _closed_within(r, 0.2)
        holders = _holders(r, exclude=proc.pid)
        os.close(go_w)
        go_w = -1
        assert proc.wait(30) == 0
        # Then the child closes it.
        assert _closed_within(r, 30)
        return holders
    finally:
        if go_w >= 0:
            os.close(go_w)
        proc.kill()
        proc.wait()
        os.close(r)


def test_deferred_descriptors_go_to_cat_holding_nothing_else() -> None:
    """The holder is /bin/cat: the three copies, its pipe on 0, /dev/null on 1 and 2, and nothing more."""
    if not os.access(linger.HOLDER, os.X_OK):
        pytest.skip(f"no {linger.HOLDER}")
    holders = _run(None)
    assert len(holders) == 1, holders
    ((exe, targets),) = holders.values()
    assert exe == os.path.realpath(linger.HOLDER)
    pipe = targets[0]
    assert pipe.startswith("pipe:[")
    assert targets[1:3] == ["/dev/null", "/dev/null"]
    deferred = targets[3:]
    assert len(deferred) == 3 and len(set(deferred)) == 1 and deferred[0].startswith("pipe:[") and deferred[0] != pipe


def test_without_cat_a_forked_child_holds_them() -> None:
    """When HOLDER cannot run, a fork of the process does the same, also holding nothing else."""
    holders = _run("/nonexistent/cat")
    assert len(holders) == 1, holders
    ((exe, targets),) = holders.values()
    assert exe == os.path.realpath(sys.executable)
    deferred = [t for t in targets if t.startswith("pipe:[")]
    assert len(targets) == len(deferred) == 4  # the three copies and the pipe from the parent


def test_finish_returns_to_closing_at_once() -> None:
    linger.defer()
    linger.finish()  # nothing deferred: no child
    r, w = os.pipe()
    linger.close(w)
    assert _closed_within(r, 0)
    os.close(r)
