"""Entry point: the CNI plugin when CNI_COMMAND is set, the human CLI otherwise."""

from __future__ import annotations

import os
import sys


def main() -> None:
    if "CNI_COMMAND" in os.environ:
        from .protocol import run

        # Binary stdin: the config is JSON bytes; a decoding error must become code 6, not a crash.
        sys.exit(run(os.environ, sys.stdin.buffer, sys.stdout, sys.stderr))
    from .cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
