"""Detection datasets and data module on tiny KITTI / YOLO fixtures written in tmp_path."""

from __future__ import annotations

import warnings

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
import yaml
from torch.utils.data import WeightedRandomSampler

from domains.driving.detection.data import (
    DetectionDataModule,
    DetectionDataset,
    detection_collate,
    detection_transforms,
)
from domains.driving.formats import ImageAnnotation, LabelFormatError, LabelWarning, ObjectLabel
from shared.data import detection_augmentations
from tests.driving.layouts import H, W, fake_synthetic, write_kitti
from tests.helpers import write_image


def _annotation(tmp_path, objects, name="000000"):
    path = write_image(tmp_path / f"{name}.png")
    return ImageAnnotation(str(path), W, H, objects)


def test_detection_dataset_targets_class_map_ignore_and_counted_drops(tmp_path, caplog):
    ann = _annotation(
        tmp_path,
        [
            ObjectLabel("Car", (10.0, 5.0, 40.0, 30.0)),
            ObjectLabel("Van", (2.0, 2.0, 9.0, 9.0)),
            ObjectLabel("Cyclist", (30.0, 10.0, 38.0, 40.0)),
            ObjectLabel("DontCare", (45.0, 30.0, 60.0, 44.0)),
            ObjectLabel("Truck", (1.0, 1.0, 5.0, 5.0)),
            ObjectLabel("Tram", (1.0, 1.0, 5.0, 5.0)),
        ],
    )
    # dropped as intended (types outside class_names): one info line, not a warning
    with warnings.catch_warnings(), caplog.at_level("INFO"):
        warnings.simplefilter("error", LabelWarning)
        ds = DetectionDataset([ann, ann], ["Car", "Pedestrian", "Cyclist"], class_map={"Van": "Car"})
    (said,) = [r.getMessage() for r in caplog.records if "not trained on or scored" in r.getMessage()]
    assert "Truck: 2" in said and "Tram: 2" in said
    assert ds.dropped == {"Truck": 2, "Tram": 2}
    image, target = ds[0]
    assert image.dtype == torch.float32 and image.shape == (3, H, W)
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert target["boxes"].dtype == torch.float32 and target["boxes"].shape == (3, 4)
    assert target["labels"].dtype == torch.int64 and target["labels"].tolist() == [0, 0, 2]
    assert target["ignore_boxes"].tolist() == [[45.0, 30.0, 60.0, 44.0]]
    assert target["image_id"] == "000000" and target["orig_size"] == (H, W)
    # pixels come from the file, RGB order
    bgr = cv2.imread(ann.image_path)
    assert torch.allclose(image[0], torch.from_numpy(bgr[..., 2]).float() / 255)

    empty = DetectionDataset([_annotation(tmp_path, [], "000001")], ["Car"])
    _, target = empty[0]
    assert (
        target["boxes"].shape == (0, 4)
        and target["labels"].shape == (0,)
        and target["ignore_boxes"].shape == (0, 4)
    )

    with pytest.raises(ValueError, match="class_map targets"):
        DetectionDataset([ann], ["Car"], class_map={"Van": "Bus"})


def test_horizontal_flip_moves_boxes_and_ignore_boxes_inside_the_image(tmp_path):
    ann = _annotation(
        tmp_path,
        [ObjectLabel("Car", (0.0, 5.0, 40.0, 30.0)), ObjectLabel("DontCare", (45.0, 30.0, 64.0, 44.0))],
    )
    flip = A.Compose(
        [A.HorizontalFlip(p=1.0)], bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"])
    )
    image, target = DetectionDataset([ann], ["Car"], transform=flip)[0]
    np.testing.assert_allclose(target["boxes"].numpy(), [[W - 40.0, 5.0, W - 0.0, 30.0]], atol=1e-3)
    np.testing.assert_allclose(target["ignore_boxes"].numpy(), [[0.0, 30.0, W - 45.0, 44.0]], atol=1e-3)
    assert target["labels"].tolist() == [0]
    original, _ = DetectionDataset([ann], ["Car"])[0]
    assert torch.equal(image, original.flip(-1))


