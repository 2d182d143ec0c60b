"""Bad input to the medical readers (audit s33): JPEGs cut short, non-ASCII file names, NIfTI volumes whose third
voxel axis is not head-foot, bad LIDC PNG files found at setup, ``.PNG`` reader masks, EXIF orientation."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from domains.medical.data import (
    LIDCPngDataset,
    MedicalDataError,
    MedicalDataWarning,
    build_predict_dataset,
)
from domains.medical.predict import output_folder_name
from tests.helpers import write_lidc

pytestmark = pytest.mark.usefixtures("one_thread")


def _jpeg(image: np.ndarray, cut: bool = False) -> bytes:
    """``image`` encoded as a JPEG, cut to half its bytes with ``cut`` (OpenCV decodes that, its lower half grey)."""
    _, data = cv2.imencode(".jpg", image)
    return data.tobytes()[: len(data) // 2] if cut else data.tobytes()


def _noise(h: int = 32, w: int = 32) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (h, w), np.uint8)


# ------------------------------------------------------------------------------------ JPEGs cut short


def test_predict_skips_a_cut_short_jpeg_and_names_it(tmp_path):
    """It was predicted on its grey-filled lower half, said nowhere but in libjpeg's stderr line."""
    assert cv2.imwrite(str(tmp_path / "ok.png"), _noise())
    (tmp_path / "cut.jpg").write_bytes(_jpeg(_noise(), cut=True))
    assert cv2.imread(str(tmp_path / "cut.jpg"), cv2.IMREAD_UNCHANGED).shape == (32, 32)  # OpenCV: grey-filled
    with pytest.warns(MedicalDataWarning, match=rf"1 of 2 files are not predicted, unreadable: {tmp_path}/cut\.jpg: "):
        dataset = build_predict_dataset(tmp_path, crop_size=32)
    assert dataset.ids == ["ok"]


def test_lidc_refuses_a_cut_short_jpeg_saved_under_a_png_name(tmp_path):
    root = write_lidc(tmp_path)
    image = root / "train" / "images" / "P1" / "s1.png"
    dataset = LIDCPngDataset(root, "train", crop_size=32)
    image.write_bytes(_jpeg(_noise(), cut=True))
    with pytest.raises(MedicalDataError, match=rf"{image}: cannot decode image \("):
        dataset.load(1)  # read by its content, not its name: a file changed since setup
    with pytest.raises(MedicalDataError, match=rf"1 of 2 images .*{image}: cannot decode image \("):
        LIDCPngDataset(root, "train", crop_size=32)  # at setup
    image.write_bytes(_jpeg(np.full((32, 32), 40, np.uint8)))  # a whole JPEG under a .png name reads
    assert LIDCPngDataset(root, "train", crop_size=32).load(1)["image"].mean() == pytest.approx(40 / 255, abs=0.01)


# ------------------------------------------------------------------------------------ non-ASCII names


def test_predict_keeps_letters_of_any_script_in_output_names(tmp_path):
    """Every character outside A-Z a-z 0-9 became '_': two Chinese names made one output folder '__' (an error,
    nothing predicted), and 'Schädel 1' became 'Sch_del_1'."""
    names = ["肺部", "肝脏", "Schädel 1", unicodedata.normalize("NFD", "Knöchel")]  # the last as a Mac names it
    for name in names:
        assert cv2.imwrite(str(tmp_path / "x.png"), _noise())
        (tmp_path / "x.png").rename(tmp_path / f"{name}.png")
    dataset = build_predict_dataset(tmp_path, crop_size=32)
    assert sorted(output_folder_name(i) for i in dataset.ids) == sorted(["肺部", "肝脏", "Schädel_1", "Knöchel"])
    assert output_folder_name("a/b:c*d?e\x00f") == "a/b_c_d_e_f"  # separators kept, unsafe characters replaced
    assert output_folder_name("肺部 1") == output_folder_name("肺部_1") == "肺部_1"  # the collision check still applies


