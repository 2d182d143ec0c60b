"""Colour images in predict, settings-keyed synthetic folders, NIfTI volumes stored with permuted axes."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from domains.medical import synthetic as S
from domains.medical.data import (
    DecathlonSliceDataset,
    LIDCPngDataset,
    MedicalDataError,
    MedicalDataModule,
    MedicalDataWarning,
    build_predict_dataset,
)
from domains.medical.predict import MedicalPredictionWriter
from tests.medical.test_data_splits_predict import _echo_task, _predict

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------ colour images in predict


def _images(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """A grey PNG, the same grey as an RGB JPEG (equal channels) and a truly coloured PNG (BGR as stored)."""
    folder.mkdir(parents=True)
    grey = (np.random.default_rng(0).random((20, 24)) * 255).astype(np.uint8)
    colour = np.dstack([grey, grey // 2, 255 - grey])
    assert cv2.imwrite(str(folder / "grey.png"), grey)
    assert cv2.imwrite(str(folder / "export.jpg"), np.dstack([grey, grey, grey]))
    assert cv2.imwrite(str(folder / "screenshot.png"), colour)
    return grey, colour


def test_predict_reads_a_colour_image_as_its_luminance_naming_it_and_grey_as_rgb_as_grey(tmp_path):
    """A colour PNG / JPEG was left out ("unreadable: expected a grayscale PNG") and not predicted."""
    grey, colour = _images(tmp_path / "scans")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = build_predict_dataset(tmp_path / "scans", crop_size=32)
    said = [str(w.message) for w in caught if issubclass(w.category, MedicalDataWarning)]
    scans = tmp_path / "scans"
    assert said == [
        (
            f"--data.predict_path {scans}: 1 of 3 images are in colour and are read as their luminance "
            f"(0.299 R + 0.587 G + 0.114 B; the models learnt grey scans): {scans / 'screenshot.png'}"
        )
    ]
    items = {dataset.ids[i]: dataset.load(i)["image"] for i in range(len(dataset))}
    assert sorted(items) == ["export", "grey", "screenshot"]
    np.testing.assert_array_equal(items["grey"], grey / np.float32(255))
    export = cv2.imread(str(tmp_path / "scans" / "export.jpg"), cv2.IMREAD_UNCHANGED)  # JPEG: near the grey
    assert export.shape == (20, 24, 3) and (export == export[..., :1]).all()  # three equal channels
    np.testing.assert_array_equal(items["export"], export[..., 0] / np.float32(255))  # one channel, no note
    # the demo's upload reads it so too (apps.uploads: cv2 BGR -> grey)
    rgb = colour[..., ::-1].astype(float)
    luminance = np.round(0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2])
    assert np.abs(items["screenshot"] * 255 - luminance).max() <= 1
    # labelled data keep their rule: a colour LIDC image is refused
    with pytest.raises(MedicalDataError, match="screenshot.png: expected a grayscale PNG, got 3 differing"):
        LIDCPngDataset.read_image(tmp_path / "scans" / "screenshot.png")


def test_predict_on_a_folder_with_a_colour_image_writes_its_outputs(tmp_path):
    _images(tmp_path / "scans")
    module = MedicalDataModule(predict_path=str(tmp_path / "scans"), crop_size=16, num_workers=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _predict(_echo_task(tmp_path / "out", []), module)
    for name in ("grey", "export", "screenshot"):
        mean = cv2.imread(str(tmp_path / "out" / name / "mean_prob.png"), cv2.IMREAD_UNCHANGED)
        assert mean is not None and mean.shape == (20, 24), name


# ------------------------------------------------------------------------------ synthetic folders


def test_the_synthetic_folder_is_named_after_the_settings_that_differ_from_the_preset():
    assert S.default_root() == S.DEFAULT_ROOT == "data/medical/synthetic_lidc"
    assert S.default_root(size=128, splits=[0.7, 0.15, 0.15]) == S.DEFAULT_ROOT  # the defaults, given
    assert S.default_root(readers="lidc") == "data/medical/synthetic_lidc_lidc_readers"
    lidc = S.default_root(readers="lidc", reader_shares=S.LIDC_READER_SHARES)  # the preset's own shares
    assert lidc == "data/medical/synthetic_lidc_lidc_readers"
    assert S.default_root(size=64, n_patients=12) == f"{S.DEFAULT_ROOT}_n_patients-12_size-64"
    assert S.default_root(splits=(0.8, 0.1, 0.1)) == f"{S.DEFAULT_ROOT}_splits-0.8-0.1-0.1"
    assert S.default_root(readers="lidc", reader_shares=[0.25] * 4) == (
        f"{S.DEFAULT_ROOT}_lidc_readers_reader_shares-0.25-0.25-0.25-0.25"
    )


def test_synthetic_sets_of_other_settings_never_overwrite_one_another(tmp_path, monkeypatch):
    """``--data.synthetic '{size: 48}'`` regenerated the set in data/medical/synthetic_lidc, the one another
    run (or the demo) reads."""
    monkeypatch.chdir(tmp_path)
    small = {"n_patients": 3, "images_per_patient": 1, "size": 32}
    first = MedicalDataModule(synthetic=small, num_workers=0)._path()
    marker = (first / S.MARKER).read_text()
    second = MedicalDataModule(synthetic={**small, "size": 48}, num_workers=0)._path()
    assert first == Path("data/medical/synthetic_lidc_n_patients-3_images_per_patient-1_size-32")
    assert second == Path("data/medical/synthetic_lidc_n_patients-3_images_per_patient-1_size-48")
    assert (first / S.MARKER).read_text() == marker and S.is_complete(first, **small)
    image = next((second / "train" / "images").rglob("*.png"))
    assert cv2.imread(str(image), cv2.IMREAD_UNCHANGED).shape == (48, 48)
    assert not Path(S.DEFAULT_ROOT).exists()
    # the generator's command line names its folder the same way
    S.main(["--n-patients", "2", "--images-per-patient", "1", "--size", "32", "--splits", "1", "0", "0"])
    assert S.is_complete(
        "data/medical/synthetic_lidc_n_patients-2_images_per_patient-1_size-32_splits-1.0-0.0-0.0",
        n_patients=2, images_per_patient=1, size=32, splits=(1.0, 0.0, 0.0),
    )  # fmt: skip


# ------------------------------------------------------------------------------ NIfTI with permuted axes

#: 1 x 1 mm in-plane, 2.5 mm slices, an origin off zero: voxel axes R, A, S
CANONICAL = np.array([[1.0, 0, 0, -8.0], [0, 1.0, 0, 5.0], [0, 0, 2.5, 30.0], [0, 0, 0, 1]])
#: the same grid stored (z, y, x): voxel axis 0 runs head-foot, axis 2 left-right
PERMUTED = CANONICAL[:, [2, 1, 0, 3]]


def _twins(tmp_path: Path) -> dict[str, Path]:
    """One Decathlon case stored canonically and its twin stored (z, y, x) with the affine saying so."""
    shape = (16, 12, 5)  # X, Y, Z: 16 x 12 mm, no resize at crop 16 (a label comes back exactly)
    image = np.random.default_rng(0).normal(100, 40, shape).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    label[3:9, 2:7, 1:4] = 1
    label[10:14, 8:11, 2] = 1
    roots = {}
    for name, affine, order in (("canonical", CANONICAL, (0, 1, 2)), ("permuted", PERMUTED, (2, 1, 0))):
        root = tmp_path / name
        for folder, data in (("imagesTr", image), ("labelsTr", label)):
            (root / folder).mkdir(parents=True)
            nib.save(nib.Nifti1Image(np.transpose(data, order), affine), str(root / folder / "case.nii.gz"))
        training = [{"image": "./imagesTr/case.nii.gz", "label": "./labelsTr/case.nii.gz"}]
        meta = {"training": training, "labels": {"0": "bg", "1": "x"}}
        (root / "dataset.json").write_text(json.dumps(meta))
        roots[name] = root
    return roots


def _slices(dataset) -> dict[str, dict]:
    return {dataset.ids[i]: dataset.load(i) for i in range(len(dataset))}


def test_a_volume_stored_with_permuted_axes_gives_the_slices_of_its_canonical_twin(tmp_path):
    """It was cut along its third voxel axis (left-right: 16 sagittal slices), not into its 5 axial ones."""
    roots = _twins(tmp_path)
    labelled = {k: DecathlonSliceDataset(r, "all", crop_size=16, all_slices=True) for k, r in roots.items()}
    unlabelled = {k: build_predict_dataset(r / "imagesTr", crop_size=16) for k, r in roots.items()}
    for read in (labelled, unlabelled):  # the fit reader and the predict reader
        canonical, permuted = _slices(read["canonical"]), _slices(read["permuted"])
        assert list(permuted) == list(canonical) and len(canonical) == 5
        for key, item in canonical.items():
            np.testing.assert_array_equal(permuted[key]["image"], item["image"], err_msg=key)
            np.testing.assert_array_equal(permuted[key]["masks"], item["masks"], err_msg=key)
            np.testing.assert_array_equal(permuted[key]["source"]["affine"], CANONICAL)
            assert permuted[key]["source"]["spatial_shape"].tolist() == [16, 12, 5]
    assert labelled["permuted"].stats == labelled["canonical"].stats
    assert _slices(labelled["canonical"])["case/z002"]["masks"][0].sum() == 6 * 5 + 4 * 3


def test_predictions_of_a_permuted_volume_are_written_back_on_its_own_grid(tmp_path):
    """Per slice on the axial grid, in its place; the whole volume in the file's voxel order and affine."""
    root = _twins(tmp_path)["permuted"]
    dataset = DecathlonSliceDataset(root, "all", crop_size=16, all_slices=True)
    writer = MedicalPredictionWriter(str(tmp_path / "out"))
    for i in range(len(dataset)):
        item = dataset[i]
        mask = item["masks"][0]  # a perfect prediction: the label
        prediction = {
            "id": [item["id"]], "samples": mask[None, None].bool(), "mean": mask[None].float(),
            "uncertainty": torch.zeros(1, 16, 16), "source": default_collate([item])["source"],
        }  # fmt: skip
        writer.write_on_batch_end(None, None, prediction, None, None, 0, 0)
    stored = nib.load(str(root / "labelsTr" / "case.nii.gz"))
    whole = nib.load(str(tmp_path / "out" / "case" / "samples.nii.gz"))
    assert whole.shape == (5, 12, 16, 1)
    np.testing.assert_array_equal(np.asarray(whole.dataobj)[..., 0], np.asarray(stored.dataobj))
    np.testing.assert_allclose(whole.affine, PERMUTED)
    one = nib.load(str(tmp_path / "out" / "case" / "z002" / "mean_prob.nii.gz"))
    assert one.shape == (16, 12, 1)
    np.testing.assert_allclose(one.affine[:3, 3], CANONICAL[:3, :3] @ [0, 0, 2] + CANONICAL[:3, 3])
    np.testing.assert_array_equal(one.get_fdata()[:, :, 0], np.asarray(stored.dataobj)[2].T)  # (x, y)
