#!/usr/bin/env bash
# Benchmark the plugin (frozen onedir, onefile and `python3 -m egress_router_cni`):
# ADD/CHECK/DEL latency against the interpreter floor, destination scaling,
# concurrent ADDs and peak RSS. Not a test: it prints a table, writes
# build/bench/results.json (and latency.png when matplotlib is installed).
#
#   sudo scripts/bench.sh [--quick] [--iterations N] [--impl onedir,python] ...   (see --help)
#
# Needs root, iproute2 and nftables. The whole run happens in a fresh network
# namespace (unshare --net) and in namespaces it creates (erb-<id>-*), which it
# removes on exit, Ctrl-C included; the host's interfaces are never touched.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-python3}
if [ "$(id -u)" != 0 ]; then
    echo "bench.sh: needs root (creates network namespaces)" >&2
    exit 2
fi
# Resolve shims (pyenv) to the real interpreter: the floor must time python, not a wrapper script.
PYTHON=$("$PYTHON" -c 'import sys; print(sys.executable)')
exec unshare --net -- "$PYTHON" "$REPO/scripts/bench.py" "$@"
