"""Classification data (audit findings): crops re-cut when their source changes or the class list does, CSV rows
listing a file twice, and an image that does not decode during training."""

from __future__ import annotations

import csv
import logging
import os
import shutil
import struct
import time
import warnings
import zlib
from pathlib import Path

import cv2
import pytest
import torch

from domains.driving.classification.data import write_kitti_crops
from domains.medical.classification.data import write_lesion_crops
from shared.classification.data import (
    ClassificationDataError,
    ClassificationDataModule,
    ClassificationDataWarning,
    read_image_folder,
    read_label_csv,
    source_stamp,
)
from shared.optim import WarmupCosine
from tests.helpers import STRIPE_CLASSES as CLASSES
from tests.helpers import quiet_trainer, stripes, stripes_data, stripes_folder, stripes_task

pytestmark = pytest.mark.usefixtures("one_thread")


def _labels(out: Path) -> list[str]:
    with (out / "metadata.csv").open() as f:
        return [row["label"] for row in csv.DictReader(f)]


def _rewrite(path: Path, old: str, new: str) -> None:
    """Edit a file as sed -i would, its time moved on (coarse file-system clocks see the change too)."""
    stat = path.stat()
    path.write_text(path.read_text().replace(old, new))
    later = max(time.time_ns(), stat.st_mtime_ns + 2_000_000_000)
    os.utime(path, ns=(later, later))


# ------------------------------------------------------------------------------------------ A: stale crops


def test_kitti_crops_are_cut_again_when_a_label_changes_and_it_is_said(kitti, tmp_path, caplog):
    source = shutil.copytree(kitti, tmp_path / "kitti")
    out = write_kitti_crops(source, tmp_path / "crops", min_height=16)
    assert "Car" in _labels(out)
    with caplog.at_level(logging.INFO):
        write_kitti_crops(source, out, min_height=16)  # unchanged: reused, and said
    assert "reusing the crops" in caplog.text
    for label_file in (source / "training/label_2").glob("*.txt"):
        _rewrite(label_file, "Car ", "Truck ")
    caplog.clear()
    with caplog.at_level(logging.INFO):
        write_kitti_crops(source, out, min_height=16)
    assert "the source changed since its crops were cut" in caplog.text
    labels = _labels(out)
    assert "Car" not in labels and "Truck" in labels
    assert not list(out.glob("*/Car/*.png")) and list(out.glob("train/Truck/*.png"))


def test_lesion_patches_are_cut_again_when_a_patient_is_added(lidc, tmp_path, caplog):
    lidc = shutil.copytree(lidc, tmp_path / "lidc")  # edited below
    out = write_lesion_crops(lidc, tmp_path / "crops")
    before = len(_labels(out))
    patient = min((lidc / "train" / "images").iterdir())
    for part in ("images", "gt"):
        shutil.copytree(lidc / "train" / part / patient.name, lidc / "train" / part / "added_patient")
    with caplog.at_level(logging.INFO):
        write_lesion_crops(lidc, out)
    assert "the source changed" in caplog.text
    assert len(_labels(out)) == before + 2  # the added patient's two images


def test_kitti_crops_are_cut_again_when_a_sequence_map_is_added_beside_the_split(kitti, tmp_path, caplog):
    """The drives decide the split, but a sequence_map.txt written after the cut was not in the source stamp
    (it is read before the generator's sequences.txt in the parent folder)."""
    source = shutil.copytree(kitti, tmp_path / "kitti")
    out = write_kitti_crops(source, tmp_path / "crops", min_height=16)
    ids = sorted(p.stem for p in (source / "training/image_2").glob("*.png"))
    with (out / "metadata.csv").open() as f:
        groups = {row["group"] for row in csv.DictReader(f)}
    assert groups <= {f"seq{i:04d}" for i in range(6)}  # the generator's sequences.txt
    (source / "training/sequence_map.txt").write_text("".join(f"{i} drive{int(i) // 4}\n" for i in ids))
    with caplog.at_level(logging.INFO):
        write_kitti_crops(source, out, min_height=16)
    assert "the source changed since its crops were cut" in caplog.text
    with (out / "metadata.csv").open() as f:
        groups = {row["group"] for row in csv.DictReader(f)}
    assert groups and groups <= {"drive0", "drive1", "drive2"}  # 12 frames, 4 to a drive


