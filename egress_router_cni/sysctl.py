"""Network sysctls of the namespace the process is in (/proc/sys/net follows the caller's netns)."""

from __future__ import annotations

import os

from .errors import SysctlError

FORWARDING = {4: "net/ipv4/ip_forward", 6: "net/ipv6/conf/all/forwarding"}


def _path(key: str) -> str:
    if ".." in key.split("/"):
        raise SysctlError("invalid sysctl", key)
    return "/proc/sys/" + key


def read(key: str) -> str:
    """The value of a sysctl of the current namespace, e.g. read('net/ipv4/ip_forward'); raise SysctlError."""
    try:
        with open(_path(key)) as f:
            return f.read().strip()
    except OSError as e:
        raise SysctlError(f"failed to read sysctl {key.replace('/', '.')}", e.strerror or str(e)) from e


def write(key: str, value: str) -> None:
    """Set a sysctl of the current namespace; raise SysctlError naming the key and value."""
    try:
        fd = os.open(_path(key), os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
    except OSError as e:
        raise SysctlError(f"failed to set sysctl {key.replace('/', '.')}={value}", e.strerror or str(e)) from e


def link_key(version: int, ifname: str, name: str) -> str:
    """The per-link sysctl key, e.g. link_key(4, 'net1', 'proxy_arp')."""
    return f"net/ipv{version}/conf/{ifname}/{name}"
