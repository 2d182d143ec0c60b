"""Cityscapes labelIds maps (the download's own) are trained on and scored as its 19 train ids, void ignored: read
raw, a 34-class model trained on the void classes and counted them in val/miou (a prediction perfect on the 19
scored classes that called every void pixel road scored 0.665, Cityscapes' convention gives 1.0)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from domains.driving.anomaly.data import SegmentationDataModule
from domains.driving.anomaly.outliers import paste_outliers
from domains.driving.formats import LabelFormatError
from tests.helpers import anomaly_task, quiet_trainer

TINY = {"encoder_kwargs": {"channels": [4, 8, 16]}}
#: the scored label ids of the scene below -> their train ids (cityscapesscripts' labels.py)
SCORED = {7: 0, 8: 1, 21: 8, 23: 10, 26: 13}
#: its void label ids: unlabeled, ego vehicle, out of roi, static, ground, parking, guard rail, caravan
VOID_IDS = (0, 1, 3, 4, 6, 9, 14, 29)


def scene() -> np.ndarray:
    """A 32x64 labelIds map: sky over vegetation, a road with a sidewalk, a car and a caravan, and void around."""
    label = np.full((32, 64), 23, np.uint8)  # sky
    label[:2, 20:40] = 3  # out of roi
    label[8:14] = 21  # vegetation
    label[10:14, 50:60] = 4  # static
    label[14:16] = 6  # ground
    label[16:28] = 7  # road
    label[16:28, :8] = 8  # sidewalk
    label[16:20, 8:12] = 9  # parking
    label[12:20, 30:42] = 26  # car
    label[14:18, 44:48] = 29  # caravan
    label[8:16, 60:62] = 14  # guard rail
    label[28:] = 1  # ego vehicle (the bonnet)
    label[:, :2] = 0  # unlabeled border
    return label


def train_ids(label: np.ndarray) -> np.ndarray:
    """What cityscapesscripts' createTrainIdLabelImgs writes for ``label``."""
    out = np.full_like(label, 255)
    for label_id, train_id in SCORED.items():
        out[label == label_id] = train_id
    return out


def write_cityscapes(root: Path, kinds=("labelIds",)) -> Path:
    """A Cityscapes download in miniature (train: aachen, val: frankfurt, two frames each): every frame the
    :func:`scene`, its image's red channel the label id (so a stand-in network can answer from the pixels)."""
    label = scene()
    for split, city in (("train", "aachen"), ("val", "frankfurt")):
        for i in range(2):
            stem = f"{city}_{i:06d}_000019"
            images, maps = root / "leftImg8bit" / split / city, root / "gtFine" / split / city
            images.mkdir(parents=True, exist_ok=True)
            maps.mkdir(parents=True, exist_ok=True)
            bgr = np.stack([np.full_like(label, 90), np.full_like(label, 40 * i), label], axis=-1)
            assert cv2.imwrite(str(images / f"{stem}_leftImg8bit.png"), bgr)
            if "labelIds" in kinds:
                assert cv2.imwrite(str(maps / f"{stem}_gtFine_labelIds.png"), label)
            if "labelTrainIds" in kinds:
                assert cv2.imwrite(str(maps / f"{stem}_gtFine_labelTrainIds.png"), train_ids(label))
    return root


def datamodule(root: Path, **kwargs) -> SegmentationDataModule:
    return SegmentationDataModule(data_path=str(root), num_workers=0, image_size=None, augment=False, batch_size=2,
                                  **kwargs)  # fmt: skip


def test_labelids_maps_are_read_as_train_ids_with_void_255(tmp_path):
    root = write_cityscapes(tmp_path / "cs", kinds=("labelIds", "labelTrainIds"))
    dm = datamodule(root, cityscapes_ids="labelIds")
    dm.setup("fit")
    mask = dm.datasets["val"][0]["mask"].numpy()
    label = scene()
    assert (mask[np.isin(label, VOID_IDS)] == 255).all() and (mask == 255).sum() == np.isin(label, VOID_IDS).sum()
    for label_id, train_id in SCORED.items():
        assert (mask[label == label_id] == train_id).all()
    assert sorted(np.unique(mask).tolist()) == [0, 1, 8, 10, 13, 255]
    # the same maps as the train-id files cityscapesscripts writes (read where gtFine/ holds both)
    both = datamodule(root)
    both.setup("fit")
    assert both.datasets["val"].items[0][1].name.endswith("_gtFine_labelTrainIds.png")
    assert np.array_equal(both.datasets["val"][0]["mask"].numpy(), mask)
    # repeat-factor sampling counts the same classes
    assert dm.datasets["train"].image_classes()[0] == {0, 1, 8, 10, 13}