def test_lesion_patches_are_cut_again_when_a_reader_mask_is_edited(lidc, tmp_path, caplog):
    """Only the images were stamped: a reader's mask edited since the cut kept the old reader count."""
    lidc = shutil.copytree(lidc, tmp_path / "lidc")  # edited below
    out = write_lesion_crops(lidc, tmp_path / "crops")
    with (out / "metadata.csv").open() as f:
        row = next(r for r in csv.DictReader(f) if r["readers_marking"] == "4")
    patient, name = Path(row["path"]).stem.split("__")
    mask = lidc / row["split"] / "gt" / patient / f"{name}_l0.png"
    stat = mask.stat()
    assert cv2.imwrite(str(mask), 0 * cv2.imread(str(mask), cv2.IMREAD_UNCHANGED))  # reader 0 marks nothing
    later = max(time.time_ns(), stat.st_mtime_ns + 2_000_000_000)
    os.utime(mask, ns=(later, later))
    with caplog.at_level(logging.INFO):
        write_lesion_crops(lidc, out)
    assert "the source changed" in caplog.text
    with (out / "metadata.csv").open() as f:
        marking = {r["path"].split("/")[-1]: r["readers_marking"] for r in csv.DictReader(f)}
    assert marking[Path(row["path"]).name] == "3"


def test_source_stamp_sees_an_edit_an_addition_and_a_removal_and_costs_only_a_listing(tmp_path, monkeypatch):
    for i in range(3):
        (tmp_path / "d" / f"{i}.txt").parent.mkdir(exist_ok=True)
        (tmp_path / "d" / f"{i}.txt").write_text("Car 0 0")
    first = source_stamp([tmp_path / "d", tmp_path / "missing.txt"])
    assert first["files"] == 3 and first["bytes"] == 21
    _rewrite(tmp_path / "d" / "0.txt", "Car", "Van")  # same size: only the time tells
    edited = source_stamp([tmp_path / "d"])
    assert edited["digest"] != first["digest"]
    (tmp_path / "missing.txt").write_text("x")
    assert source_stamp([tmp_path / "d", tmp_path / "missing.txt"])["files"] == 4
    (tmp_path / "d" / "2.txt").unlink()
    assert source_stamp([tmp_path / "d"])["files"] == 2
    # one folder written three ways is one source (a relative data_path, then the absolute one, re-cut it all)
    monkeypatch.chdir(tmp_path)
    assert len({source_stamp([p])["digest"] for p in ("d", "./d", str(tmp_path / "d"))}) == 1
    assert source_stamp(["d"])["newest"].endswith("UTC")  # not the machine's time zone


# -------------------------------------------------------------------------------------- B: new class list


def test_a_new_class_list_removes_the_old_class_folders_and_nothing_else(kitti, tmp_path):
    out = write_kitti_crops(kitti, tmp_path / "crops", min_height=16)
    assert (out / "train" / "Van").is_dir()
    (out / "notes.txt").write_text("mine")  # a user's file beside the crops is not the cutter's
    write_kitti_crops(kitti, out, class_names=["Car", "Pedestrian"], min_height=16)
    # was: class folder(s) ['Cyclist', 'Truck', 'Van'] are not in class_names
    splits = read_image_folder(out, ["Car", "Pedestrian"])
    assert {Path(s.path).parent.name for s in splits["train"]} == {"Car", "Pedestrian"}
    assert (out / "notes.txt").read_text() == "mine"
    # an interrupted cut (no marker, no metadata) of the full class list is cleared too
    write_kitti_crops(kitti, out, min_height=16)
    (out / ".complete").unlink()
    (out / "metadata.csv").unlink()
    (out / ".cutting").touch()  # as a cut stopped half-way leaves it
    write_kitti_crops(kitti, out, class_names=["Car", "Cyclist"], min_height=16)
    assert sorted(p.name for p in (out / "train").iterdir()) == ["Car", "Cyclist"]
    read_image_folder(out, ["Car", "Cyclist"])


