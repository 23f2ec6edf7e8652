"""linger: a CNI exec's netfilter sockets are closed after it exits, by a child that holds nothing else."""

from __future__ import annotations

import os
import select
import subprocess
import sys
from pathlib import Path

from egress_router_cni import linger

ROOT = Path(__file__).resolve().parents[2]

# Defers the close of the descriptor it is given (and of two copies), hands them off,
# and exits when the "go" pipe (its second argument) reaches end of file.
SCRIPT = """
import os, sys
from egress_router_cni import linger
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


def test_deferred_descriptor_is_closed_only_after_the_process_exits() -> None:
    r, w = os.pipe()
    go_r, go_w = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(w), str(go_r)],
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
        os.close(go_w)
        go_w = -1
        assert proc.wait(30) == 0
        # Then the child closes it.
        assert _closed_within(r, 30)
    finally:
        if go_w >= 0:
            os.close(go_w)
        proc.kill()
        proc.wait()
        os.close(r)


def test_finish_returns_to_closing_at_once() -> None:
    linger.defer()
    linger.finish()  # nothing deferred: no child
    r, w = os.pipe()
    linger.close(w)
    assert _closed_within(r, 0)
    os.close(r)
