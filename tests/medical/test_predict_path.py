"""``--data.predict_path``: predict on unlabelled NIfTI volumes or 2-D images, read as the labelled sets are."""

from __future__ import annotations

import gzip
import json
import warnings
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest

from domains.medical.data import MedicalDataError, MedicalDataModule
from tests.medical.test_data_splits_predict import _echo_task, _predict

pytestmark = pytest.mark.usefixtures("one_thread")

#: anisotropic voxels (the resize keeps the physical aspect) and an origin off zero
AFFINE = np.array([[0.7, 0, 0, -12.0], [0, 1.4, 0, 4.0], [0, 0, 3.0, 20.0], [0, 0, 0, 1]])


def _volume(path: Path, seed: int, shape=(18, 9, 4, 2), label=None) -> None:
    """A 2-channel CT-like volume (random intensities, so percentiles and the channel matter), scanner codes."""
    image = nib.Nifti1Image(np.random.default_rng(seed).normal(100, 40, shape).astype(np.float32), AFFINE)
    image.set_qform(AFFINE, 1)
    image.set_sform(AFFINE, 1)
    image.header.set_xyzt_units("mm", "sec")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))
    if label is not None:
        mask = np.zeros(shape[:3], np.uint8)
        mask[4:9, 2:6, 1:3] = 1
        label.parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(mask, AFFINE), str(label))


def _msd(root: Path, n_cases: int = 2, test: int = 1) -> Path:
    training = []
    for c in range(n_cases):
        name = f"case_{c}.nii.gz"
        _volume(root / "imagesTr" / name, c, label=root / "labelsTr" / name)
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    for t in range(test):
        _volume(root / "imagesTs" / f"new_{t}.nii.gz", 100 + t)
    meta = {"training": training, "test": [f"./imagesTs/new_{t}.nii.gz" for t in range(test)], "labels": {"0": "bg", "1": "x"}}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def _files(folder: Path) -> dict[str, bytes | np.ndarray]:
    """Every output below ``folder``: PNG bytes, NIfTI data."""
    out: dict = {}
    for path in sorted(folder.rglob("*")):
        if path.name.endswith(".nii.gz"):
            out[str(path.relative_to(folder))] = np.asarray(nib.load(str(path)).dataobj)
        elif path.suffix == ".png":
            out[str(path.relative_to(folder))] = path.read_bytes()
    return out


def _module(**kw) -> MedicalDataModule:
    return MedicalDataModule(crop_size=16, batch_size=3, num_workers=0, **kw)


def test_a_nifti_folder_predicts_as_the_labelled_set_does_and_keeps_each_volume_s_geometry(tmp_path):
    """Predict read only the test split of labelled data; now a folder of unlabelled volumes gives the files the
    labelled path gives for the same volumes (channel, percentiles, resize), on each image's grid and affine."""
    root = _msd(tmp_path / "msd")
    kw = {"modality_index": 1, "percentiles": [5, 95]}
    labelled = _module(data_format="decathlon", data_path=str(root), dataset_kwargs={**kw, "fractions": [0, 0, 1]})
    _predict(_echo_task(tmp_path / "labelled", []), labelled)
    # data_path is not needed (nor read) to predict one's own volumes
    own = _module(data_format="decathlon", predict_path=str(root / "imagesTr"), dataset_kwargs=kw)
    _predict(_echo_task(tmp_path / "own", []), own)
    expected, got = _files(tmp_path / "labelled"), _files(tmp_path / "own")
    assert len(expected) > 20 and expected.keys() == got.keys()
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    assert (tmp_path / "own" / "case_1" / "z003" / "mean_prob.png").is_file()  # every slice
    source = nib.load(str(root / "imagesTr" / "case_1.nii.gz"))
    for name in ("mean_prob", "uncertainty", "samples"):
        written = nib.load(str(tmp_path / "own" / "case_1" / f"{name}.nii.gz"))
        assert written.shape[:3] == source.shape[:3]
        np.testing.assert_allclose(written.affine, AFFINE)


def test_predicted_nifti_headers_keep_the_source_s_codes_and_units(tmp_path):
    """nibabel's defaults (sform "aligned", no qform, unknown units) replaced the scanner's. Two volumes with
    codes of their own each ((1, 2): scanner and aligned; (0, 1): no qform), so a swap or a lost one shows."""
    _volume(tmp_path / "in" / "scan.nii.gz", 0)
    _volume(tmp_path / "in" / "other.nii.gz", 1)
    for name, (qform, sform) in (("scan", (1, 2)), ("other", (0, 1))):
        image = nib.load(str(tmp_path / "in" / f"{name}.nii.gz"))
        image = nib.Nifti1Image(np.asarray(image.dataobj), AFFINE, image.header)
        image.set_qform(AFFINE if qform else None, qform)
        image.set_sform(AFFINE, sform)
        nib.save(image, str(tmp_path / "in" / f"{name}.nii.gz"))
    _predict(_echo_task(tmp_path / "out", []), _module(predict_path=str(tmp_path / "in")))
    for name, codes in (("scan", (1, 2)), ("other", (0, 1))):
        for path in (tmp_path / "out" / name / "mean_prob.nii.gz", tmp_path / "out" / name / "z002" / "samples.nii.gz"):
            header = nib.load(str(path)).header
            assert (int(header["qform_code"]), int(header["sform_code"])) == codes, path
            assert header.get_xyzt_units() == ("mm", "sec"), path
        np.testing.assert_allclose(nib.load(str(tmp_path / "out" / name / "mean_prob.nii.gz")).affine, AFFINE, atol=1e-5)


