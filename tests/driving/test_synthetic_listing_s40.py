"""The driving data modules list a synthetic set under the same shared lock they checked it under.

Session 39's readers held the shared side of a generated set's lock (``<parent>/.<name>.lock``) only while they
checked the set (``finished_data_path``): the files were listed afterwards, outside it, so a ``--force`` run
starting in between gave a torn listing. Each driving data module now wraps its check and listing in
:func:`shared.files.holding_generated_sets` (the detection, anomaly and accident ``setup``, the classification
crops' ``_crops_root``); the lock is free again once ``setup`` returns. A frame gone later is named with the set
it belongs to (:func:`shared.files.vanished_note`), not only "not found". The medical twin:
``tests/test_synthetic_listing_s40.py``, whose lock probe these tests reuse.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from domains.driving.accident import data as accident_data
from domains.driving.accident.data import AccidentDataModule
from domains.driving.anomaly.data import AnomalyDataset, SegmentationDataModule
from domains.driving.classification import data as classification_data
from domains.driving.classification.data import DrivingClassificationData
from domains.driving.common import read_rgb
from domains.driving.detection.data import DetectionDataModule
from domains.driving.synthetic import clips, writers
from tests.test_synthetic_listing_s40 import _shared_lock_held

# tiny sets, as tests/test_synthetic_locks_s38.py's (three drives: every split of a 3-way cut has one)
KITTI = {"n_images": 6, "size": (160, 64), "frames_per_sequence": 2, "seed": 1, "verbose": False}
ANOMALY = {"n_images": 2, "size": (160, 64), "seed": 1, "verbose": False}
CLIPS = {"n_clips": 4, "size": (160, 64), "fps": 10.0, "seconds": 0.8, "seed": 0, "verbose": False}


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict[str, Path]:
    """One finished set of each kind, generated as every run does (each one's lock file left beside it)."""
    base = tmp_path_factory.mktemp("sets")
    return {
        "kitti": writers.ensure_synthetic_kitti(base / "kitti", **KITTI),
        "anomaly": writers.ensure_synthetic_anomaly(base / "anomaly", **ANOMALY),
        "clips": clips.ensure_synthetic_clips(base / "clips", **CLIPS),
    }


def _spy(monkeypatch, owner, name: str, root_of) -> list[tuple[Path, bool]]:
    """Each call of ``owner.name`` (a listing), with its set's root (``root_of(*args)``) and whether that set's
    lock was held shared then."""
    seen = []
    real = getattr(owner, name)

    def listing(*args, **kwargs):
        root = Path(root_of(*args))
        seen.append((root, _shared_lock_held(root)))
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, listing)
    return seen


@pytest.fixture(autouse=True)
def _work_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing a module writes lands in the repository


def test_detection_lists_and_reads_the_kitti_set_holding_its_lock(sets, monkeypatch):
    """Before: the split folders were listed, and each split's label files read, with the lock free."""
    root = sets["kitti"]
    listed = _spy(monkeypatch, DetectionDataModule, "_kitti_stand_ins", lambda self, source: source)
    read = _spy(monkeypatch, DetectionDataModule, "_read_records", lambda self, name, records: root)
    module = DetectionDataModule(
        "kitti", str(root), ["Car"], num_workers=0, split_fractions=(0.34, 0.33, 0.33), augment=False
    )
    module.setup("fit")
    assert listed == [(root, True)]
    assert read == [(root, True), (root, True)]  # train and val, each read under the lock
    assert not _shared_lock_held(root)


def test_anomaly_lists_the_scenes_and_the_anomaly_set_holding_their_locks(sets, monkeypatch):
    """Train / val from the KITTI-layout scenes, test from the anomaly set: each listed under its own lock."""
    kitti, anomaly = sets["kitti"], sets["anomaly"]
    scenes = _spy(monkeypatch, SegmentationDataModule, "_kitti_sets", lambda self, root, *rest: root)
    tests = _spy(monkeypatch, AnomalyDataset, "__init__", lambda self, root, *rest: root)
    module = SegmentationDataModule(
        data_path=str(kitti), anomaly_path=str(anomaly), image_size=(32, 64), num_workers=0,
        split_fractions=(0.67, 0.33),
    )  # fmt: skip
    module.setup()
    assert scenes == [(kitti, True)]
    assert tests == [(anomaly, True)]
    assert len(module.datasets["test"]) == ANOMALY["n_images"]
    assert not _shared_lock_held(kitti) and not _shared_lock_held(anomaly)


def test_accident_lists_the_clips_holding_their_lock(sets, monkeypatch):
    """The clips' listing and the reads of the fit's splits, under the lock the root's check took."""
    root = sets["clips"]
    listed = _spy(monkeypatch, accident_data, "list_ccd_layout", lambda where, **kw: where)
    read = _spy(monkeypatch, accident_data, "read_ccd_entries", lambda layout, entries, **kw: root)
    module = AccidentDataModule(
        data_format="synthetic", data_path=str(root), image_size=(16, 40), num_workers=0,
        val_fraction=0.25, test_fraction=0.25,
    )  # fmt: skip
    module.setup("fit")
    assert listed == [(root, True)]
    assert read == [(root, True), (root, True)]  # train and val
    assert not _shared_lock_held(root)


def test_classification_cuts_its_crops_from_the_kitti_set_holding_its_lock(sets, tmp_path, monkeypatch):
    """The crops are cut (the set listed and read) under the lock ``finished_data_path`` took."""
    root = sets["kitti"]
    cut = _spy(monkeypatch, classification_data, "write_kitti_crops", lambda source, *rest: source)
    module = DrivingClassificationData(
        data_path=str(root), class_names=["Car", "Pedestrian"], crop_min_height=1, crop_size=16, image_size=(16, 16),
        num_workers=0, split_fractions=(0.34, 0.33, 0.33), seed=4, crops_dir=str(tmp_path / "crops"),
    )  # fmt: skip
    module.setup("fit")
    assert cut == [(root, True)]
    assert not _shared_lock_held(root)


def test_a_frame_gone_from_a_generated_set_names_the_set(tmp_path):
    """Before: ``<frame>: image file not found``, with no word of the set regenerated since it was listed."""
    root = writers.ensure_synthetic_kitti(tmp_path / "kitti", **{**KITTI, "n_images": 1})
    frame = root / "training" / "image_2" / "000000.png"
    frame.unlink()
    with pytest.raises(FileNotFoundError) as gone:
        read_rgb(frame)
    assert str(gone.value) == (
        f"{frame}: image file not found; it is in the generated set {root}, which was generated again (--force) "
        "or changed since this run listed it: a set a run reads must not be regenerated meanwhile; run this "
        "again once the generation has finished"
    )
