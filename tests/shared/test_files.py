"""shared.files: temporary outputs get the permissions of a plainly created file, not mkstemp's 0600; listings
leave out hidden files and folders (a Mac copy's ._* forks, .DS_Store)."""

import os
import stat
import warnings
from pathlib import Path

import numpy as np
import pytest

from shared.files import (
    HiddenFilesWarning,
    counting_hidden_files,
    is_hidden,
    temporary_file,
    visible_entries,
    visible_files,
)


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


def test_visible_files_count_the_hidden_files_they_leave_out_in_one_warning(tmp_path):
    for name in ("a.png", "._a.png", "._b.png", ".DS_Store", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    with pytest.warns(HiddenFilesWarning, match=r"2 hidden files left out \(\._a\.png, \._b\.png\)") as caught:
        assert visible_files(tmp_path, (".png",)) == [tmp_path / "a.png"]
    assert len(caught) == 1 and str(tmp_path) in str(caught[0].message)
    with warnings.catch_warnings():  # nothing hidden among the files asked for: no warning
        warnings.simplefilter("error")
        assert visible_files(tmp_path, (".txt",)) == [tmp_path / "notes.txt"]


def test_counting_hidden_files_says_one_total_for_many_listings(tmp_path):
    for clip in ("c1", "c2", "c3"):
        (tmp_path / clip).mkdir()
        (tmp_path / clip / "1.jpg").write_bytes(b"x")
        (tmp_path / clip / "._1.jpg").write_bytes(b"x")
    (tmp_path / ".thumbs").mkdir()
    with warnings.catch_warnings(record=True) as caught, counting_hidden_files(tmp_path):
        warnings.simplefilter("always")
        with counting_hidden_files(tmp_path / "c1"):  # nested: the outer block counts
            assert visible_files(tmp_path / "c1", (".jpg",)) == [tmp_path / "c1" / "1.jpg"]
        for clip in ("c2", "c3"):
            visible_files(tmp_path / clip, (".jpg",))
        assert visible_entries(tmp_path) == [tmp_path / "c1", tmp_path / "c2", tmp_path / "c3"]
        assert caught == []  # nothing said inside the block
    assert [w.category for w in caught] == [HiddenFilesWarning]
    expected = f"{tmp_path}: 4 hidden files left out (c1/._1.jpg, c2/._1.jpg, c3/._1.jpg and 1 more)"
    assert str(caught[0].message).startswith(expected)


def test_score_text_reads_back_as_the_same_float32_and_keeps_near_ties_apart():
    from shared.files import score_text

    close = np.array([0.99953127, 0.9995313, 0.99980, 1e-9, 0.5, 1.0], dtype=np.float32)
    texts = [score_text(v) for v in close]
    assert texts[2:] == ["0.9998", "0.000000001", "0.5", "1"]
    np.testing.assert_array_equal(np.array([float(t) for t in texts], dtype=np.float32), close)
    assert texts[0] != texts[1]  # 4 decimals wrote both as 0.9995
