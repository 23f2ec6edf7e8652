"""Run a host tool with os.posix_spawn (no subprocess import on the hot path)."""

from __future__ import annotations

import os
import sys
from typing import Dict, List, Optional, Tuple


def host_environ() -> Dict[str, str]:
    """The environment for host tools: a frozen bundle's LD_LIBRARY_PATH must not leak into them."""
    env = dict(os.environ)
    original = env.pop("LD_LIBRARY_PATH_ORIG", None)  # set by PyInstaller's bootloader
    if original is not None:
        env["LD_LIBRARY_PATH"] = original
    elif getattr(sys, "frozen", False):
        env.pop("LD_LIBRARY_PATH", None)
    return env


def find_tool(name: str) -> Optional[str]:
    """The path of a tool on PATH or in the sbin/bin directories, or None."""
    import shutil  # only the fallback to the nft tool needs it

    path = os.environ.get("PATH") or "/usr/sbin:/usr/bin:/sbin:/bin"
    return shutil.which(name, path=path + ":/usr/sbin:/usr/bin:/sbin:/bin")


def run(argv: Tuple[str, ...], stdin_data: bytes = b"") -> Tuple[int, bytes, bytes]:
    """Spawn argv, feed stdin_data, return (exit status, stdout, stderr)."""
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    actions = [
        (os.POSIX_SPAWN_DUP2, in_r, 0),
        (os.POSIX_SPAWN_DUP2, out_w, 1),
        (os.POSIX_SPAWN_DUP2, err_w, 2),
    ]
    try:
        pid = os.posix_spawn(argv[0], list(argv), host_environ(), file_actions=actions)
    finally:
        for fd in (in_r, out_w, err_w):
            os.close(fd)
    out, err = b"", b""
    try:
        # Small batches fit the pipe buffer; write then read both streams to EOF.
        # Large ones (thousands of rules) need interleaving: use a poll loop.
        import selectors

        sel = selectors.DefaultSelector()
        pending = memoryview(stdin_data)
        if pending:
            sel.register(in_w, selectors.EVENT_WRITE)
        else:
            os.close(in_w)
            in_w = -1
        sel.register(out_r, selectors.EVENT_READ)
        sel.register(err_r, selectors.EVENT_READ)
        chunks: Dict[int, List[bytes]] = {out_r: [], err_r: []}
        open_readers = 2
        while open_readers:
            for key, _ in sel.select():
                fd = key.fd
                if fd == in_w:
                    try:
                        n = os.write(in_w, pending[:65536])
                    except BrokenPipeError:
                        n = len(pending)  # the tool exited early; its stderr says why
                    pending = pending[n:]
                    if not pending:
                        sel.unregister(in_w)
                        os.close(in_w)
                        in_w = -1
                else:
                    data = os.read(fd, 65536)
                    if data:
                        chunks[fd].append(data)
                    else:
                        sel.unregister(fd)
                        open_readers -= 1
        sel.close()
        out, err = b"".join(chunks[out_r]), b"".join(chunks[err_r])
    finally:
        for fd in (in_w, out_r, err_r):
            if fd >= 0:
                os.close(fd)
        _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out, err