def test_random_augmentation_keeps_boxes_inside_and_resizes(tmp_path):
    ann = _annotation(
        tmp_path, [ObjectLabel("Car", (0.0, 0.0, 64.0, 20.0)), ObjectLabel("Car", (50.0, 30.0, 64.0, 48.0))]
    )
    ds = DetectionDataset([ann], ["Car"], transform=detection_transforms(True, image_size=(32, 40), seed=3))
    shapes = set()
    for _ in range(12):
        image, target = ds[0]
        # a zoom-in crop comes out 32x40; the 48x64 frame otherwise fitted into it, aspect kept: x 0.625 = 30x40
        shapes.add(tuple(image.shape))
        boxes = target["boxes"]
        assert len(boxes) == len(target["labels"])
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 2] <= image.shape[2]).all() and (boxes[:, 3] <= image.shape[1]).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert shapes == {(3, 32, 40), (3, 30, 40)}


def test_zoom_in_crops_always_fire_with_crop_prob_one_and_keep_the_box_area_ratio():
    # a 20x20 box in the middle of a 100x200 frame; crops keep exactly a quarter of the area, so a box the
    # crop holds whole comes out with 4x its area whatever the crop's aspect ratio
    image = np.zeros((100, 200, 3), np.uint8)
    box = np.array([[90.0, 40.0, 110.0, 60.0]], np.float32)
    never = detection_augmentations(
        crop_prob=0.0, crop_scale=(0.25, 0.25), height=100, width=200, flip=False, photometric=False, seed=0
    )
    always = detection_augmentations(
        crop_prob=1.0, crop_scale=(0.25, 0.25), height=100, width=200, flip=False, photometric=False, seed=0
    )
    for _ in range(5):
        out = never(image=image, bboxes=box, labels=[0])
        np.testing.assert_allclose(np.asarray(out["bboxes"]), box, atol=1e-3)
    whole = 0
    for _ in range(20):
        out = always(image=image, bboxes=box, labels=[0])
        assert out["image"].shape == (100, 200, 3)
        kept = np.asarray(out["bboxes"]).reshape(-1, 4)
        if len(kept) == 0:  # mostly cut away (min_visibility)
            continue
        x0, y0, x1, y1 = kept[0]
        if 0 < x0 and x1 < 200 and 0 < y0 and y1 < 100:  # not cut by the crop's border
            whole += 1
            assert (x1 - x0) * (y1 - y0) == pytest.approx(4 * 400, rel=0.03)
            # the crop's w/h ratio r lies in 2 * (0.8, 1.25) = [1.6, 2.5] (the output's own 200/100 aspect);
            # resizing it to 200x100 makes the square box (2 / r) : 1, so its aspect is in [0.8, 1.25]
            assert 0.78 <= (x1 - x0) / (y1 - y0) <= 1.28
    assert whole >= 5


def test_boxes_mostly_cut_away_by_a_crop_are_dropped():
    """min_visibility 0.3, in detection_augmentations and in the pipeline detection_transforms builds: a box
    that keeps less than 30 % of its area after a crop is dropped, one that keeps 36 % is kept (a stricter 0.5
    would drop it). Hand-picked crops with each pipeline's own box settings: a 50x40 box at x 150-200."""
    image = np.zeros((100, 200, 3), np.uint8)
    box = np.array([[150.0, 30.0, 200.0, 70.0]], np.float32)
    pipelines = {
        "detection_transforms": detection_transforms(
            True, image_size=(100, 200), crop_scale=(0.25, 0.25), crop_prob=1.0, seed=0
        ),
        "detection_augmentations": detection_augmentations(
            crop_prob=1.0, crop_scale=(0.25, 0.25), height=100, width=200, flip=False, photometric=False, seed=0
        ),
    }
    for name, pipeline in pipelines.items():
        params = pipeline.processors["bboxes"].params
        kept = {}
        for x_max in (163, 168):  # 13 / 50 = 26 % of the box left, 18 / 50 = 36 %
            crop = A.Compose([A.Crop(x_min=0, y_min=0, x_max=x_max, y_max=100)], bbox_params=params)
            kept[x_max] = len(crop(image=image, bboxes=box, labels=[0])["bboxes"])
        assert kept == {163: 0, 168: 1}, name


