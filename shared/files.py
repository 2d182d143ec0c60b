"""Files on disk: outputs written whole (a temporary file beside the target, then one rename), and listings
that leave out hidden files and sort frame names as numbers."""

from __future__ import annotations

import os
import re
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


def is_hidden(path: str | Path, root: str | Path | None = None) -> bool:
    """Whether ``path`` (or a folder between ``root`` and it) is hidden: its name starts with a dot. Copies
    from a Mac put a ``._frame.jpg`` resource fork beside every file, and ``.DS_Store`` in every folder; no
    reader can decode them, and they are not the user's data, so listings leave them out."""
    path = Path(path)
    parts = path.relative_to(root).parts if root is not None else (path.name,)
    return any(part.startswith(".") for part in parts)


def visible_files(folder: str | Path, suffixes: tuple[str, ...] | None = None, recursive: bool = False) -> list[Path]:
    """The files in ``folder`` (below it, with ``recursive``) whose suffix is one of ``suffixes`` in any case
    (``.JPG``, ``.Mp4``; None: any), sorted by path, hidden ones (:func:`is_hidden`) left out."""
    folder = Path(folder)
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        p
        for p in found
        if p.is_file()
        and not is_hidden(p, folder)
        and (suffixes is None or p.suffix.lower() in suffixes)
    )


def natural_key(name: str) -> list:
    """Sort key putting ``frame_2.jpg`` before ``frame_10.jpg``: digit runs compare as numbers (a plain sort
    puts 10 before 2, and frames unpadded in their names would play out of order)."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]
