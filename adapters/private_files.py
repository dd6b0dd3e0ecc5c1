"""Files and directories that titan creates for secrets and ledgers: readable by their owner only."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

FILE_MODE: Final = 0o600
DIRECTORY_MODE: Final = 0o700


def make_private_directory(directory: Path) -> None:
    """Create a directory (and missing parents) readable by its owner only; keep one that exists."""
    if directory.is_dir():
        return
    make_private_directory(directory.parent)
    try:
        directory.mkdir(mode=DIRECTORY_MODE)
    except FileExistsError:
        if not directory.is_dir():
            raise


def create_private_file(file: Path) -> None:
    """Create a new, empty file readable by its owner only; missing directories get 0700."""
    make_private_directory(file.parent)
    descriptor = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    os.close(descriptor)