def test_detection_datamodule_checks_crop_arguments(tmp_path):
    # albumentations' own checks, raised at construction with the module's arguments named
    with pytest.raises(ValueError, match=r"crop_scale \(0.8, 0.5\)(.|\n)*less than the second"):
        DetectionDataModule(data_path=str(tmp_path), crop_scale=(0.8, 0.5))
    with pytest.raises(ValueError, match=r"crop_prob 1.5(.|\n)*less than or equal to 1"):
        DetectionDataModule(data_path=str(tmp_path), crop_prob=1.5)


def test_detection_semantic_maps_move_with_the_image_and_are_checked(tmp_path):
    # left half dark with class 1, right half bright with class 2: after flips and zoom-in crops, the map
    # must still say 2 exactly where the image is bright
    image = np.zeros((H, W, 3), np.uint8)
    image[:, W // 2 :] = 255
    label = np.full((H, W), 1, np.uint8)
    label[:, W // 2 :] = 2
    (tmp_path / "image_2").mkdir()
    (tmp_path / "semantic").mkdir()
    cv2.imwrite(str(tmp_path / "image_2" / "000000.png"), image)
    cv2.imwrite(str(tmp_path / "semantic" / "000000.png"), label)
    car = ObjectLabel("Car", bbox=(2, 2, 20, 20))
    ann = ImageAnnotation(str(tmp_path / "image_2" / "000000.png"), W, H, [car])
    crops = detection_augmentations(
        crop_prob=1.0, crop_scale=(0.3, 0.6), height=H, width=W, flip=False, photometric=False, seed=0
    )
    transform = A.Compose(
        [*crops.transforms, A.HorizontalFlip(p=1.0)],
        bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"]),
        seed=0,
    )
    dataset = DetectionDataset([ann], ["Car"], transform, semantic_maps=True)
    for _ in range(5):
        tensor, target = dataset[0]
        semantic = target["semantic"]
        assert semantic.dtype == torch.int64 and semantic.shape == tensor.shape[1:]
        bright, dark = tensor.mean(0) > 0.9, tensor.mean(0) < 0.1
        assert bright.any() or dark.any()
        assert (semantic[bright] == 2).all() and (semantic[dark] == 1).all()
    # off by default: no map read, none returned
    assert "semantic" not in DetectionDataset([ann], ["Car"])[0][1]
    # a map of the wrong size names the file; a missing one is found at construction
    cv2.imwrite(str(tmp_path / "semantic" / "000000.png"), label[:10])
    with pytest.raises(LabelFormatError, match=r"semantic.000000.png.*semantic map is 64x10"):
        DetectionDataset([ann], ["Car"], semantic_maps=True)[0]
    (tmp_path / "semantic" / "000000.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of 1 images have no semantic map.*000000.png"):
        DetectionDataset([ann], ["Car"], semantic_maps=True)


def test_detection_datamodule_gives_semantic_maps_to_training_only(tmp_path):
    root = write_kitti(tmp_path / "kitti", n=12)
    dm = DetectionDataModule(data_path=str(root), batch_size=2, num_workers=0, semantic_maps=True)
    dm.setup("fit")
    _, targets = next(iter(dm.train_dataloader()))
    assert all(t["semantic"].shape == (H, W) for t in targets)
    assert set(torch.cat([t["semantic"].unique() for t in targets]).tolist()) <= {0, 1, 2, 255}
    _, targets = next(iter(dm.val_dataloader()))
    assert all("semantic" not in t for t in targets)


def test_detection_collate_returns_lists():
    batch = [(torch.zeros(3, 4, 5), {"image_id": "a"}), (torch.zeros(3, 6, 5), {"image_id": "b"})]
    images, targets = detection_collate(batch)
    assert isinstance(images, list) and [i.shape[1] for i in images] == [4, 6]
    assert [t["image_id"] for t in targets] == ["a", "b"]


def test_detection_datamodule_splits_by_sequence_and_resizes(tmp_path):
    root = write_kitti(tmp_path / "kitti", n=12)
    dm = DetectionDataModule(data_path=str(root), image_size=(32, 40), batch_size=2, num_workers=0, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LabelWarning)  # Van -> Car, DontCare -> ignore: nothing dropped
        dm.setup("fit")
    seq = {f"{i:06d}": f"seq{i // 2}" for i in range(12)}
    seen = [{seq[a.image_id] for a in dm.splits[name]} for name in ("train", "val", "test")]
    assert sum(len(dm.splits[n]) for n in dm.splits) == 12
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    images, targets = next(iter(dm.train_dataloader()))
    # zoom-in crops are 32x40; the 48x64 frames otherwise fitted into 32x40 keeping their aspect: 30x40
    assert len(images) == 2 and all(tuple(i.shape) in {(3, 32, 40), (3, 30, 40)} for i in images)
    assert all(set(t["labels"].tolist()) <= {0} for t in targets)
    images, targets = next(iter(dm.val_dataloader()))
    assert images[0].shape == (3, 30, 40)  # one scale, min(32 / 48, 40 / 64) = 0.625, on both axes
    np.testing.assert_allclose(
        targets[0]["boxes"][0].numpy(), [10 * 0.625, 5 * 0.625, 40 * 0.625, 30 * 0.625], atol=1e-3
    )
    assert dm.num_classes == 3

    capped = DetectionDataModule(data_path=str(root), max_items=4, num_workers=0, augment=False)
    with pytest.warns(UserWarning, match=r"\['test'\] are empty"):  # 4 items = 2 sequences
        capped.setup()
    assert sum(len(v) for v in capped.splits.values()) == 4


def test_detection_datamodule_yolo_keeps_its_own_split(tmp_path):
    root = tmp_path / "yolo"
    for split, stems in (("train", ["a", "b"]), ("val", ["c"])):
        for stem in stems:
            write_image(root / "images" / split / f"{stem}.png")
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split / f"{stem}.txt").write_text("1 0.5 0.5 0.25 0.5\n")
    (root / "data.yaml").write_text(
        yaml.safe_dump({"train": "images/train", "val": "images/val", "names": ["Car", "Cyclist"]})
    )
    dm = DetectionDataModule(
        data_format="yolo", data_path=str(root), class_names=["Car", "Cyclist"], num_workers=0
    )
    dm.setup()
    assert sorted(dm.splits) == ["train", "val"] and len(dm.splits["train"]) == 2
    assert dm.datasets["val"][0][1]["labels"].tolist() == [1]
    with pytest.raises(RuntimeError, match="no 'test' split"):
        dm.test_dataloader()
    # its own splits: a checkpoint trained with another seed was not trained on this validation split
    trained = {"data_format": "yolo", "data_path": str(root), "seed": 3, "split_fractions": [0.7, 0.15, 0.15]}
    assert dm.other_split_than(trained, "validate") is None
    (root / "data.yaml").write_text(yaml.safe_dump({"train": "images/train", "names": ["Car", "Cyclist"]}))
    assert dm.other_split_than(trained, "validate") == "data.seed 3 (this command: 0)"  # drawn by sequence


def test_detection_datamodule_falls_back_to_the_synthetic_generator(tmp_path, monkeypatch):
    fake_synthetic(monkeypatch, kitti=write_kitti(tmp_path / "kitti", n=12))
    dm = DetectionDataModule(num_workers=0)
    dm.prepare_data()
    dm.setup()
    assert sum(len(v) for v in dm.splits.values()) == 12


def test_detection_repeat_factor_sampling_reads_classes_from_labels(tmp_path):
    root = write_kitti(tmp_path / "kitti", n=12)  # every image: Car (and a Van -> Car)
    det = DetectionDataModule(data_path=str(root), num_workers=0, repeat_threshold=0.5)
    det.setup("fit")
    assert det.datasets["train"].image_classes() == [{0}] * len(det.splits["train"])
    sampler = det.train_dataloader().sampler
    assert isinstance(sampler, WeightedRandomSampler) and sampler.weights.tolist() == [1.0] * len(
        det.splits["train"]
    )  # one class in every image: nothing to weight up
