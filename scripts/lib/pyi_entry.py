"""PyInstaller entry script for the egress-router executable (see build.spec).

With EGRESS_ROUTER_SELFTEST=1 and no CNI_COMMAND, the frozen program checks
its own bundle instead (scripts/lib/pyi_selftest.py): scripts/build.sh uses
that to prove the lazily imported modules and libraries were collected.
"""

import os

if "EGRESS_ROUTER_SELFTEST" in os.environ and "CNI_COMMAND" not in os.environ:
    from pyi_selftest import main as selftest

    raise SystemExit(selftest())

from egress_router_cni.__main__ import main

main()
