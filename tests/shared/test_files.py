"""shared.files: temporary outputs get the permissions of a plainly created file, not mkstemp's 0600; listings
leave out hidden files and folders (a Mac copy's ._* forks, .DS_Store)."""

import os
import stat
from pathlib import Path

from shared.files import is_hidden, temporary_file, visible_files


def test_temporary_file_has_the_umask_permissions_and_a_hidden_unique_name(tmp_path):
    kept = os.umask(0o027)
    try:
        first = temporary_file(tmp_path, "clip.gif")
        second = temporary_file(tmp_path, "clip.gif")
        plain = tmp_path / "plain"
        plain.touch()
        assert os.umask(0o027) == 0o027  # left as it was
    finally:
        os.umask(kept)
    assert first != second and first.parent == tmp_path and first.name.startswith(".clip.gif.")
    assert first.name.endswith(".tmp") and first.stat().st_size == 0
    assert stat.S_IMODE(first.stat().st_mode) == 0o640  # 0666 less 0027, by hand
    final = tmp_path / "final"
    os.replace(first, final)
    assert stat.S_IMODE(final.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode)


def test_visible_files_leave_out_hidden_folders_and_ds_store(tmp_path):
    (tmp_path / ".thumbnails").mkdir()
    (tmp_path / ".thumbnails" / "a.png").write_bytes(b"x")
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / ".DS_Store").write_bytes(b"x")
    assert visible_files(tmp_path, recursive=True) == [tmp_path / "a.png"]
    assert is_hidden(tmp_path / ".thumbnails" / "a.png", tmp_path)
    assert is_hidden(Path(".DS_Store"))  # f2
