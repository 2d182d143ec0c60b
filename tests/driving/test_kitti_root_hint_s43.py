"""``--data.data_path`` one level too deep in a KITTI root (its ``training/image_2`` or ``training``, what a
file browser hands over) said only which paths were tried; it now names the root to give (s43)."""

from __future__ import annotations

import re

import pytest

from domains.driving.formats import resolve_kitti_split


@pytest.mark.parametrize("given", ["training/image_2", "training/label_2"])
def test_a_folder_inside_a_kitti_root_names_the_root(tmp_path, given):
    for folder in ("training/image_2", "training/label_2"):
        (tmp_path / "kitti" / folder).mkdir(parents=True)
    said = re.escape(f"it lies inside the KITTI root {tmp_path / 'kitti'}: give that folder")
    with pytest.raises(FileNotFoundError, match=said):
        resolve_kitti_split(tmp_path / "kitti" / given)
    assert resolve_kitti_split(tmp_path / "kitti") == tmp_path / "kitti" / "training"
    assert resolve_kitti_split(tmp_path / "kitti" / "training") == tmp_path / "kitti" / "training"