# ------------------------------------------------------------------------------ LIDC PNG: bad files at setup


def _rgb(path: Path) -> None:
    grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    assert cv2.imwrite(str(path), np.dstack([grey, grey // 2, grey // 3]))


BAD_FILES = {
    "zero-byte image": ("images/P1/s1.png", lambda p: p.write_bytes(b""), "cannot decode the image"),
    "text as png": ("images/P1/s1.png", lambda p: p.write_text("not an image\n"), "cannot decode the image"),
    "truncated png": ("images/P1/s1.png", lambda p: p.write_bytes(p.read_bytes()[:60]), "cannot decode the image"),
    "truncated mask": ("gt/P1/s1_l2.png", lambda p: p.write_bytes(p.read_bytes()[:60]), "cannot decode the image"),
    "rgb image": ("images/P1/s1.png", _rgb, "expected a grayscale PNG, got 3 differing channels"),
    "mask of another size": (
        "gt/P1/s1_l2.png",
        lambda p: cv2.imwrite(str(p), np.zeros((30, 32), np.uint8)),
        "mask is 32x30 but image .*s1.png is 32x32",
    ),
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_lidc_bad_files_stop_the_run_at_setup_naming_them(tmp_path, kind):
    """They were found only when training reached them (the listing checked names alone)."""
    where, spoil, message = BAD_FILES[kind]
    root = write_lidc(tmp_path, n=3)
    spoil(root / "train" / where)
    with pytest.raises(MedicalDataError, match=rf"1 of 3 images .*{root / 'train' / where}: {message}"):
        LIDCPngDataset(root, "train", crop_size=32)


# ------------------------------------------------------------------------------ LIDC PNG: .PNG masks


def test_lidc_reader_masks_may_be_named_png_in_upper_case_as_images_may(tmp_path):
    root = write_lidc(tmp_path)
    images, gt = root / "train" / "images" / "P1", root / "train" / "gt" / "P1"
    (images / "s0.png").rename(images / "s0.PNG")
    for r in range(4):
        (gt / f"s0_l{r}.png").rename(gt / f"s0_l{r}.PNG")
    assert cv2.imwrite(str(gt / "s0_l4.PNG"), np.zeros((32, 32), np.uint8))  # a fifth reader: not read, said
    with pytest.warns(MedicalDataWarning, match=r"1 reader mask\(s\) past _l3\.png are not read \(e\.g\. P1/s0_l4"):
        dataset = LIDCPngDataset(root, "train", crop_size=32)
    assert [p.name for p in dataset.mask_paths[0]] == [f"s0_l{r}.PNG" for r in range(4)]
    assert dataset[0]["masks"].shape == (4, 32, 32)
    (gt / "s0_l4.PNG").unlink()
    assert cv2.imwrite(str(gt / "s0_l1.png"), np.zeros((32, 32), np.uint8))  # one reader twice
    with pytest.raises(MedicalDataError, match=r"s0_l1\.PNG and .*s0_l1\.png: one reader mask twice"):
        LIDCPngDataset(root, "train", crop_size=32)


# ------------------------------------------------------------------------------ EXIF orientation


def test_predict_reads_a_photo_upright_as_the_driving_tasks_do(tmp_path):
    """A JPEG's EXIF orientation was ignored: a phone photo held upright was predicted lying on its side."""
    stored = np.zeros((20, 40), np.uint8)
    stored[:5, :10] = 255  # top-left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise
    Image.fromarray(stored).save(tmp_path / "photo.jpg", exif=exif, quality=100)
    image = build_predict_dataset(tmp_path, crop_size=32).load(0)["image"]
    assert image.shape == (40, 20)  # upright
    assert image[:10, -5:].mean() > 0.9 and image[:10, :5].mean() < 0.1  # the block is at the top right
    assert LIDCPngDataset.read_image(tmp_path / "photo.jpg").shape == (20, 40)  # a labelled item: as stored
