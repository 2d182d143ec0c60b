"""Writing outputs whole: a temporary file beside the target, then one rename."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def temporary_file(folder: str | Path, name: str, suffix: str = ".tmp") -> Path:
    """A new hidden file in ``folder`` to write ``name`` into before renaming it in place (two processes
    never share one). It gets the permissions a plainly created file would (``0666`` less the umask):
    ``mkstemp`` makes it private (``0600``), and the rename would keep that for the finished output."""
    handle, path = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=suffix)
    os.close(handle)
    umask = os.umask(0)  # reading the umask means setting it; put back at once
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)
    return Path(path)
