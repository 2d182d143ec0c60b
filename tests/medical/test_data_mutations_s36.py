"""Lines a mutation audit (s36) found no test noticing: where predict puts a NIfTI slice's voxels back, how
its PNGs scale and round, which files a second run into a folder removes, the LIDC centre crop's start and
the split fractions' tolerance. Each test's values are derived by hand (or by MONAI, whose transforms the
data pipeline uses)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import CenterSpatialCrop, ResizeWithPadOrCrop
from PIL import Image

from domains.medical.data import LIDCPngDataset
from domains.medical.predict import MedicalPredictionWriter, _to_uint8, slice_to_source_grid
from shared.data import group_split
from tests.helpers import write_lidc
from tests.medical.test_predict_outputs import _files

pytestmark = pytest.mark.usefixtures("one_thread")


def _variance_prediction(num_samples: int, variance: float) -> dict:
    """A ``predict_step`` output of one 4x4 image ``P1/s1`` whose sample variance is ``variance`` everywhere."""
    return {
        "id": ["P1/s1"],
        "samples": torch.zeros(1, num_samples, 4, 4, dtype=torch.bool),
        "mean": torch.full((1, 4, 4), 0.5),
        "uncertainty": torch.full((1, 4, 4), variance),
    }


# ------------------------------------------------------------------------------------ predict: NIfTI voxels


def test_a_slice_padded_by_an_odd_margin_goes_back_onto_its_own_voxels():
    """MONAI pads 5 -> 8 with 1 before and 2 after (``margin // 2`` first); reading the plane back from 2 put
    every NIfTI prediction one voxel off along that axis (X and Y both odd margins here)."""
    x, y = np.meshgrid(np.arange(5), np.arange(7), indexing="ij")
    plane = torch.as_tensor(10.0 * (x + 1) + (y + 1))[None]  # (1, X=5, Y=7): 11 .. 57, none 0 as the padding
    padded = torch.as_tensor(ResizeWithPadOrCrop((8, 8))(plane))  # as the datamodule pads the (X, Y) plane
    assert padded[0, :, 0].tolist() == [0, 11, 21, 31, 41, 51, 0, 0]  # MONAI's split of the odd margin
    back = slice_to_source_grid(padded.transpose(-1, -2), (5, 7), (5, 7))  # the model's (Y, X) maps
    assert back.tolist() == plane.tolist()


# ------------------------------------------------------------------------------------ predict: PNG values


def test_png_values_are_rounded_not_truncated():
    """A mean probability of 0.999 is 254.7: written 255, not 254; 0.5 is 127.5, written 128 (to even)."""
    assert _to_uint8(torch.tensor([0.999, 0.5, 0.0019]), 255.0).tolist() == [255, 128, 0]


def test_variance_uncertainty_png_spans_the_whole_range(tmp_path):
    """The variance of probabilities in [0, 1] is at most 0.25: uncertainty.png maps 0.25 to 255 (it was a
    quarter of the range, 64, with a scale of 255) and 0.125 to 127.5 -> 128."""
    for variance, value in ((0.25, 255), (0.125, 128)):
        writer = MedicalPredictionWriter(str(tmp_path / str(variance)), uncertainty="variance")
        writer.write_on_batch_end(None, None, _variance_prediction(2, variance), None, None, 0, 0)
        png = np.asarray(Image.open(tmp_path / str(variance) / "P1" / "s1" / "uncertainty.png"))
        assert png.tolist() == [[value] * 4] * 4, variance


# ------------------------------------------------------------------------------------ predict: stale files


def test_the_writer_alone_removes_an_earlier_runs_extra_samples(tmp_path):
    """Without the CLI's PredictionSet (the writer as a plain callback): 4 samples then 2 into one folder left
    sample_02.png and sample_03.png beside the new ones. Files the writer does not make stay."""
    MedicalPredictionWriter(str(tmp_path)).write_on_batch_end(None, None, _variance_prediction(4, 0.0), None, None, 0, 0)
    folder = tmp_path / "P1" / "s1"
    (folder / "sample_notes.png").write_bytes(b"mine")
    MedicalPredictionWriter(str(tmp_path)).write_on_batch_end(None, None, _variance_prediction(2, 0.0), None, None, 0, 0)
    assert _files(folder) == ["mean_prob.png", "sample_00.png", "sample_01.png", "sample_notes.png", "uncertainty.png"]


# ------------------------------------------------------------------------------------ data: LIDC crop


def test_a_lidc_crop_with_an_odd_margin_starts_where_monai_centre_crop_does(tmp_path):
    """129 x 131 px cropped to 128: the 1 px spare row is dropped at the bottom (start row 0) and of the 3
    spare columns 1 goes on the left, as MONAI's CenterSpatialCrop (``size // 2 - crop // 2``)."""
    rows = np.repeat(np.arange(129, dtype=np.uint8)[:, None], 131, axis=1)  # pixel value = its row
    mask = np.zeros((129, 131), np.uint8)
    mask[0, 1] = 255  # the crop's top-left pixel
    root = write_lidc(tmp_path, image=rows, masks=[mask] * 4, names=["s0"])
    item = LIDCPngDataset(root, "train", crop_size=128).load(0)
    assert np.round(item["image"][:, 0] * 255).tolist() == list(range(128))  # rows 0 .. 127
    assert item["masks"][:, 0, 0].tolist() == [1, 1, 1, 1] and item["masks"].sum() == 4
    monai = np.asarray(CenterSpatialCrop((128, 128))(rows[None].astype(np.float32) / 255.0))[0]
    assert np.array_equal(item["image"], monai)


# ------------------------------------------------------------------------------------ shared: split fractions


def test_split_fractions_that_sum_to_095_are_refused_naming_them():
    """(0.7, 0.15, 0.1) leaves 5 % of the groups in no split: refused, not read as close enough to 1; a sum
    off by float rounding only (0.7 + 0.2 + 0.1 = 0.9999999999999999) is accepted."""
    groups = list("abcdefghij")
    with pytest.raises(ValueError, match=r"sum to 1, got \[0\.7, 0\.15, 0\.1\]"):
        group_split(groups, (0.7, 0.15, 0.1), verbose=False)
    with pytest.raises(ValueError, match=r"got \[0\.7, 0\.15, 0\.149\]"):
        group_split(groups, (0.7, 0.15, 0.149), verbose=False)
    split = group_split(groups, (0.7, 0.2, 0.1), verbose=False)
    assert [len(split[name]) for name in ("train", "val", "test")] == [7, 2, 1]
