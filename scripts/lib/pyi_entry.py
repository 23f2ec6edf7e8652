"""PyInstaller entry script for the egress-router executable (see build.spec)."""

from egress_router_cni.__main__ import main

main()