# ------------------------------------------------------------------------------------- C: CSV duplicates


def _csv(tmp_path: Path, rows: list[tuple[str, str, str]]) -> Path:
    path = tmp_path / "labels.csv"
    path.write_text("path,label,group\n" + "".join(",".join(r) + "\n" for r in rows))
    return path


def test_csv_file_listed_with_two_labels_is_an_error_naming_both_lines(tmp_path):
    for i in range(2):
        stripes(tmp_path / f"{i}.png", vertical=bool(i), seed=i)
    path = _csv(tmp_path, [("0.png", "h", "a"), ("1.png", "v", "b"), ("./0.png", "v", "c")])
    with pytest.raises(
        ClassificationDataError,
        match=r"labels\.csv:4: .*0\.png is labelled 'v' here but 'h' at .*labels\.csv:2",
    ):
        read_label_csv(path, CLASSES)
    # a spelling pathlib keeps (sub/../0.png) is the same file too: compared unresolved, a second sample
    (tmp_path / "sub").mkdir()
    path = _csv(tmp_path, [("0.png", "h", "a"), ("1.png", "v", "b"), ("sub/../0.png", "v", "c")])
    with pytest.raises(
        ClassificationDataError,
        match=r"labels\.csv:4: .*sub/\.\./0\.png is labelled 'v' here but 'h' at .*labels\.csv:2",
    ):
        read_label_csv(path, CLASSES)


def test_csv_file_listed_twice_is_kept_once_counted_and_never_in_two_splits(tmp_path):
    rows = []
    for i in range(20):
        stripes(tmp_path / f"{i}.png", vertical=bool(i % 2), seed=i)
        rows += [(f"{i}.png", CLASSES[i % 2], f"g{i}"), (f"{i}.png", CLASSES[i % 2], f"h{i}")]
    path = _csv(tmp_path, rows)
    with pytest.warns(
        ClassificationDataWarning, match=r"duplicate: 20 \(e\.g\. .*labels\.csv:3: .*0\.png is listed again"
    ):
        items = read_label_csv(path, CLASSES)
    assert len(items) == 20 and len({s.path for s in items}) == 20
    dm = ClassificationDataModule("csv", str(path), CLASSES, in_channels=1, num_workers=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ClassificationDataWarning)
        splits = dm.read_splits()
    seen = [s.path for items in splits.values() for s in items]
    assert len(seen) == len(set(seen)) == 20
    with pytest.raises(ClassificationDataError, match=r"labels\.csv:3: .*listed again .*strict"):
        read_label_csv(path, CLASSES, strict=True)


# ----------------------------------------------------------------------------- D: images that do not decode


def _png_chunks(data: bytes):
    pos = 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        yield pos, data[pos + 4 : pos + 8], length
        pos += 12 + length


def _bad_idat(path: Path, fix_crc: bool) -> Path:
    """Scramble a PNG's pixel data; ``fix_crc``: with a valid checksum, so only decoding finds it."""
    data = bytearray(path.read_bytes())
    pos, _, length = next(c for c in _png_chunks(bytes(data)) if c[1] == b"IDAT")
    start = pos + 8
    data[start + 2 : start + length] = bytes(b ^ 0x5A for b in data[start + 2 : start + length])
    if fix_crc:
        crc = zlib.crc32(bytes(data[pos + 4 : start + length])) & 0xFFFFFFFF
        data[start + length : start + length + 4] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED) is None
    return path


def test_a_png_with_broken_pixel_data_fails_the_data_check(tmp_path):
    """A bit-flipped PNG passed the header-only check and stopped training mid-epoch."""
    root = stripes_folder(tmp_path / "data", {"train": 2, "val": 1})
    _bad_idat(root / "train" / "h" / "1.png", fix_crc=False)
    with pytest.warns(ClassificationDataWarning, match=r"not_an_image: 1 .*train/h/1\.png"):
        splits = read_image_folder(root, CLASSES)
    assert len(splits["train"]) == 3


