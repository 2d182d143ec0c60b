"""The shared driving readers: sequence groups for splits by drive."""

from __future__ import annotations

import pytest

from domains.driving.common import read_sequence_groups
from domains.driving.formats import LabelFormatError


def test_read_sequence_groups_kitti_devkit_mapping(tmp_path):
    mapping = tmp_path / "mapping"
    mapping.mkdir()
    (mapping / "train_mapping.txt").write_text(
        "2011_09_26 2011_09_26_drive_0005_sync 0000000109\n2011_09_26 2011_09_26_drive_0009_sync 0000000001\n"
        "2011_09_26 2011_09_26_drive_0005_sync 0000000110\n"
    )
    (mapping / "train_rand.txt").write_text("3,2,1\n")
    groups = read_sequence_groups(tmp_path / "training", ["000000", "000001", "000002"])
    assert groups == [
        "2011_09_26_drive_0005_sync",
        "2011_09_26_drive_0009_sync",
        "2011_09_26_drive_0005_sync",
    ]
    with pytest.raises(LabelFormatError, match="'000009'"):
        read_sequence_groups(tmp_path / "training", ["000009"])
    assert read_sequence_groups(tmp_path / "elsewhere" / "training", ["7"]) == ["7"]