def test_a_decathlon_folder_predicts_its_dataset_json_test_list(tmp_path):
    root = _msd(tmp_path / "msd", n_cases=1, test=2)
    dm = _module(data_format="decathlon", predict_path=str(root))
    dm.setup("predict")
    assert sorted({dm.dataset("predict").base.cases[c][0] for c, _ in dm.dataset("predict").base.slices}) == [
        "new_0",
        "new_1",
    ]
    meta = json.loads((root / "dataset.json").read_text())  # some sets list {"image": ...} entries
    meta["test"] = [{"image": "./imagesTs/new_1.nii.gz"}]
    (root / "dataset.json").write_text(json.dumps(meta))
    dm = _module(data_format="decathlon", predict_path=str(root))
    dm.setup("predict")
    assert [case for case, *_ in dm.dataset("predict").base.cases] == ["new_1"]


def test_unreadable_volumes_are_skipped_in_one_warning_and_none_readable_is_an_error(tmp_path, monkeypatch):
    folder = tmp_path / "in"
    _volume(folder / "good.nii.gz", 0)
    _volume(folder / "cut.nii.gz", 1)
    data = (folder / "cut.nii.gz").read_bytes()
    (folder / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    _volume(folder / "plain.nii", 2)  # uncompressed, cut short by 100 bytes: only the header's size tells
    (folder / "plain.nii").write_bytes((folder / "plain.nii").read_bytes()[:-100])
    (folder / "notes.txt").write_text("not an image")
    dm = _module(predict_path=str(folder))
    decompressed = []  # whole files are checked by their gzip trailer, not decompressed once more
    real_open = gzip.open
    monkeypatch.setattr(
        gzip, "open", lambda path, *a, **k: decompressed.append(Path(path).name) or real_open(path, *a, **k)
    )
    with pytest.warns(UserWarning) as caught:
        dm.setup("predict")
    assert "good.nii.gz" not in decompressed and "cut.nii.gz" in decompressed
    messages = [str(w.message) for w in caught]
    unreadable = [m for m in messages if "not predicted, unreadable" in m]
    assert len(unreadable) == 1 and "2 of 3 files are not predicted" in unreadable[0]
    assert str(folder / "cut.nii.gz") in unreadable[0]
    assert f"{folder / 'plain.nii'}: truncated" in unreadable[0]
    assert any("notes.txt" in m for m in messages)  # another kind of file: counted, not predicted
    assert [case for case, *_ in dm.dataset("predict").base.cases] == ["good"]
    (folder / "good.nii.gz").write_bytes(b"\x1f\x8b broken")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(MedicalDataError, match="none of its 3 files can be read"):
            _module(predict_path=str(folder)).setup("predict")


def _png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


def test_png_images_predict_as_the_lidc_items_and_repeated_names_get_their_folder(tmp_path):
    """2-D images read as the LIDC PNGs are (16-bit stretched per image, whole), named after the file; one name
    in two folders is told apart as driving's predict does (``a__scan``)."""
    rng = np.random.default_rng(0)
    deep = rng.integers(1000, 4000, (21, 30)).astype(np.uint16)  # a 12-bit CT slice
    flat = rng.integers(0, 255, (17, 12)).astype(np.uint8)
    lidc = tmp_path / "lidc"
    for name, image in (("deep", deep), ("flat", flat)):
        _png(lidc / "test" / "images" / "P1" / f"{name}.png", image)
        for r in range(4):
            _png(lidc / "test" / "gt" / "P1" / f"{name}_l{r}.png", np.zeros(image.shape, np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the 16-bit stretch
        _predict(_echo_task(tmp_path / "labelled", []), _module(data_path=str(lidc)))
        own = tmp_path / "own"
        _png(own / "a" / "scan.png", deep)
        _png(own / "b" / "scan.png", flat)
        _png(own / "c" / "single.png", flat)
        _predict(_echo_task(tmp_path / "pred", []), _module(predict_path=str(own)))
    expected = _files(tmp_path / "labelled" / "P1")
    for name, ours in (("deep", "a__scan"), ("flat", "b__scan"), ("flat", "single")):
        for file in ("mean_prob.png", "uncertainty.png", "sample_01.png"):
            assert (tmp_path / "pred" / ours / file).read_bytes() == expected[f"{name}/{file}"], (ours, file)
    _volume(own / "vol.nii", 0)
    with pytest.raises(MedicalDataError, match="holds both NIfTI volumes .* and 2-D images"):
        _module(predict_path=str(own)).setup("predict")
    (own / "vol.nii").unlink()
    _png(own / "c" / "single 2.png", flat)
    _png(own / "c" / "single_2.png", flat)  # the writer's folder for "single 2" too: caught before predicting
    with pytest.raises(MedicalDataError, match=r"single 2.png and .*single_2.png make one output name 'single_2'"):
        _module(predict_path=str(own)).setup("predict")
