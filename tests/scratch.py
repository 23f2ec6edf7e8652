"""Scratch directories outside pytest's tmp_path (where the plugin's log rules are tested)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Iterator


def temp_dir(prefix: str, parent: str) -> Iterator[Path]:
    """A fresh directory under PARENT, removed afterwards whatever happened."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
