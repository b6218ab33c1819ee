"""Writing files so that a crash or a kill never leaves a truncated file under the final name."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | Path, write: Callable[[str], object]) -> Path:
    """Call `write(tmp)` on a temporary name beside `path`, then rename it to `path`.

    The temporary file is hidden (a leading dot) and starts with the final name, so a glob for a
    hidden file's siblings also finds a temporary file a killed process left; it is removed if
    `write` raises.
    """
    path = Path(path)
    prefix = path.name if path.name.startswith(".") else f".{path.name}"
    fd, tmp = tempfile.mkstemp(prefix=f"{prefix}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
