"""linger: a CNI exec's netfilter sockets are closed after it exits, by a child that holds nothing else."""

from __future__ import annotations

import os
import select
import subprocess
import sys
from pathlib import Path

from egress_router_cni import linger

ROOT = Path(__file__).resolve().parents[2]

# Defers the close of the descriptor it is given, hands it off, says so, and exits when told.
SCRIPT = """
import os, sys
from egress_router_cni import linger
linger.defer()
linger.close(int(sys.argv[1]))
sys.stdout.write("handed\\n")
sys.stdout.flush()
linger.finish()
sys.stdin.readline()
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
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(w)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        pass_fds=[w],
        cwd=ROOT,
    )
    os.close(w)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline() == b"handed\n"
        # The child keeps the descriptor while the process lives...
        assert not _closed_within(r, 0.2)
        proc.stdin.write(b"exit\n")
        proc.stdin.flush()
        # ...and nothing but it: our end of the process's stdout sees end of file at its exit.
        assert proc.stdout.read() == b""
        assert proc.wait(30) == 0
        # Then the child closes it.
        assert _closed_within(r, 30)
    finally:
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
