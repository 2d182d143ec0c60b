"""FCOS road detector: backbones, coordinates, training signal, evaluation plumbing, CLI fit and predict.

Everything runs on tiny generated KITTI-layout data (128x64 images with coloured boxes) in tmp_path.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
import yaml

from domains.driving.detection.model import RoadDetector, box_in_ignore_fraction, semantic_targets
from domains.driving.detection.predict import detections_to_kitti, draw_detections
from domains.driving.detection.task import DetectionTask, kitti_height_scale
from domains.driving.formats import read_kitti_label
from tests.driving.layouts import painted_scene
from tests.helpers import FixedOutputs, detection_task

ROOT = Path(__file__).resolve().parents[2]
QUICK_CONFIG = ROOT / "domains/driving/detection/configs/quick.yaml"
W, H = 128, 64
TINY_MODEL = [
    "--model.network.init_args.backbone",
    "tiny_cnn",
    "--model.network.init_args.backbone_kwargs",
    "{width: 8}",
    "--model.network.init_args.fpn_channels",
    "32",
]
TINY_MODEL += [
    "--model.network.init_args.head_convs",
    "1",
    "--model.network.init_args.input_size",
    "[64, 128]",
    "--model.network.init_args.train_scales",
    "[1.0]",
]
TINY_MODEL += ["--model.network.init_args.fpn_levels", "3"]


def _scene(rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[str, tuple[float, ...]]]]:
    """:func:`painted_scene` with float boxes, as the detector takes them."""
    image, objects = painted_scene(rng, H, W)
    return image, [(name, tuple(float(v) for v in box)) for name, box in objects]


def make_kitti(root: Path, n: int = 8, seed: int = 0, semantic: bool = False) -> Path:
    """``root/training/{image_2,label_2}`` with n scenes and one DontCare box per image (and with
    ``semantic``, ``semantic/`` class maps: 1 on the painted objects, 0 elsewhere)."""
    rng = np.random.default_rng(seed)
    (root / "training/image_2").mkdir(parents=True)
    (root / "training/label_2").mkdir(parents=True)
    if semantic:
        (root / "training/semantic").mkdir(parents=True)
    for i in range(n):
        image, objects = _scene(rng)
        cv2.imwrite(str(root / f"training/image_2/{i:06d}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if semantic:
            label = (image.max(axis=2) > 200).astype(np.uint8)
            cv2.imwrite(str(root / f"training/semantic/{i:06d}.png"), label)
        lines = [
            f"{name} 0.00 0 -10 {b[0]:.2f} {b[1]:.2f} {b[2]:.2f} {b[3]:.2f} 1.5 1.6 3.9 1.0 1.7 20.0 -1.5"
            for name, b in objects
        ]
        lines.append("DontCare -1 -1 -10 0.00 0.00 6.00 6.00 -1 -1 -1 -1000 -1000 -1000 -10")
        (root / f"training/label_2/{i:06d}.txt").write_text("\n".join(lines) + "\n")
    return root


def _tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image.transpose(2, 0, 1).copy()).float() / 255


@pytest.mark.parametrize(
    "backbone, kwargs",
    [
        ("resnet18", {}),
        ("mobilenet_v3_large", {}),
        ("vgg11", {}),
        (
            "vit",
            {
                "image_size": 64,
                "patch_size": 16,
                "num_layers": 1,
                "num_heads": 2,
                "hidden_dim": 32,
                "mlp_dim": 64,
                "pyramid_channels": 32,
            },
        ),
    ],
)
def test_model_builds_on_registry_backbones_and_returns_original_coordinates(backbone, kwargs):
    torch.manual_seed(0)
    model = RoadDetector(
        3,
        backbone,
        kwargs,
        input_size=(64, 128),
        fpn_channels=32,
        head_convs=1,
        score_thresh=0.0,
        detections_per_img=300,
    ).eval()
    seen = []
    model.detector.backbone.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape)))
    image = torch.rand(3, 100, 300)  # another size and aspect than the model's input size
    with torch.no_grad():
        (out,) = model([image])
    # resized into the 64x128 box (100x300 -> 43x128), padded to a multiple of 32
    assert seen == [(1, 3, 64, 128)]
    boxes = out["boxes"]
    assert boxes.shape[1] == 4 and len(boxes) > 0
    assert set(out) == {"boxes", "scores", "labels"} and out["labels"].max() < 3
    assert boxes[:, 0::2].min() >= 0 and boxes[:, 0::2].max() <= 300
    assert boxes[:, 1::2].min() >= 0 and boxes[:, 1::2].max() <= 100
    assert boxes[:, 2].max() > 200  # boxes cover the whole original width, not the 128-px input
    # five pyramid levels whose point sizes equal their strides
    strides = model.detector.backbone.strides
    assert len(strides) == 5 and strides[-1] == 4 * strides[-3]
    assert [s[0] for s in model.detector.anchor_generator.sizes] == strides


def test_train_scales_are_the_only_training_sizes_and_evaluation_uses_input_size():
    # train_scales (0.5,): training batches at half the 64x128 box, evaluation at the box itself
    model = RoadDetector(
        3, "tiny_cnn", {"width": 8}, input_size=(64, 128), train_scales=(0.5,), fpn_channels=32
    )
    seen = []
    model.detector.backbone.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape[-2:])))
    image = torch.rand(3, 64, 128)
    target = {"boxes": torch.tensor([[10.0, 10.0, 40.0, 40.0]]), "labels": torch.tensor([1])}
    model.train()
    for _ in range(3):
        model([image], [target])
    model.eval()
    with torch.no_grad():
        model([image])
    assert seen == [(32, 64)] * 3 + [(64, 128)]


def test_box_in_ignore_fraction_by_hand():
    boxes = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [5, 0, 15, 10]])
    ignore = torch.tensor([[0.0, 0, 10, 10], [25, 20, 100, 100]])
    # box 0 fully inside ignore 0; box 1 half inside ignore 1; box 2: half inside ignore 0
    assert torch.allclose(box_in_ignore_fraction(boxes, ignore), torch.tensor([1.0, 0.5, 0.5]))
    assert box_in_ignore_fraction(boxes, torch.zeros(0, 4)).tolist() == [0.0, 0.0, 0.0]


def test_loss_falls_on_a_few_images(one_thread):
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    scenes = [_scene(rng) for _ in range(3)]
    images = [_tensor(im) for im, _ in scenes]
    names = {"Car": 0, "Pedestrian": 1}
    targets = [
        {"boxes": torch.tensor([b for _, b in objs]), "labels": torch.tensor([names[n] for n, _ in objs])}
        for _, objs in scenes
    ]
    model = RoadDetector(2, "tiny_cnn", {"width": 8}, input_size=(64, 128), fpn_channels=32, head_convs=1)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):  # seen: the last five at 0.41 of the first three after 15 steps (0.33 after 30)
        parts = model(images, targets)
        loss = sum(parts.values())
        assert all(torch.isfinite(v) for v in parts.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:3]), losses


def test_semantic_targets_resize_like_the_images_and_pad_with_void():
    # a 2x4 map whose image was resized to 4x8 and padded to 6x8: nearest doubles every pixel, padding is void
    label = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])
    (target,) = semantic_targets([label], [(4, 8)], (6, 8))
    expected = label.repeat_interleave(2, 0).repeat_interleave(2, 1)
    assert torch.equal(target[:4], expected)
    assert (target[4:] == 255).all()


def test_semantic_head_trains_only_with_maps_and_leaves_detection_outputs_alone(one_thread):
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    scenes = [_scene(rng) for _ in range(2)]
    images = [_tensor(im) for im, _ in scenes]
    # the class map: 1 on the painted objects (blue or red), 0 on the grey road, void on the top rows
    maps = []
    for image, _ in scenes:
        label = torch.from_numpy((image.max(axis=2) > 200).astype(np.int64))
        label[:2] = 255
        maps.append(label)
    names = {"Car": 0, "Pedestrian": 1}
    targets = [
        {"boxes": torch.tensor([b for _, b in objs]), "labels": torch.tensor([names[n] for n, _ in objs])}
        for _, objs in scenes
    ]
    kwargs = {"input_size": (64, 128), "fpn_channels": 32, "head_convs": 1}
    model = RoadDetector(2, "tiny_cnn", {"width": 8}, semantic_classes=2, semantic_loss_weight=0.5, **kwargs)
    model.train()
    with pytest.raises(ValueError, match="no 'semantic' map"):
        model(images, targets)
    with_maps = [{**t, "semantic": m} for t, m in zip(targets, maps)]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    semantic = []
    for _ in range(10):  # seen: the last three at 0.04 of the first two after 10 steps (0.01 after 25)
        parts = model(images, with_maps)
        assert set(parts) == {"classification", "bbox_regression", "bbox_ctrness", "semantic"}
        opt.zero_grad()
        sum(parts.values()).backward()
        opt.step()
        semantic.append(parts["semantic"].item())
    assert np.mean(semantic[-3:]) < 0.5 * np.mean(semantic[:2]), semantic
    with pytest.raises(ValueError, match=r"< semantic_classes \(2\)"):
        model(images, [{**t, "semantic": torch.full_like(m, 5)} for t, m in zip(targets, maps)])
    all_void = model(images, [{**t, "semantic": torch.full_like(m, 255)} for t, m in zip(targets, maps)])
    assert all_void["semantic"].item() == 0.0 and all_void["semantic"].requires_grad
    model.eval()
    with torch.no_grad():
        (out, _) = model(images)
    assert set(out) == {"boxes", "scores", "labels"}
    # off by default: no head, and training needs no maps
    plain = RoadDetector(2, "tiny_cnn", {"width": 8}, **kwargs).train()
    assert plain.semantic_head is None and "semantic" not in plain(images, targets)


def _evaluated_task(monkeypatch, annotations: dict | None = None, **task_args) -> tuple[DetectionTask, dict]:
    """A tiny Car / Pedestrian detection task whose logging lands in the returned dict and whose raw annotations
    are ``annotations`` (none: KITTI ground truth from the targets); give it a ``FixedOutputs`` model."""
    task = detection_task(
        backbone="tiny_cnn",
        backbone_kwargs={"width": 8},
        class_names=["Car", "Pedestrian"],
        input_size=(64, 128),
        fpn_channels=32,
        head_convs=1,
        kitti_difficulties=["moderate"],
        **task_args,
    )
    logged = {}
    monkeypatch.setattr(task, "log_dict", lambda values, **kw: logged.update(values))
    monkeypatch.setattr(task, "log", lambda name, value, **kw: logged.update({name: value}))
    monkeypatch.setattr(DetectionTask, "_annotations", lambda self: annotations or {})
    return task, logged


def test_evaluation_scales_to_original_size_and_ignores_dontcare(monkeypatch):
    task, logged = _evaluated_task(monkeypatch)
    # the tensor is half the original size: boxes are scaled by 2 before scoring
    image = torch.zeros(3, 64, 128)
    gt = torch.tensor([[10.0, 10, 40, 40], [60, 5, 70, 50]])
    target = {
        "boxes": gt,
        "labels": torch.tensor([0, 1]),
        "ignore_boxes": torch.tensor([[100.0, 40, 128, 64]]),
        "image_id": "a",
        "orig_size": (128, 256),
    }
    preds = [
        {
            "boxes": torch.cat([gt, torch.tensor([[104.0, 44, 120, 60]])]),  # the third lies in DontCare
            "scores": torch.tensor([0.9, 0.8, 0.95]),
            "labels": torch.tensor([0, 1, 0]),
        }
    ]
    task.model = FixedOutputs(preds)  # detections in the tensor's coordinates
    task._evaluation_step(([image], [target]), "val")
    values = task._log_epoch_metrics("val")
    assert values["val/map50"] == pytest.approx(1.0)
    assert values["val/map"] == pytest.approx(1.0)
    assert values["val/ap50/Car"] == pytest.approx(1.0) and values["val/ap/Pedestrian"] == pytest.approx(1.0)
    assert values["val/ignored_detections"] == 1
    # KITTI AP|R40 with a single ground truth per class samples one recall point of 40: 0 by the devkit's rule;
    # its DontCare and height rules through the task: test_kitti_ap_through_the_task_*
    assert "val/kitti_moderate/Car" in values
    assert logged["val/map50"] == pytest.approx(1.0)

    # without the scaling, the predictions (tensor coordinates) would miss the original-size ground truth
    task.model = FixedOutputs([{k: v.clone() for k, v in preds[0].items()}])
    target_native = {**target, "orig_size": (64, 128)}
    task._evaluation_step(([image], [target_native]), "val")
    assert task._log_epoch_metrics("val")["val/map50"] == pytest.approx(1.0)


def test_scale_to_original_scales_x_by_width_and_y_by_height():
    """The xyxy multipliers: x by the width ratio, y by the height ratio (scale 2 both ways above hides a swap)."""
    from domains.driving.detection.task import _scale_to_original

    image = torch.zeros(3, 64, 128)
    # a KITTI frame of 375x1242 (h x w) seen at 64x128: x by 1242 / 128 = 9.703125, y by 375 / 64 = 5.859375
    scale = _scale_to_original(image, {"orig_size": (375, 1242)})
    assert scale.tolist() == [9.703125, 5.859375, 9.703125, 5.859375]
    assert _scale_to_original(image, None).tolist() == [1.0] * 4  # no orig_size: tensor coordinates
    assert _scale_to_original(image, {"boxes": torch.zeros(0, 4)}).tolist() == [1.0] * 4


def _kitti_through_the_task(monkeypatch, images: list[tuple[dict, dict]], **task_args) -> dict[str, float]:
    """The val metrics of a task whose model returns the given detections: ``images`` holds one (target,
    prediction) per image, boxes in the coordinates of a 64x128 tensor of a 128x256 original (scale 2)."""
    task, _ = _evaluated_task(monkeypatch, **task_args)  # KITTI ground truth from the targets
    targets = [{**t, "image_id": f"{i:06d}", "orig_size": (128, 256)} for i, (t, _) in enumerate(images)]
    task.model = FixedOutputs([p for _, p in images])
    task._evaluation_step(([torch.zeros(3, 64, 128)] * len(images), targets), "val")
    return task._log_epoch_metrics("val")


def _cars(boxes, scores=None, **extra) -> dict:
    """Car boxes (a target, or a prediction with ``scores``)."""
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    out = {"boxes": boxes, "labels": torch.zeros(len(boxes), dtype=torch.int64), **extra}
    if scores is not None:
        out["scores"] = torch.tensor(scores, dtype=torch.float32)
    return out


def test_kitti_ap_through_the_task_does_not_count_detections_in_dontcare(monkeypatch):
    # 100 images, each with one 60-px-high car (tensor (10, 10, 40, 40) -> original (20, 20, 80, 80)) found
    # exactly (distinct scores 0.5 ... 0.995), plus a higher-scoring (0.99) car detection lying wholly inside a
    # DontCare region (tensor (80, 10, 120, 50)). KITTI rules (metrics.py): an unmatched detection whose
    # intersection / own area with a DontCare box exceeds Car's 0.7 is no FP -> precision 1 at every recall
    # -> AP|R40 = 1. Were the DontCare boxes not handed to KITTI AP, every image would add one FP ranked above
    # its TP: precision about 1/2 at every recall -> AP about 0.5 (metric test: < 0.6).
    images = [
        (
            _cars([[10, 10, 40, 40]], ignore_boxes=torch.tensor([[80.0, 10, 120, 50]])),
            _cars([[10, 10, 40, 40], [85, 15, 115, 45]], scores=[0.5 + i / 200, 0.99]),
        )
        for i in range(100)
    ]
    with pytest.warns(UserWarning, match=r"no valid Pedestrian ground truth .*/kitti_moderate/mean averages"):
        values = _kitti_through_the_task(monkeypatch, images)
    assert values["val/kitti_moderate/Car"] == pytest.approx(1.0)
    # Pedestrian: no ground truth, left out of the mean (the devkit's 0 would make it 0.5), and said so
    assert values["val/kitti_moderate/mean"] == pytest.approx(1.0)
    assert values["val/kitti_moderate/num_classes"] == 1
    # KITTI and COCO read DontCare each by its own rule: one 0.6 inside DontCare (tensor x 108-128 against the
    # region's 80-120: 12 of 20 columns) is a COCO crowd match at IoU 0.5 (ignored: mAP50 1) but a KITTI false
    # positive (Car's rule: over 0.7), ranked above every TP: precision 1/2 at every recall, AP|R40 0.5
    partly = [(t, _cars([[10, 10, 40, 40], [108, 15, 128, 45]], scores=p["scores"].tolist())) for t, p in images]
    values = _kitti_through_the_task(monkeypatch, partly)
    assert values["val/ignored_detections"] == 100 and values["val/map50"] == pytest.approx(1.0)
    assert values["val/kitti_moderate/Car"] == pytest.approx(0.5, abs=0.01)
    assert "val/kitti_moderate/Pedestrian" not in values
    assert values["val/ignored_detections"] == 100  # counted: more than half inside DontCare


def test_coco_map_keeps_a_true_detection_of_a_car_lying_mostly_in_dontcare(monkeypatch):
    """COCOeval's crowd rule, as the KITTI devkit's DontCare rule: a detection is ignored only when it matches
    no object. A car with 60 % of it under a DontCare box, found exactly, is a hit (it was dropped before the
    metric: mAP50 0); a false alarm wholly in DontCare stays ignored; one outside it counts."""
    car, region = [[10, 10, 40, 40]], torch.tensor([[22.0, 0, 64, 64]])  # x 22-40 of 10-40: 60 % inside
    images = [(_cars(car, ignore_boxes=region), _cars(car, scores=[0.5 + i / 200])) for i in range(20)]
    values = _kitti_through_the_task(monkeypatch, images)
    assert values["val/ignored_detections"] == 20  # counted as lying mostly in DontCare ...
    assert values["val/map50"] == pytest.approx(1.0) and values["val/map"] == pytest.approx(1.0)  # ... and hits
    # plus a higher-scoring false alarm wholly inside the region: ignored by the crowd rule, AP stays 1
    inside = [(t, _cars([*car, [45, 20, 60, 35]], scores=[float(p["scores"][0]), 0.99])) for t, p in images]
    assert _kitti_through_the_task(monkeypatch, inside)["val/map50"] == pytest.approx(1.0)
    # the same false alarm outside every DontCare box ranks first in each image: precision 1/2 at every recall
    outside = [(t, _cars([*car, [0, 45, 15, 60]], scores=[float(p["scores"][0]), 0.99])) for t, p in images]
    assert _kitti_through_the_task(monkeypatch, outside)["val/map50"] == pytest.approx(0.5, abs=0.02)


def test_kitti_ap_through_the_task_scales_the_minimum_height(monkeypatch):
    # 100 images with a 60-px-high car found exactly, 100 with a car missed, 20 px high in the original image
    # (tensor (10, 10, 25, 20) -> original (20, 20, 50, 40)). Moderate's minimum height is 25 px: at scale 1
    # the small cars are ignored (AP 1); kitti_min_height_scale 0.512 (192-px frames) makes it 12.8 px, so
    # they count: recall 1/2 at precision 1 -> R40 samples 1/40 ... 20/40 have precision 1 -> AP 20/40.
    found = [
        (_cars([[10, 10, 40, 40]]), _cars([[10, 10, 40, 40]], scores=[0.5 + i / 200])) for i in range(100)
    ]
    missed = [(_cars([[10, 10, 25, 20]]), _cars([], scores=[])) for _ in range(100)]
    scaled = _kitti_through_the_task(monkeypatch, found + missed, kitti_min_height_scale=0.512)
    assert scaled["val/kitti_moderate/Car"] == pytest.approx(0.5)
    devkit = _kitti_through_the_task(monkeypatch, found + missed)
    assert devkit["val/kitti_moderate/Car"] == pytest.approx(1.0)
    # null (the shipped configs): 192 / 375 on the synthetic default, the devkit's 1 on one's own data; the
    # configs' 0.512 had scored a user's real KITTI set with 12.8 / 20.5 px limits, silently
    for data_path, expected in ((None, 0.5), ("/data/kitti", 1.0)):
        data = SimpleNamespace(data_path=data_path)
        monkeypatch.setattr(DetectionTask, "attached_datamodule", lambda self, data=data: data)
        auto = _kitti_through_the_task(monkeypatch, found + missed, kitti_min_height_scale=None)
        assert auto["val/kitti_moderate/Car"] == pytest.approx(expected), data_path
    assert kitti_height_scale(None, None) == pytest.approx(192 / 375)
    assert kitti_height_scale(None, "kitti") == 1.0 and kitti_height_scale(0.7, None) == 0.7
    assert kitti_height_scale(None, "data/driving/synthetic_kitti") == pytest.approx(192 / 375)  # named outright
    for name in ("quick", "full", "gpu"):  # the shipped configs leave it to the data
        config = yaml.safe_load((QUICK_CONFIG.parent / f"{name}.yaml").read_text())
        assert config["model"]["kitti_min_height_scale"] is None, name


def test_coco_keys_feed_the_logged_names_by_hand(monkeypatch):
    """Each logged COCO value comes from its own torchmetrics key. COCO: 10 IoU thresholds 0.50:0.05:0.95, a
    detection matches when its IoU reaches the threshold; AP = mean over 101 recall points of the interpolated
    precision (the best at that recall or beyond), averaged over the thresholds and the classes with ground truth.
    Boxes in tensor coordinates, scaled by 2 to the original (IoU unchanged)."""
    # a 10x10 car found by an 8x9 box inside it: IoU 72 / 100 = 0.72, matched at 0.50 ... 0.70 (5 of 10)
    found = [(_cars([[0, 0, 10, 10]]), _cars([[0, 0, 8, 9]], scores=[0.9]))]
    values = _kitti_through_the_task(monkeypatch, found)
    assert values["val/map50"] == pytest.approx(1.0)
    assert values["val/map"] == pytest.approx(0.5)
    assert values["val/map75"] == pytest.approx(0.0)
    assert values["val/ap/Car"] == pytest.approx(0.5) and values["val/ap50/Car"] == pytest.approx(1.0)
    assert values["val/mar100"] == pytest.approx(0.5)
    assert "val/ap/Pedestrian" not in values  # no ground truth: COCO's -1, left out
    # plus a higher-scoring false car far away: where the car matches, FP (precision 0, recall 0) then TP
    # (precision 1/2, recall 1) -> precision 1/2 at all 101 recall points: AP 1/2 at 0.50 ... 0.70, 0 above.
    # AP50 1/2, AP 5 x 1/2 / 10 = 1/4, AP75 0, while recall stays 5/10 (per-class AP from the recall key: 0.5)
    with_false = [(_cars([[0, 0, 10, 10]]), _cars([[60, 30, 80, 50], [0, 0, 8, 9]], scores=[0.95, 0.9]))]
    values = _kitti_through_the_task(monkeypatch, with_false)
    assert values["val/map50"] == pytest.approx(0.5)
    assert values["val/map"] == pytest.approx(0.25)
    assert values["val/map75"] == pytest.approx(0.0)
    assert values["val/ap/Car"] == pytest.approx(0.25) and values["val/ap50/Car"] == pytest.approx(0.5)
    assert values["val/mar100"] == pytest.approx(0.5)


def test_kitti_lines_and_drawing():
    pred = {
        "boxes": torch.tensor([[1.0, 2, 30, 40]]),
        "scores": torch.tensor([0.7]),
        "labels": torch.tensor([1]),
    }
    (obj,) = detections_to_kitti(pred, ["Car", "Pedestrian"])
    assert obj.type == "Pedestrian" and obj.score == pytest.approx(0.7) and obj.bbox == (1.0, 2.0, 30.0, 40.0)
    image = np.zeros((50, 60, 3), np.uint8)
    drawn = draw_detections(image, pred, ["Car", "Pedestrian"], score_thresh=0.5)
    assert drawn.shape == image.shape and drawn[2, 15].any() and not image.any()
    assert not draw_detections(image, pred, ["Car", "Pedestrian"], score_thresh=0.8).any()


def _cli_args(data: Path, *extra: str) -> list[str]:
    args = ["-c", str(QUICK_CONFIG), "--data.data_path", str(data), "--data.num_workers", "0"]
    args += ["--data.batch_size", "2", "--data.image_size", "null", "--trainer.enable_progress_bar", "false"]
    return args + TINY_MODEL + list(extra)


def test_cli_fit_fast_dev_run_and_predict_writes_kitti_results(tmp_path, monkeypatch, one_thread):
    from domains.driving.detection.__main__ import main

    data = make_kitti(tmp_path / "kitti", n=8)
    monkeypatch.chdir(tmp_path)
    # a 16-channel FPN (narrow widths: tests/driving/test_python_use_s41.py) builds and runs under fast_dev_run
    sixteen = ["--model.network.init_args.fpn_channels", "16"]
    cli = main(["fit", *_cli_args(data, *sixteen, "--trainer.fast_dev_run", "1")])
    assert cli.trainer.state.finished and cli.trainer.global_step == 1
    assert "val/map50" in cli.trainer.callback_metrics
    assert cli.model.model.detector.backbone.out_channels == 16

    # a real (two-step) fit writes last.ckpt; predict from it: run-time settings given on the command line
    # must win over the checkpoint's hyperparameters
    short = [
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "2",
        "--trainer.limit_val_batches",
        "1",
    ]
    main(["fit", *_cli_args(data, *short)])
    ckpt = tmp_path / "lightning_logs/driving_detection/quick/checkpoints/last.ckpt"
    assert ckpt.is_file()
    out = tmp_path / "pred"
    predict = [
        "--ckpt_path",
        str(ckpt),
        "--model.predict_dir",
        str(out),
        "--model.predict_score_thresh",
        "0.0",
    ]
    cli = main(["predict", *_cli_args(data, *predict, "--model.score_thresh", "0.0")])
    test_ids = {a.image_id for a in cli.datamodule.splits["test"]}
    assert test_ids and {p.stem for p in (out / "data").glob("*.txt")} == test_ids
    for image_id in test_ids:
        lines = (out / "data" / f"{image_id}.txt").read_text().splitlines()
        assert lines and all(len(line.split()) == 16 for line in lines)
        objects = read_kitti_label(out / "data" / f"{image_id}.txt", known_types=None)
        assert all(0 <= o.score <= 1 and o.bbox[2] <= W and o.bbox[3] <= H for o in objects)
        drawn = cv2.imread(str(out / "images" / f"{image_id}.png"))
        assert drawn is not None and drawn.shape == (H, W, 3)

    # test and predict under bf16 autocast (CPU here; the same path a GPU takes)
    bf16 = ["--ckpt_path", str(ckpt), "--trainer.precision", "bf16-mixed", "--model.score_thresh", "0.0"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli = main(["test", *_cli_args(data, *bf16)])
    assert not [w for w in caught if "was trained with data." in str(w.message)]  # the checkpoint's split
    metrics = cli.trainer.callback_metrics
    assert all(torch.isfinite(metrics[k]) for k in ("test/map50", "test/map", "test/ignored_detections"))
    main(["predict", *_cli_args(data, *bf16, "--model.predict_dir", str(tmp_path / "pred_bf16"))])
    assert {p.stem for p in (tmp_path / "pred_bf16" / "data").glob("*.txt")} == test_ids
    # the split drawn with another seed than the checkpoint's: said, since its test images may be training ones
    with pytest.warns(UserWarning, match=r"last\.ckpt was trained with data\.seed 0 \(this command: 1\)"):
        main(["test", *_cli_args(data, "--ckpt_path", str(ckpt), "--data.seed", "1")])
    with pytest.warns(UserWarning, match=r"data\.seed 0 \(this command: 1\): on the same data, this validate"):
        main(["validate", *_cli_args(data, "--ckpt_path", str(ckpt), "--data.seed", "1")])
    # another data set (`last` is the config's latest fit, whatever it read): said, and no split is blamed
    other = make_kitti(tmp_path / "other_kitti", n=8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        main(["test", *_cli_args(other, "--ckpt_path", "last", "--data.seed", "1")])
    said = [str(w.message) for w in caught if "was fitted on other data" in str(w.message)]
    alias = "quick/checkpoints/last.ckpt (`last`: of this config's latest fit, whatever data it read) was fitted"
    assert len(said) == 1 and alias in said[0]
    assert not [w for w in caught if "may hold images the network trained on" in str(w.message)]
    assert f"data.data_path {str(data)!r} (this command: {str(other)!r})" in said[0]

    # your own images, unlabelled, of any size, in nested folders; an unreadable one is skipped and counted
    own = tmp_path / "own"
    (own / "drive_b").mkdir(parents=True)
    cv2.imwrite(str(own / "a.jpg"), np.full((61, 97, 3), 90, np.uint8))
    noise = np.random.default_rng(0).integers(0, 256, (130, 50), dtype=np.uint8)  # grey, fine detail
    cv2.imwrite(str(own / "drive_b" / "b.png"), noise)
    (own / "drive_b" / "broken.png").write_bytes(b"not an image")
    mine = tmp_path / "mine"
    with pytest.warns(
        UserWarning, match=r"1 of 3 images are not predicted: dropped unreadable: 1 .*broken"
    ):
        main(
            [
                "predict",
                *_cli_args(
                    data,
                    *predict[:2],
                    "--data.predict_path",
                    str(own),
                    "--model.predict_dir",
                    str(mine),
                    "--model.predict_score_thresh",
                    "1.0",  # no box drawn: the image is the photo itself
                    "--data.image_size",
                    "[32, 64]",  # the network sees a squeezed copy
                ),
            ]
        )
    assert sorted(p.name for p in (mine / "images").iterdir()) == ["a.png", "b.png"]
    # drawn on the photo itself at its own size, not on the network's squeezed copy nor a KITTI frame of its name
    assert np.array_equal(cv2.imread(str(mine / "images" / "b.png")), cv2.cvtColor(noise, cv2.COLOR_GRAY2BGR))
    assert sorted(p.name for p in (mine / "data").iterdir()) == ["a.txt", "b.txt"]
    # a name in two drives (dashcam layouts: drive_a/000000.png): the path below the folder names both
    (own / "drive_b" / "a.png").write_bytes((own / "drive_b" / "b.png").read_bytes())
    (own / "drive_b" / "broken.png").unlink()
    both = tmp_path / "both"
    main(
        [
            "predict",
            *_cli_args(data, *predict[:2], "--data.predict_path", str(own), "--model.predict_dir", str(both)),
        ]
    )
    assert sorted(p.name for p in (both / "data").iterdir()) == ["a.txt", "b.txt", "drive_b__a.txt"]
    (own / "a.png").write_bytes((own / "drive_b" / "b.png").read_bytes())  # beside a.jpg: one name for two
    with pytest.raises(
        ValueError, match=r"1 image names repeat \(e\.g\. .*own/a\.jpg and .*own/a\.png\); .* rename one"
    ):
        main(["predict", *_cli_args(data, *predict[:2], "--data.predict_path", str(own))])

    # the config writes to predictions/driving_detection; with the folder unset, predict says nothing is written
    with pytest.warns(UserWarning, match=r"--model.predict_dir is not set, so no prediction is written"):
        main(["predict", *_cli_args(data, "--ckpt_path", str(ckpt), "--model.predict_dir", "null")])
    assert not (tmp_path / "predictions").exists()


def test_cli_auxiliary_semantic_loss_needs_and_uses_semantic_maps(tmp_path, monkeypatch, one_thread):
    from domains.driving.detection.__main__ import main

    data = make_kitti(tmp_path / "kitti", n=8, semantic=True)
    monkeypatch.chdir(tmp_path)
    weight = [
        "--model.network.init_args.semantic_classes",
        "12",
        "--model.network.init_args.semantic_loss_weight",
        "0.5",
    ]
    weight += ["--trainer.fast_dev_run", "1"]
    with pytest.raises(ValueError, match="set data.semantic_maps true"):
        main(["fit", *_cli_args(data, *weight)])
    cli = main(["fit", *_cli_args(data, *weight, "--data.semantic_maps", "true")])
    assert cli.trainer.global_step == 1 and cli.model.model.semantic_head is not None
    assert float(cli.trainer.callback_metrics["train/semantic"]) > 0


def test_points_and_boxes_stay_float32_under_bf16_autocast():
    """bfloat16 keeps 8 significant bits: a point grid or boxes decoded in it round to 4 px beyond x = 512."""
    torch.manual_seed(0)
    model = RoadDetector(
        3, "resnet18", None, input_size=(64, 1280), fpn_channels=32, head_convs=1, score_thresh=0.0
    ).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        (pred,) = model([torch.rand(3, 64, 1280)])
        head = model.detector.head([torch.rand(1, 32, 8, 160, dtype=torch.bfloat16)])
    assert pred["boxes"].dtype == torch.float32 and pred["scores"].dtype == torch.float32
    assert all(value.dtype == torch.float32 for value in head.values())
    anchors = model.detector.anchor_generator
    anchors.set_cell_anchors(torch.bfloat16, torch.device("cpu"))
    assert all(cell.dtype == torch.float32 for cell in anchors.cell_anchors)


def test_a_split_without_ground_truth_says_why_its_map_is_minus_one(monkeypatch):
    """torchmetrics gives -1 without ground truth: the run logged map -1 and said nothing."""
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    with pytest.warns(UserWarning, match=r"val: the split holds no ground-truth object of the classes \['Car', "
                      r"'Pedestrian'\], so COCO mAP / mAR are undefined \(logged as -1\)"):  # fmt: skip
        values = _kitti_through_the_task(monkeypatch, [(empty, _cars([[0, 0, 10, 10]], [0.9]))])
    assert values["val/map"] == -1.0


def test_kitti_ground_truth_uses_the_data_modules_class_map(monkeypatch):
    """The evaluation must hand the data module's class_map to the KITTI ground truth: a source type renamed in
    training (Automobile -> Car) had no Car ground truth, and every kitti_* figure vanished."""
    from types import SimpleNamespace

    from domains.driving.formats import ImageAnnotation, ObjectLabel

    boxes = [[20.0, 20.0, 100.0, 80.0], [140.0, 20.0, 220.0, 80.0]]  # in the 128x256 original
    ann = ImageAnnotation("x.png", 256, 128, [ObjectLabel("Automobile", tuple(b)) for b in boxes])
    task, _ = _evaluated_task(monkeypatch, {"000000": ann}, kitti_min_height_scale=0.1)
    task._trainer = SimpleNamespace(datamodule=SimpleNamespace(class_map={"Automobile": "Car"}), sanity_checking=False)
    half = [[v / 2 for v in b] for b in boxes]  # the 64x128 tensor's coordinates
    target = {**_cars(half), "image_id": "000000", "orig_size": (128, 256)}
    task.model = FixedOutputs([_cars(half, [0.9, 0.8])])
    task._evaluation_step(([torch.zeros(3, 64, 128)], [target]), "val")
    with pytest.warns(UserWarning, match="only 2 valid Car"):
        values = task._log_epoch_metrics("val")
    # both found: (2 - 1) / 40 by the devkit's recall sampling; without the class_map no Car ground truth (NaN)
    assert values["val/kitti_moderate/Car"] == pytest.approx(1 / 40)


@pytest.mark.parametrize("train", [False, True])
def test_images_of_another_shape_keep_their_aspect_ratio(train):
    """A 4:3 photo (480x640) is fitted into the 192x640 box at one scale, 0.4, not squashed to 192x640
    (which stretched every car 2.5x sideways). Training with the crop off fits the same way."""
    from domains.driving.detection.data import detection_transforms

    transform = detection_transforms(train, (192, 640), augment=train, crop_prob=0.0, seed=0)
    image = np.zeros((480, 640, 3), np.uint8)
    image[50:250, 100:300] = 255
    out = transform(image=image, bboxes=np.array([[100.0, 50.0, 300.0, 250.0]]), labels=[1])
    assert out["image"].shape[:2] == (192, 256)
    box = np.asarray(out["bboxes"][0])
    if train and box[0] != 40.0:  # the flip fired: x1, x2 mirrored in the 256-wide frame
        box[[0, 2]] = 256 - box[[2, 0]]
    np.testing.assert_allclose(box, [40.0, 20.0, 120.0, 100.0])
    # the synthetic and KITTI frames keep their near-box shapes
    assert transform(image=np.zeros((375, 1242, 3), np.uint8), bboxes=np.zeros((0, 4)), labels=[])["image"].shape[:2] == (192, 636)


def test_predictions_are_drawn_on_a_16_bit_photo_as_the_network_saw_it(tmp_path):
    """The network read a 12-bit photo stretched; the drawing read its high byte: mean 1.6 of 255, black."""
    from domains.driving.detection.predict import original_rgb

    ramp = (np.arange(40 * 60, dtype=np.uint16).reshape(40, 60) % 4096)[..., None].repeat(3, axis=2)
    cv2.imwrite(str(tmp_path / "deep.png"), ramp)
    drawn = original_rgb(torch.zeros(3, 40, 60), {"image_path": str(tmp_path / "deep.png")}, (40, 60))
    assert drawn.shape == (40, 60, 3) and drawn.max() == 255 and drawn.mean() > 100
    gone = original_rgb(torch.full((3, 40, 60), 0.5), {"image_path": str(tmp_path / "gone.png")}, (40, 60))
    assert gone.shape == (40, 60, 3) and int(gone.mean()) in (127, 128)  # the tensor the network saw


def test_the_other_shapes_benchmark_cuts_frames_and_their_labels_alike():
    """benchmarks/other_shapes.py: the 4:3 window moves boxes left by its offset, the 16:9 frame moves them
    down by its top margin and pads the label map with void (its quoted table rests on these shifts)."""
    from benchmarks.other_shapes import cut

    frame = np.zeros((192, 640, 3), np.uint8)
    label = np.ones((192, 640), np.uint8)
    window, window_label, dx, dy = cut("4:3 window 256x192", frame, label, 255)
    assert window.shape == (192, 256, 3) and window_label.shape == (192, 256) and (dx, dy) == (-192, 0)  # (640-256)/2
    tall, tall_label, dx, dy = cut("16:9 frame 640x360", frame, label, 255)
    assert tall.shape == (360, 640, 3) and (dx, dy) == (0, 84)  # (360 - 192) / 2
    assert (tall_label[:84] == 255).all() and (tall_label[84:276] == 1).all() and (tall_label[276:] == 255).all()
    assert (tall[:84] == 128).all()  # grey above


def test_benchmark_table_scales_kitti_heights_by_the_data_and_judges_no_target_of_a_smoke_run():
    """benchmarks/driving_detection.py's table: the KITTI filters' heights as the run scored them (the config's
    null: 12.8 / 20.5 px on the synthetic frames, 25 / 40 on one's own data), and a smoke run judges nothing."""
    from argparse import Namespace

    from benchmarks.driving_detection import markdown

    bins = [{"low": 0.0, "high": 15.0, "n": 3, "recall": 0.5}]
    result = {
        "metrics": {"test/map50": 0.9, "test/map": 0.5}, "config": {"class_names": ["Car"],
        "kitti_min_height_scale": None}, "data": {"data_path": None, "batch_size": 4}, "device": "CPU",
        "steps": 10, "train_images": 40, "n_train": 20, "train_seconds": 60.0, "model_input": (192, 640),
        "n_test": 5, "images_per_s": 1.0, "inference_size": (192, 640), "inference_ms": 100.0,
        "load_average": (0.5, 0.5), "height_recall": [bins],
    }  # fmt: skip
    args = Namespace(budget_minutes=15, precision="32-true", threads=2, test_batches=None, argv=["--budget-minutes", "15"])
    full = markdown(result, args)
    assert "images (by sequence)." in full
    part = markdown(result, Namespace(**{**vars(args), "test_batches": 2}))
    assert "images (by sequence); scored: the first 2 batches (--test-batches)." in part
    assert "keep boxes from 12.8 / 20.5 px" in full and "Smoke run" not in full
    assert "| >= 0.8: met |" in full and "<= 250: met |" in full
    own = markdown({**result, "data": {**result["data"], "data_path": "/data/kitti"}}, args)
    assert "keep boxes from 25.0 / 40.0 px" in own
    smoke = markdown(result, Namespace(**{**vars(args), "budget_minutes": 1}))
    assert "**Smoke run**: 1 of the benchmark's 15 minutes" in smoke and "| >= 0.8: not judged (smoke run) |" in smoke
    assert smoke.rstrip().endswith("Command: `.venv/bin/python benchmarks/driving_detection.py --budget-minutes 15`")
