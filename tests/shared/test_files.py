"""shared.files: listings leave out hidden files and folders (a Mac copy's ._* forks, .DS_Store)."""

from __future__ import annotations

from pathlib import Path


def test_visible_files_leave_out_hidden_folders_and_ds_store(tmp_path):
    from shared.files import is_hidden, visible_files
    (tmp_path / ".thumbnails").mkdir()
    (tmp_path / ".thumbnails" / "a.png").write_bytes(b"x")
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / ".DS_Store").write_bytes(b"x")
    assert visible_files(tmp_path, recursive=True) == [tmp_path / "a.png"]
    assert is_hidden(tmp_path / ".thumbnails" / "a.png", tmp_path)
    assert is_hidden(Path(".DS_Store"))  # f2
