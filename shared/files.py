"""Writing outputs whole: a temporary file beside the target, then one rename."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def temporary_file(folder: str | Path, name: str, suffix: str = ".tmp") -> Path:
    """A new hidden file in ``folder`` to write ``name`` into before renaming it in place (two processes
    never share one). Created with mode ``0666`` so the kernel applies the umask, as for a plainly created
    file: ``tempfile.mkstemp`` makes it private (``0600``), and the rename would keep that for the output."""
    for _ in range(100):
        path = Path(folder) / f".{name}.{secrets.token_hex(4)}{suffix}"
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"{folder}: no free temporary name for {name} after 100 tries")