def test_ids_past_the_label_ids_in_a_labelids_map_are_an_error_naming_the_file(tmp_path):
    root = write_cityscapes(tmp_path / "cs")
    path = root / "gtFine" / "val" / "frankfurt" / "frankfurt_000000_000019_gtFine_labelIds.png"
    bad = scene()
    bad[0, 0] = 40
    cv2.imwrite(str(path), bad)
    dm = datamodule(root)
    dm.setup("fit")
    with pytest.raises(LabelFormatError, match=r"frankfurt_000000_000019_gtFine_labelIds\.png.*ids \[40\] are not "
                       r"Cityscapes label ids \(0\.\.33, 255\): give the gtFine labelIds maps as downloaded"):  # fmt: skip
        dm.datasets["val"][0]


def _perfect_but_void_is_road(images: torch.Tensor, with_outlier: bool = False):
    """Logits of a network right on every scored pixel that calls every void pixel road (train id 0)."""
    label_ids = (images[:, 0] * 255).round().long()  # the red channel: the frame's label id
    table = torch.zeros(256, dtype=torch.long)  # void -> road
    for label_id, train_id in SCORED.items():
        table[label_id] = train_id
    return F.one_hot(table[label_ids], 19).permute(0, 3, 1, 2).float(), None, None


def test_a_prediction_perfect_on_the_scored_classes_that_calls_void_road_scores_miou_1(tmp_path, monkeypatch):
    root = write_cityscapes(tmp_path / "cs")
    task = anomaly_task(**TINY, oe_weight=0.0, num_classes=19, road_ids=[0])
    monkeypatch.setattr(task.model, "features", _perfect_but_void_is_road)
    (metrics,) = quiet_trainer(limit_val_batches=1.0).validate(task, datamodule=datamodule(root), verbose=False)
    assert metrics["val/miou"] == pytest.approx(1.0)


def test_a_34_class_model_on_cityscapes_maps_is_refused_saying_what_to_give(tmp_path):
    root = write_cityscapes(tmp_path / "cs")
    task = anomaly_task(**TINY, oe_weight=0.0, num_classes=34, road_ids=[7])
    with pytest.raises(ValueError, match=r"labelIds maps are trained on and scored as Cityscapes' 19 train ids \(road = 0; "
                       r".*but the model has 34 classes: give --model.network.init_args.num_classes 19 "
                       r"--model.road_ids \[0\]$"):  # fmt: skip
        quiet_trainer(limit_val_batches=1.0).validate(task, datamodule=datamodule(root), verbose=False)


def test_outliers_stand_on_the_road_of_the_train_ids(tmp_path):
    """road_ids [0] is Cityscapes' road once the labelIds are read as train ids (read raw, 0 was the unlabeled
    border)."""
    dm = datamodule(write_cityscapes(tmp_path / "cs"), cityscapes_ids="labelIds")
    dm.setup("fit")
    item = dm.datasets["train"][0]
    image, mask = item["image"].permute(1, 2, 0).numpy(), item["mask"].numpy()
    road = scene() == 7
    rng = np.random.default_rng(0)
    for _ in range(20):
        *_, objects = paste_outliers(image, mask, rng, road_prob=1.0, shadow_prob=0.0, road_ids=(0,))
        assert objects
        for obj in objects:
            _, x0, y1, x1 = obj["box"]
            assert road[y1 - 1, x0:x1].any(), obj  # its bottom row stands on the road


def test_enet_weights_are_listed_under_the_train_id_names(tmp_path, capsys):
    task = anomaly_task(**TINY, oe_weight=0.0, num_classes=19, road_ids=[0], class_weighting="enet",
                        class_weight_batches=1, calibration_batches=1)  # fmt: skip
    quiet_trainer(max_steps=1).fit(task, datamodule=datamodule(write_cityscapes(tmp_path / "cs")))
    listed = next(line for line in capsys.readouterr().out.splitlines() if "class weights" in line)
    names = [part.rsplit(" ", 1)[0] for part in listed.split(": ", 1)[1].split(", ")]
    assert names[:3] == ["road", "sidewalk", "building"] and names[-1] == "bicycle" and len(names) == 19
    weights = dict(part.rsplit(" ", 1) for part in listed.split(": ", 1)[1].split(", "))
    assert float(weights["road"]) < float(weights["car"]) < float(weights["building"])  # road most common
