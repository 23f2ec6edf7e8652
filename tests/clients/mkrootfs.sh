#!/usr/bin/env bash
# mkrootfs.sh DIR: a tiny container rootfs made of a few host binaries and their libraries,
# for `podman run --rootfs DIR` and (packed by mk_oci_archive.py) a containerd sandbox image.
# No image registry is involved.
set -euo pipefail

root="${1:?usage: mkrootfs.sh DIR}"
rm -rf "$root"
mkdir -p "$root"/{bin,etc,proc,sys,dev,run,tmp}
for b in sh ip cat sleep ls true; do
    p="$(type -P "$b")"
    p="$(readlink -f "$p")"
    cp -L "$p" "$root/bin/$b"
    for lib in $(ldd "$p" | grep -o '/[^ ]*'); do
        mkdir -p "$root$(dirname "$lib")"
        cp -Ln "$lib" "$root$lib"
    done
done
echo "root:x:0:0:root:/:/bin/sh" >"$root/etc/passwd"
echo "root:x:0:" >"$root/etc/group"
