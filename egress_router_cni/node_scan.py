"""Every network namespace on the node, once: for `egress-router inspect --all`.

Pods' namespaces are found where runtimes pin them (`ip netns`, CRI-O and
containerd use /run/netns; podman /run/netns or /run/user/UID/netns; Docker
/var/run/docker/netns) and through every process's /proc/PID/ns/net, which
also covers namespaces nobody pinned. One namespace has many such paths: they
are told apart by the nsfs inode (st_dev, st_ino), and the first path found
names it (pinned names before /proc paths). The node's own namespace is left
out: the plugin never configures it.
"""

from __future__ import annotations

import os
from typing import Iterator, List, Sequence, Tuple

from .netns import identity, open_nsfs
from .record import Record

NETNS_DIRS = ("/run/netns", "/var/run/netns")


class FoundNetns(Record):
    path: str  # how it was found: /run/netns/NAME or /proc/PID/ns/net
    fd: int  # an open nsfs descriptor (the caller closes it)
    inode: Tuple[int, int]  # (st_dev, st_ino) of the namespace


def candidate_paths(netns_dirs: Sequence[str] = NETNS_DIRS, proc: str = "/proc") -> List[str]:
    """Pinned namespaces (sorted by name), then each process's namespace (by PID)."""
    paths: List[str] = []
    for directory in netns_dirs:
        try:
            names = sorted(os.listdir(directory))
        except OSError:
            continue
        paths += [os.path.join(directory, name) for name in names]
    if proc:
        try:
            pids = sorted(int(p) for p in os.listdir(proc) if p.isdigit())
        except OSError:
            pids = []
        paths += [f"{proc}/{pid}/ns/net" for pid in pids]
    return paths


def find_netns(netns_dirs: Sequence[str] = NETNS_DIRS, proc: str = "/proc") -> Iterator[FoundNetns]:
    """Each network namespace other than our own, once, with an open descriptor the caller closes.

    A generator: one descriptor at a time, however many namespaces the node has.
    """
    seen = {identity_of("/proc/self/ns/net")}
    for path in candidate_paths(netns_dirs, proc):
        fd = open_nsfs(path)
        if fd is None:
            continue  # gone, not a namespace, or not ours to open
        inode = identity(fd)
        if inode in seen:
            os.close(fd)
            continue
        seen.add(inode)
        yield FoundNetns(path, fd, inode)


def identity_of(path: str) -> Tuple[int, int]:
    """(device, inode) of the namespace file at path."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return identity(fd)
    finally:
        os.close(fd)
