"""LIDC crops laid out as the DeepMind release: bad reader masks found at setup, all counted in one message.

A blurred mask stopped a fit at the step that read it (hours into a run on the real set, no checkpoint), and a
missing mask was said one per run with a hint (fewer readers) that drops a reader from every image."""

from __future__ import annotations

import pickle
import warnings

import cv2
import numpy as np
import pytest

from domains.medical import data as D
from domains.medical.data import LIDCPickleDataset, LIDCPngDataset, MedicalDataError, MedicalDataModule
from tests.helpers import write_lidc

SIZE = 32


def _disk() -> np.ndarray:
    """A reader's mask as the release stores it: 0 and 255."""
    mask = np.zeros((SIZE, SIZE), np.uint8)
    cv2.circle(mask, (16, 16), 6, 255, -1)
    return mask


def _blur(path) -> None:
    """Overwrite the mask at ``path`` with a blurred copy (soft edges: many grey values)."""
    assert cv2.imwrite(str(path), cv2.GaussianBlur(_disk(), (7, 7), 2))


def test_soft_png_masks_are_all_named_at_setup(tmp_path):
    root = write_lidc(tmp_path, n=4, masks=[_disk()] * 4)
    gt = root / "train" / "gt" / "P1"
    soft = [gt / "s0_l2.png", gt / "s1_l0.png", gt / "s1_l3.png", gt / "s2_l1.png", gt / "s3_l0.png"]
    for path in soft:
        _blur(path)
    with pytest.raises(MedicalDataError) as err:
        LIDCPngDataset(root, "train", crop_size=SIZE)  # no item loaded: found at construction
    message = str(err.value)
    assert message.startswith(f"{gt.parent}: 5 of 16 reader masks are not binary")
    for path in soft[:3]:
        assert f"{path}: mask is not binary: values {{0, " in message
    assert str(soft[3]) not in message and message.endswith("; ... 2 more")
    for path in soft:
        assert cv2.imwrite(str(path), _disk())
    assert LIDCPngDataset(root, "train", crop_size=SIZE).load(0)["masks"].sum() == 4 * (_disk() > 0).sum()


def test_fit_setup_stops_on_a_soft_mask(tmp_path):
    """The datamodule's setup (before Lightning's first step) is where the run stops."""
    root = write_lidc(tmp_path, masks=[_disk()] * 4)
    write_lidc(tmp_path, masks=[_disk()] * 4, split="val")
    _blur(root / "train" / "gt" / "P1" / "s1_l2.png")
    dm = MedicalDataModule(data_path=str(root), crop_size=SIZE, batch_size=2, num_workers=0)
    with pytest.raises(MedicalDataError, match=r"1 of 8 reader masks are not binary.*s1_l2\.png: mask is"):
        dm.setup("fit")


def test_soft_and_unreadable_masks_in_one_message(tmp_path):
    root = write_lidc(tmp_path, masks=[_disk()] * 4)
    gt = root / "train" / "gt" / "P1"
    (gt / "s0_l1.png").write_bytes(b"not a png")
    _blur(gt / "s1_l1.png")
    with pytest.raises(MedicalDataError) as err:
        LIDCPngDataset(root, "train", crop_size=SIZE)
    message = str(err.value)
    assert "1 of 2 images (or their reader masks) cannot be read: " in message and "s0_l1.png" in message
    assert "; and 1 of 8 reader masks are not binary" in message
    assert "s1_l1.png: mask is not binary" in message


def test_soft_pickle_masks_are_all_named_at_construction(tmp_path):
    D._PICKLE_CACHE.clear()
    empty = [np.zeros((8, 8), np.uint8)] * 3
    image = np.zeros((8, 8), np.float32)
    entries = {f"k{i}": {"image": image, "masks": empty, "series_uid": "s"} for i in range(4)}
    entries["k1"]["masks"] = [np.zeros((8, 8)), np.linspace(0, 1, 64).reshape(8, 8), np.zeros((8, 8))]
    entries["k3"]["masks"] = [np.full((8, 8), -1.0), np.zeros((8, 8)), np.eye(8) * 255]
    path = tmp_path / "soft.pickle"
    path.write_bytes(pickle.dumps(entries))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the unpickling warning
        with pytest.raises(MedicalDataError) as err:
            LIDCPickleDataset(path, "all", crop_size=None)
    message = str(err.value)
    assert message.startswith(f"{path} [key 'k1'] mask 1: mask is not binary: values {{0.0, ")
    assert "; [key 'k3'] mask 0: mask is not binary: values {-1.0}" in message
    assert "[key 'k3'] mask 2" not in message  # 0 and 255: binary
    assert "; 2 of the 12 reader masks are not binary" in message


def test_binary_per_mask_of_a_stack():
    """One pass over a slice's readers stacked gives each reader's answer, as ``np.unique`` would."""
    empty, binary, two_values = [[0, 0], [0, 0]], [[0, 7], [7, 0]], [[0, 3], [5, 0]]
    masks = np.array([empty, binary, two_values, [[-1, 0], [0, 0]], [[-2, -2], [-2, -2]]])
    assert D._binary(masks).tolist() == [True, True, False, False, False]
    assert D._binary(masks.astype(bool)).tolist() == [True, True, True, True, True]


def test_missing_masks_all_counted_across_splits_with_a_restore_hint(tmp_path):
    root = write_lidc(tmp_path, n=3)
    write_lidc(tmp_path, split="val")
    gone = ["train/gt/P1/s0_l3.png", "train/gt/P1/s2_l0.png", "val/gt/P1/s1_l1.png"]
    for name in gone:
        (root / name).unlink()
    for split in ("train", "val"):  # either split's setup says all three
        with pytest.raises(FileNotFoundError) as err:
            LIDCPngDataset(root, split, crop_size=SIZE)
        message = str(err.value)
        assert message.startswith(f"{root}: 3 reader mask(s) missing (expected 4 readers per image")
        assert f"train/ 2 in 2 of its 3 images ({gone[0]}; {gone[1]}); " in message
        assert f"; val/ 1 in 1 of its 2 images ({gone[2]}); " in message
        assert "restore them from the release" in message and "num_readers" not in message
    for name in gone:  # what the hint offers for a reader who marked nothing: an all-zero mask
        assert cv2.imwrite(str(root / name), np.zeros((SIZE, SIZE), np.uint8))
    assert len(LIDCPngDataset(root, "train", crop_size=SIZE)) == 3


def test_the_same_last_reader_missing_everywhere_suggests_fewer_readers(tmp_path):
    root = write_lidc(tmp_path)
    for i in range(2):
        (root / "train" / "gt" / "P1" / f"s{i}_l3.png").unlink()
    with pytest.raises(FileNotFoundError) as err:
        LIDCPngDataset(root, "train", crop_size=SIZE)
    message = str(err.value)
    assert "train/ 2 in 2 of its 2 images" in message and "restore" not in message
    assert message.endswith(
        "every image of train/ has readers _l0 .. _l2 only: to read 3 readers per image give "
        "--data.dataset_kwargs '{num_readers: N}' with N = 3"
    )
    # one image lacking a different reader: a damaged copy, not fewer readers
    (root / "train" / "gt" / "P1" / "s1_l1.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"3 reader mask\(s\) missing.*restore them from the release"):
        LIDCPngDataset(root, "train", crop_size=SIZE)
