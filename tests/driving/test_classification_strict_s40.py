"""``--data.strict`` reaches the KITTI reader of the road-object crops: a bad label line raises naming its
file and line, also when crops cut without strict from the same folder would be reused; without strict it is
dropped, counted in one warning, and the crops are cut."""

from __future__ import annotations

import re
import warnings

import pytest

from domains.driving.classification.data import DrivingClassificationData, write_kitti_crops
from domains.driving.formats import LabelFormatError, LabelWarning
from tests.driving.layouts import write_kitti

pytestmark = pytest.mark.usefixtures("one_thread")
CLASSES = ["Car", "Van"]
INVERTED = "Car 0.00 0 -1.57 10.00 10.00 5.00 5.00 1.50 1.60 3.90 1.00 1.70 20.00 -1.50\n"


@pytest.fixture
def odd_kitti(tmp_path):
    """Four 64x48 frames (one 25 px Car each), the second label file ending in an inverted box (line 4)."""
    root = write_kitti(tmp_path / "odd", n=4, semantic=False)
    label = root / "training/label_2/000001.txt"
    label.write_text(label.read_text() + INVERTED)
    return label


def _bad_line(label) -> str:
    return rf"{re.escape(str(label))}:4: .*\[bad_box; strict mode\]"


def _cut(label, out, strict):
    return write_kitti_crops(label.parents[2], out, CLASSES, crop_size=16, min_height=20, strict=strict)


def test_strict_raises_naming_the_file_and_line_and_lenient_warns_and_cuts(odd_kitti, tmp_path):
    with pytest.raises(LabelFormatError, match=_bad_line(odd_kitti)):
        _cut(odd_kitti, tmp_path / "strict_crops", strict=True)
    assert not (tmp_path / "strict_crops/.complete").exists()
    with pytest.warns(LabelWarning, match=r"dropped bad_box: 1 "):
        out = _cut(odd_kitti, tmp_path / "crops", strict=False)
    assert (out / ".complete").is_file() and len(list(out.glob("*/Car/*.png"))) == 4


def test_a_strict_run_does_not_reuse_crops_a_lenient_run_cut_from_the_same_folder(odd_kitti, tmp_path):
    out = tmp_path / "crops"
    with pytest.warns(LabelWarning):
        _cut(odd_kitti, out, strict=False)
    with pytest.raises(LabelFormatError, match=_bad_line(odd_kitti)):
        _cut(odd_kitti, out, strict=True)
    # a clean source is reused by a strict run: strict is no crop setting, the crops are the same either way
    odd_kitti.write_text("".join(odd_kitti.read_text().splitlines(keepends=True)[:3]))
    with warnings.catch_warnings():
        warnings.simplefilter("error", LabelWarning)
        _cut(odd_kitti, out, strict=False)
        stamp = (out / ".complete").stat().st_mtime_ns
        assert _cut(odd_kitti, out, strict=True) == out and (out / ".complete").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("lenient_first", [False, True])
def test_the_data_module_passes_strict_to_the_kitti_reader(odd_kitti, tmp_path, lenient_first):
    def data(strict):
        return DrivingClassificationData(
            data_path=str(odd_kitti.parents[2]),
            class_names=CLASSES,
            crop_min_height=20,
            crop_size=16,
            strict=strict,
            crops_dir=str(tmp_path / "crops"),
            num_workers=0,
        )

    if lenient_first:
        with pytest.warns(LabelWarning, match="bad_box"):
            data(strict=False).prepare_data()
    with pytest.raises(LabelFormatError, match=_bad_line(odd_kitti)):
        data(strict=True).prepare_data()
