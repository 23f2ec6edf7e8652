"""Make PyInstaller's bootloader start a onedir build in one exec: `bootloader_patch.py SOURCE_TREE`.

On Linux, PyInstaller's onedir executable sets LD_LIBRARY_PATH to its
contents directory (_internal/) and then execs itself again, because the
dynamic linker reads that variable only when a program starts. The second
exec costs about 1 ms of CPU on every CNI command (docs/performance.md).

scripts/build.sh compiles the bootloader from PyInstaller's own source with
these edits and links it with an RPATH of $ORIGIN/_internal, which the
dynamic linker searches from the first exec on, for the executable and for
every library it loads that does not carry a RUNPATH of its own:
- a onedir's entry process is PyInstaller's "main" process at once, not a
  launcher that must restart;
- that process still sets LD_LIBRARY_PATH (and LD_LIBRARY_PATH_ORIG) in its
  environment, as the restarted process did, for the programs it starts.
Onefile builds do not use this bootloader.

Each edit must match PyInstaller's source exactly once: another PyInstaller
fails the build here instead of shipping a bootloader nobody checked.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Tuple

MAIN_C = Path("bootloader") / "src" / "pyi_main.c"

EDITS: List[Tuple[str, str]] = [
    (
        """#else
                /* Other POSIX systems - mark as the parent/launcher
                 * that needs to restart itself. */
                pyi_ctx->process_level = PYI_PROCESS_LEVEL_PARENT_NEEDS_RESTART;
#endif""",
        """#else
                /* egress-router: the main process at once. The bootloader
                 * is linked with an RPATH to the contents directory, so no
                 * restart is needed for LD_LIBRARY_PATH to take effect. */
                pyi_ctx->process_level = PYI_PROCESS_LEVEL_MAIN;
#endif""",
    ),
    (
        """        modify_ld_library_path = (
            /* Main process of onedir application before restart, or""",
        """        modify_ld_library_path = (
            /* egress-router: main process of onedir application, not restarted:
             * the variable is for the programs it starts. */
            (!pyi_ctx->is_onefile && pyi_ctx->process_level == PYI_PROCESS_LEVEL_MAIN &&
             pyi_ctx->parent_process_level == PYI_PROCESS_LEVEL_UNKNOWN) ||
            /* Main process of onedir application before restart, or""",
    ),
]


def patch(text: str) -> str:
    """text with every edit applied; ValueError when one does not match exactly once."""
    for old, new in EDITS:
        count = text.count(old)
        if count != 1:
            raise ValueError(f"expected this text once in {MAIN_C}, found it {count} times:\n{old}")
        text = text.replace(old, new)
    return text


def main(argv: List[str]) -> int:
    if len(argv) != 2:
        print(__doc__.splitlines()[0], file=sys.stderr)
        return 2
    path = Path(argv[1]) / MAIN_C
    try:
        path.write_text(patch(path.read_text()))
    except (OSError, ValueError) as e:
        print(f"bootloader_patch.py: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