def test_an_image_that_does_not_decode_in_training_is_replaced_and_counted_or_with_strict_an_error(tmp_path):
    """A file that passes the cheap check but does not decode (valid checksums, broken pixels) killed the run
    with ``cannot decode image`` hours in; now it is replaced and named in a warning. Strict decodes up front."""
    torch.manual_seed(0)
    root = stripes_folder(tmp_path / "data", {"train": 4, "val": 2})
    bad = _bad_idat(root / "train" / "v" / "2.png", fix_crc=True)
    settings = {"batch_size": 4, "augment": True}  # the data module's default augmentation
    dm = stripes_data(root, **settings)
    trainer = quiet_trainer(max_epochs=2, limit_val_batches=1.0)
    with pytest.warns(ClassificationDataWarning) as caught:
        trainer.fit(stripes_task(lr_scheduler=WarmupCosine), dm)  # the tasks' default schedule
    assert trainer.state.finished and trainer.global_step == 4  # 8 images (one bad) in batches of 4, 2 epochs
    said = [str(w.message) for w in caught if "replaced by" in str(w.message)]
    assert said and all(m.startswith(f"{bad}: cannot decode image") for m in said), said
    with pytest.raises(ClassificationDataError, match=r"train/v/2\.png: not a readable image .*strict"):
        stripes_data(root, strict=True, **settings).setup("fit")
    # a validation image is not replaced: it would be scored as another image's second copy
    bad_val = _bad_idat(root / "val" / "h" / "0.png", fix_crc=True)
    dm = stripes_data(root, **settings)
    dm.setup("fit")
    val = dm.datasets["val"]
    with pytest.raises(ClassificationDataError, match="cannot decode image"):
        val[[Path(item.path) for item in val.items].index(bad_val)]


def test_predict_on_the_test_split_lists_an_image_that_does_not_decode_and_goes_on(tmp_path):
    """Without predict_path the test split is predicted: a broken image there stopped the run (the test
    split's loader, not the skipping predict one) instead of landing in unreadable.csv."""
    torch.manual_seed(0)
    root = stripes_folder(tmp_path / "data", {"train": 2, "val": 1, "test": 2})
    bad = _bad_idat(root / "test" / "v" / "1.png", fix_crc=True)
    dm = stripes_data(root, batch_size=4, augment=True)
    task = stripes_task(lr_scheduler=WarmupCosine)
    task.predict_dir = str(tmp_path / "pred")
    with pytest.warns(UserWarning, match=r"predict: 1 of 4 images could not be read"):
        quiet_trainer().predict(task, dm)
    with (tmp_path / "pred" / "unreadable.csv").open() as f:
        assert [row["path"] for row in csv.DictReader(f)] == [str(bad)]
    with (tmp_path / "pred" / "probabilities.csv").open() as f:
        predicted = sorted(Path(row["path"]).relative_to(root).as_posix() for row in csv.DictReader(f))
    assert predicted == ["test/h/0.png", "test/h/1.png", "test/v/0.png"]  # the 3 others, each once


def test_a_data_module_checks_its_crops_once_for_prepare_data_and_setup(kitti, tmp_path, monkeypatch):
    """Both asked for the crops, and each check stamps every source file (0.1-0.4 s for KITTI's 15,000)."""
    from domains.driving.classification import data as driving_data

    calls = []
    cut = driving_data.write_kitti_crops
    monkeypatch.setattr(driving_data, "write_kitti_crops", lambda *a, **k: calls.append(a) or cut(*a, **k))
    dm = driving_data.DrivingClassificationData(
        data_path=str(kitti), crops_dir=str(tmp_path / "crops"), crop_min_height=16, num_workers=0,
        class_names=["Car", "Pedestrian"],
    )
    dm.prepare_data()
    dm.setup("fit")
    assert len(calls) == 1
