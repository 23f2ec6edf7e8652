"""PyInstaller entry script for the egress-router executable (see build.spec).

With EGRESS_ROUTER_SELFTEST=1 and no CNI_COMMAND, the frozen program checks
its own bundle instead (scripts/lib/pyi_selftest.py): scripts/build.sh uses
that to prove the lazily imported modules and libraries were collected.
"""

import os

if "CNI_COMMAND" in os.environ:
    # One CNI command is a short process that ends in os._exit: the cyclic
    # garbage collector would only run passes over the objects the imports
    # create (a dozen collections, ~2 ms of CPU per ADD), and what it could
    # free goes back with the process moments later. Reference counting still
    # frees everything that is not in a cycle.
    import gc

    gc.disable()
elif "EGRESS_ROUTER_SELFTEST" in os.environ:
    from pyi_selftest import main as selftest

    raise SystemExit(selftest())

from egress_router_cni.__main__ import main

main()
