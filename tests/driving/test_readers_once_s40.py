"""Each reader takes its drop log the one way (``DropLog.owned``): ``strict`` with a caller's log raised in the
KITTI readers but only counted in the accident ones (a broken .npz: 0 clips, no error). The KITTI folder is listed
once (``formats.kitti_frames``): ``read_kitti_dir`` read ``000000.txt`` and ignored ``000000.TXT`` beside it."""

from __future__ import annotations

import pytest

from domains.driving.accident.readers import read_dota, read_npz_clips
from domains.driving.detection.data import DetectionDataModule
from domains.driving.formats import DropLog, LabelFormatError, read_kitti_dir
from tests.driving.layouts import write_kitti

PEDESTRIAN = "Pedestrian 0.00 0 -1.57 10.00 5.00 40.00 30.00 1.50 1.60 3.90 1.00 1.70 20.00 -1.50\n"


def _broken_npz(root):
    (root / "training").mkdir(parents=True)
    (root / "training" / "clip.npz").write_bytes(b"not a zip archive")
    return lambda **kw: read_npz_clips(root, **kw)


def _broken_dota(root):
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "clip.json").write_text("{", encoding="utf-8")
    return lambda **kw: read_dota(root, **kw)


@pytest.mark.parametrize("broken", [_broken_npz, _broken_dota], ids=["npz", "dota"])
def test_an_accident_reader_given_a_log_raises_in_strict_mode(tmp_path, broken):
    read = broken(tmp_path / "set")
    log = DropLog()
    assert read(log=log) == [] and log.total == 1  # not strict: the broken file counted in the caller's log
    with pytest.raises(LabelFormatError, match=r"clip\.(npz|json): .*strict mode"):
        read(strict=True, log=DropLog())


def _labels_twice(tmp_path):
    root = write_kitti(tmp_path / "kitti", n=2, semantic=False)
    (root / "training" / "label_2" / "000000.TXT").write_text(PEDESTRIAN)  # one file on macOS / Windows disks
    return root


def test_read_kitti_dir_refuses_two_label_files_of_one_id(tmp_path):
    root = _labels_twice(tmp_path)
    with pytest.raises(LabelFormatError, match=r"two label files share the id '000000': 000000\.(txt|TXT), 000000"):
        read_kitti_dir(root)


def test_the_detection_module_names_two_label_files_of_one_id_as_label_files(tmp_path):
    root = _labels_twice(tmp_path)
    dm = DetectionDataModule("kitti", str(root), ["Car"], num_workers=0, augment=False)
    with pytest.raises(LabelFormatError, match=r"label_2/000000\.(txt|TXT): two label files share the id '000000'"):
        dm.setup("fit")
