"""``predict`` over a folder loses nothing for one refused volume (s41): a volume its reader refuses when read (its
intensity window beyond any scan, NaN voxels) stopped the whole run, and the files after it got no output. Now it
is skipped, named with its reason in a count at the end, and nothing is written for it; a run that predicts no
file is still an error, and fit / validate / test still stop on such a file."""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from domains.medical.data import (
    DecathlonSliceDataset,
    MedicalDataError,
    MedicalDataModule,
    ReaderDataset,
    build_predict_dataset,
)
from shared.prediction_set import PredictionSet
from tests.helpers import medical_task, quiet_trainer

pytestmark = pytest.mark.usefixtures("one_thread")

TISSUE = np.random.default_rng(0).normal(40, 300, (16, 16, 3)).astype(np.float32)  # CT-like (HU)
BEYOND = np.where(TISSUE > 40, 3e38, -3e38).astype(np.float32)  # its 0.5-99.5 window: refused (window_problem)
HOLED = TISSUE.copy()
HOLED[2, 3, 1] = np.nan  # one NaN voxel: refused (the intensity scaling needs finite values)


def _nifti(path: Path, volume: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(path))
    return path


def _task(out: Path):
    return medical_task("unet", {"channels": [8, 16]}, num_samples=1, predict_dir=str(out))


def _predict(folder: Path, out: Path, batch_size: int = 2):
    """As the CLI predicts: with :class:`PredictionSet`, which undoes a failed run's files."""
    data = MedicalDataModule(crop_size=16, batch_size=batch_size, num_workers=0, predict_path=str(folder))
    quiet_trainer(callbacks=[PredictionSet()]).predict(_task(out), datamodule=data)


def test_refused_volumes_are_skipped_named_and_counted_and_the_files_after_them_predicted(tmp_path, monkeypatch):
    """``a`` (good), ``b`` (window beyond any scan), ``c`` (good), ``d`` (a NaN voxel), ``e`` (unreadable: left out
    when listed): before, ``b`` stopped the run at its first slice and ``c`` had no output."""
    folder = tmp_path / "in"
    for name, volume in (("a", TISSUE), ("b", BEYOND), ("c", TISSUE), ("d", HOLED)):
        _nifti(folder / f"{name}.nii.gz", volume)
    (folder / "e.nii.gz").write_bytes(b"\x1f\x8b not a volume")
    reads = []  # the volumes whose voxels were read
    real_load = DecathlonSliceDataset._load
    monkeypatch.setattr(
        DecathlonSliceDataset,
        "_load",
        staticmethod(lambda loader, first, path: reads.append(Path(path).name) or real_load(loader, first, path)),
    )
    out = tmp_path / "out"
    with pytest.warns(UserWarning) as caught:
        _predict(folder, out)
    said = [str(w.message) for w in caught if str(w.message).startswith("predict: predicted")]
    assert len(said) == 1, [str(w.message) for w in caught]
    assert said[0].startswith("predict: predicted 2 of 5 files; skipped 3")
    for name, why in (
        ("b", "its intensity window"),
        ("d", "1 of 768 voxels are NaN or infinite"),
        ("e", "cannot read NIfTI"),
    ):
        assert re.search(rf"\n  {re.escape(str(folder / name))}\.nii\.gz: {why}", said[0]), (name, said[0])
    # the good ones whole, the refused ones nothing at all (no folder, no slice)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["a", "c"]
    for name in ("a", "c"):
        assert (out / name / "mean_prob.nii.gz").is_file() and len(list((out / name).glob("z*"))) == 3
    # each volume read once: a refused one is refused again from memory for its other slices
    assert sorted(reads) == ["a.nii.gz", "b.nii.gz", "c.nii.gz", "d.nii.gz"]


def test_a_run_that_predicts_no_file_is_an_error_naming_each(tmp_path):
    folder = tmp_path / "in"
    _nifti(folder / "b.nii.gz", BEYOND)
    _nifti(folder / "d.nii.gz", HOLED)
    out = tmp_path / "out"
    with pytest.raises(MedicalDataError, match=r"^predict: none of the 2 files could be predicted:\n  .*b\.nii\.gz: "):
        _predict(folder, out, batch_size=4)
    assert not out.exists()  # raised before the run's set was settled: the folder it made is gone again


def test_only_predict_skips_a_refused_item_fit_validate_and_test_stop_on_it(tmp_path):
    """The stand-in comes from predict's view only; a training / evaluation view raises the reader's error."""
    path = _nifti(tmp_path / "b.nii.gz", BEYOND)
    base = build_predict_dataset(path, crop_size=16)
    with pytest.raises(MedicalDataError, match=r"b\.nii\.gz: its intensity window"):
        ReaderDataset(base, "first")[0]
    item = ReaderDataset(base, "first", skip_refused=True)[1]
    assert item["error"].startswith(f"{path}: its intensity window")
    assert tuple(item["image"].shape) == (1, 16, 16) and item["source"]["slice_index"] == 1
    good = build_predict_dataset(_nifti(tmp_path / "a.nii.gz", TISSUE), crop_size=16)
    assert ReaderDataset(good, "first", skip_refused=True)[0]["error"] == ""
