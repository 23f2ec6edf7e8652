#!/usr/bin/env python3
"""Pack a directory into a one-layer OCI image archive that `ctr images import` accepts.

    mk_oci_archive.py ROOTFS OUT.tar NAME:TAG ENTRYPOINT...
    e.g. mk_oci_archive.py rootfs pause.tar localhost/ert-pause:1 /bin/sleep infinity

No registry, no podman: a sandbox ("pause") image for containerd's CRI plugin.
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
import sys
import tarfile
from typing import Any, Dict, List, Sequence

MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar"
_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


class Blobs:
    """Content-addressed blobs of the archive, by sha256 hex digest."""

    def __init__(self) -> None:
        self.data: Dict[str, bytes] = {}

    def add(self, data: bytes) -> Dict[str, Any]:
        digest = hashlib.sha256(data).hexdigest()
        self.data[digest] = data
        return {"digest": "sha256:" + digest, "size": len(data)}


def layer_tar(rootfs: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(rootfs, arcname=".")
    return buf.getvalue()


def image_index(rootfs: str, ref: str, entrypoint: List[str], blobs: Blobs) -> Dict[str, Any]:
    layer = layer_tar(rootfs)
    config = {
        "architecture": _ARCH.get(platform.machine(), platform.machine()),
        "os": "linux",
        "config": {"Entrypoint": entrypoint, "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, **blobs.add(json.dumps(config).encode())},
        "layers": [{"mediaType": LAYER_TYPE, **blobs.add(layer)}],
    }
    annotations = {"io.containerd.image.name": ref, "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[-1]}
    entry = {"mediaType": MANIFEST_TYPE, **blobs.add(json.dumps(manifest).encode()), "annotations": annotations}
    return {"schemaVersion": 2, "manifests": [entry]}


def write_archive(out: str, index: Dict[str, Any], blobs: Blobs) -> None:
    def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(out, "w") as tar:
        add(tar, "oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add(tar, "index.json", json.dumps(index).encode())
        for digest, data in blobs.data.items():
            add(tar, "blobs/sha256/" + digest, data)


def pack(rootfs: str, out: str, ref: str, entrypoint: Sequence[str]) -> None:
    """Write OUT, an OCI image layout tar holding ROOTFS as image REF."""
    blobs = Blobs()
    write_archive(out, image_index(rootfs, ref, list(entrypoint), blobs), blobs)


def main(argv: Sequence[str]) -> int:
    if len(argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    pack(argv[0], argv[1], argv[2], argv[3:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
