#!/usr/bin/env bash
# Build the libcni driver (ercni.go) into tests/clients/bin/ with Debian's Go and Debian's
# libcni sources (golang-github-appc-cni-dev), in GOPATH mode: no module download, no network.
# Rebuilds only when ercni.go is newer than the binary. Prints the binary's path.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin="$here/bin"
out="$bin/ercni"
gopath=/usr/share/gocode

if ! command -v go >/dev/null 2>&1; then
    echo "build.sh: go not installed (apt-get install golang-go): run scripts/install-runtimes.sh" >&2
    exit 2
fi
if [ ! -d "$gopath/src/github.com/containernetworking/cni/libcni" ]; then
    echo "build.sh: libcni sources missing (apt-get install golang-github-appc-cni-dev): run scripts/install-runtimes.sh" >&2
    exit 2
fi
mkdir -p "$bin"
if [ ! -x "$out" ] || [ "$here/ercni.go" -nt "$out" ]; then
    # A private build cache: CI may have no usable HOME.
    GO111MODULE=off GOPATH="$gopath" GOCACHE="$bin/.gocache" GOFLAGS= CGO_ENABLED=0 \
        go build -o "$out.tmp" "$here/ercni.go"
    mv -f "$out.tmp" "$out"
fi
echo "$out"
