"""What a detector trained on one's own data gives out: the best-F1 operating point fitted at validation (kept
in the checkpoint, logged, used by test / predict / export), a COCO results file on COCO data with the source
JSON's ids, a data.image_size the network would shrink back refused, and the export sidecar's preprocessing.
Tiny painted scenes in tmp_path."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from faster_coco_eval import COCO, COCOeval_faster
from torchmetrics.detection import MeanAveragePrecision

from domains.driving.detection.data import DetectionDataset
from domains.driving.detection.export import export_detection, preprocess
from domains.driving.detection.predict import COCO_RESULTS, KittiPredictionWriter
from domains.driving.detection.task import DetectionTask
from domains.driving.formats import read_coco, read_kitti_label
from tests.driving.test_detection import _cli_args, _evaluated_task, make_kitti
from tests.helpers import FixedOutputs, detection_task

pytestmark = pytest.mark.usefixtures("one_thread")

#: category ids of the COCO sets below: neither 1..C nor in class order, as in a real JSON
CATEGORY_IDS = {"Car": 3, "Pedestrian": 7, "Cyclist": 9}


def make_coco(root: Path, n: int = 8, crowds: bool = True) -> Path:
    """:func:`make_kitti`'s scenes as a COCO JSON ``root/ann.json`` with image ids 100, 101, ... and the
    categories of :data:`CATEGORY_IDS` (DontCare boxes: crowd regions of category 3; none without
    ``crowds``)."""
    kitti = make_kitti(root / "kitti", n=n)
    images, annotations = [], []
    for i, path in enumerate(sorted((kitti / "training/image_2").glob("*.png"))):
        height, width = cv2.imread(str(path)).shape[:2]
        images.append(
            {
                "id": 100 + i,
                "file_name": f"kitti/training/image_2/{path.name}",
                "width": width,
                "height": height,
            }
        )
        for obj in read_kitti_label(kitti / "training/label_2" / f"{path.stem}.txt", known_types=None):
            crowd = obj.type == "DontCare"
            if crowd and not crowds:
                continue
            left, top, right, bottom = obj.bbox
            annotations.append(
                {
                    "id": len(annotations) + 1, "image_id": 100 + i,
                    "bbox": [left, top, right - left, bottom - top],
                    "category_id": 3 if crowd else CATEGORY_IDS[obj.type], "iscrowd": int(crowd),
                    "area": (right - left) * (bottom - top),
                }
            )  # fmt: skip
    categories = [{"id": cid, "name": name} for name, cid in CATEGORY_IDS.items()]
    source = root / "ann.json"
    source.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return source


def _cars(boxes, scores=None) -> dict:
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    out = {"boxes": boxes, "labels": torch.zeros(len(boxes), dtype=torch.int64)}
    if scores is not None:
        out["scores"] = torch.tensor(scores, dtype=torch.float32)
    return out


# ------------------------------------------------------------------------------------- 1: operating point


def test_validation_fits_the_best_f1_threshold_and_test_and_predict_use_it(monkeypatch):
    # two cars found at 0.9 and 0.8, false positives at 0.4 and 0.35, and one at 0.95 wholly inside DontCare
    # (left out, the shipped weights' rule). Pooled F1: 2*2 / (2*2 + 2) = 0.667 from 0.35 down, 0.8 at 0.4,
    # 1.0 above 0.4: the first threshold of the 0.05 grid above it is 0.45
    task, logged = _evaluated_task(monkeypatch)
    assert (
        math.isnan(float(task.operating_threshold)) and task.predict_score_thresh == 0.5
    )  # nothing fitted yet
    target = {
        **_cars([[10, 10, 30, 30], [50, 10, 70, 30]]),
        "ignore_boxes": torch.tensor([[100.0, 30, 128, 64]]),
        "image_id": "a",
        "orig_size": (64, 128),
    }
    pred = _cars(
        [[10, 10, 30, 30], [50, 10, 70, 30], [80, 40, 95, 60], [5, 40, 20, 60], [104, 34, 120, 60]],
        [0.9, 0.8, 0.4, 0.35, 0.95],
    )
    task.model = FixedOutputs([pred])
    task._evaluation_step(([torch.zeros(3, 64, 128)], [target]), "val")
    values = task._log_epoch_metrics("val")
    assert values["val/best_f1"] == pytest.approx(1.0) and values["val/best_f1_threshold"] == pytest.approx(
        0.45
    )
    assert logged["val/best_f1_threshold"] == pytest.approx(0.45)
    assert (values["val/best_f1_precision"], values["val/best_f1_recall"]) == (1.0, 1.0)
    # kept in the checkpoint's state dict, and what predict draws at unless told otherwise
    assert float(task.state_dict()["operating_threshold"]) == pytest.approx(0.45)
    assert task.predict_score_thresh == pytest.approx(0.45)
    writer = KittiPredictionWriter("unused", task.class_names)
    writer.on_predict_start(SimpleNamespace(datamodule=None), task)
    assert writer.score_thresh == pytest.approx(0.45)

    # test: F1 at that threshold; an explicit predict_score_thresh wins (F1 at 0.05: 2 TP, 2 FP)
    task._evaluation_step(([torch.zeros(3, 64, 128)], [target]), "test")
    values = task._log_epoch_metrics("test")
    assert values["test/f1"] == pytest.approx(1.0) and values["test/f1_threshold"] == pytest.approx(0.45)
    task.predict_score_thresh = 0.05
    task._evaluation_step(([torch.zeros(3, 64, 128)], [target]), "test")
    assert task._log_epoch_metrics("test")["test/f1"] == pytest.approx(2 / 3)
    assert task.operating_threshold == pytest.approx(0.45)  # test fits nothing


def test_a_checkpoint_without_an_operating_point_loads_and_draws_at_half(monkeypatch):
    """Checkpoints written before the buffer existed lack its key: NaN is filled in, no strict-load error."""
    task, _ = _evaluated_task(monkeypatch)
    state = {k: v for k, v in task.state_dict().items() if k != "operating_threshold"}
    checkpoint = {"state_dict": state, "suite_task": {"task": "domains.driving.detection.task.DetectionTask"}}
    checkpoint["suite_task"]["model"] = task.describe_model()
    task.operating_threshold.fill_(0.3)
    task.on_load_checkpoint(checkpoint)
    task.load_state_dict(checkpoint["state_dict"], strict=True)
    assert math.isnan(float(task.operating_threshold)) and task.predict_score_thresh == 0.5


# ----------------------------------------------------------------------------------- 2: COCO results file


def test_coco_results_carry_the_source_ids_and_score_as_the_tasks_test_map(tmp_path, monkeypatch):
    """detections.json loads with COCO.loadRes and COCOeval against the source JSON gives the task's test mAP
    (no crowd regions here: the task makes DontCare a crowd of every class, a JSON's iscrowd is of one)."""
    source = make_coco(tmp_path, n=3, crowds=False)
    records = read_coco(source)
    dataset = DetectionDataset(records, list(CATEGORY_IDS))
    images, targets = zip(*(dataset[i] for i in range(len(dataset))))
    # per image: its boxes found, shifted by 0, 2 and 6 px (mAP over IoU 0.5:0.95 below 1), a miss and a false
    # positive of another class
    preds = []
    for k, target in enumerate(targets):
        boxes = target["boxes"][:-1] + 2.0 * k
        boxes = torch.cat([boxes, torch.tensor([[1.0, 1.0, 20.0, 20.0]])])
        scores = torch.linspace(0.9, 0.3, len(boxes))
        labels = torch.cat([target["labels"][:-1], torch.tensor([2])])
        preds.append({"boxes": boxes, "scores": scores, "labels": labels})
    task = detection_task(
        backbone="tiny_cnn", backbone_kwargs={"width": 8}, class_names=list(CATEGORY_IDS),
        input_size=(64, 128), fpn_channels=32, head_convs=1, kitti_difficulties=[],
    )  # fmt: skip
    monkeypatch.setattr(DetectionTask, "_annotations", lambda self: {a.image_id: a for a in records})
    for name in ("log_dict", "log", "print"):
        monkeypatch.setattr(task, name, lambda *args, **kwargs: None)
    task.model = FixedOutputs(preds)
    task._evaluation_step((list(images), list(targets)), "test")
    test_map = task._log_epoch_metrics("test")["test/map"]
    assert 0.1 < test_map < 0.9

    out = tmp_path / "pred"
    writer = KittiPredictionWriter(str(out), task.class_names)
    datamodule = SimpleNamespace(data_format="coco", data_path=str(source), predict_path=None)
    trainer = SimpleNamespace(datamodule=datamodule, is_global_zero=True)
    writer.on_predict_start(trainer, task)
    task._trainer = SimpleNamespace(predicting=True)  # image_path() asks the data module's records
    predicted = task.predict_step((list(images), list(targets)), 0)
    for image, pred in zip(images, predicted):
        writer.write_image(image, pred)
    writer.on_predict_epoch_end(trainer, task)

    results = json.loads((out / COCO_RESULTS).read_text())
    assert {r["image_id"] for r in results} == {100, 101, 102}
    labels = torch.cat([p["labels"] for p in preds]).tolist()
    assert sorted(r["category_id"] for r in results) == sorted(
        CATEGORY_IDS[task.class_names[i]] for i in labels
    )
    first = next(r for r in results if r["image_id"] == 100)
    box = preds[0]["boxes"][0].tolist()
    assert first["bbox"] == pytest.approx([box[0], box[1], box[2] - box[0], box[3] - box[1]])
    gt = COCO(str(source))
    evaluation = COCOeval_faster(gt, gt.loadRes(str(out / COCO_RESULTS)), "bbox")
    # torchmetrics evaluates at float32 thresholds (torch.linspace): a recall of 3 of 5 cars falls just below
    # float32(0.6), which COCOeval's float64 0.6 counts (0.2554 instead of 0.2550 here)
    defaults = MeanAveragePrecision()
    evaluation.params.iouThrs = np.array(defaults.iou_thresholds)
    evaluation.params.recThrs = np.array(defaults.rec_thresholds)
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(test_map, abs=1e-6)


def test_other_formats_and_own_photos_get_no_coco_results(tmp_path):
    writer = KittiPredictionWriter(str(tmp_path), ["Car"])
    module = SimpleNamespace(predict_score_thresh=0.3)
    for datamodule in (
        SimpleNamespace(data_format="kitti", data_path=None, predict_path=None),
        SimpleNamespace(data_format="coco", data_path="gone.json", predict_path=str(tmp_path)),
    ):
        writer.on_predict_start(SimpleNamespace(datamodule=datamodule), module)
        assert writer.coco_ids is None
    assert writer.score_thresh == 0.3  # the module's, read when predicting starts


def test_cli_fit_on_coco_keeps_the_operating_point_and_predict_writes_coco_results(tmp_path, monkeypatch):
    from domains.driving.detection.__main__ import main

    source = make_coco(tmp_path, n=8)
    monkeypatch.chdir(tmp_path)
    coco = ["--data.data_format", "coco", "--model.score_thresh", "0.0"]
    short = [
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "2",
        "--trainer.limit_val_batches",
        "1",
    ]
    fit = main(["fit", *_cli_args(source, *coco, *short)])
    threshold = float(fit.trainer.callback_metrics["val/best_f1_threshold"])
    assert "val/best_f1" in fit.trainer.callback_metrics
    ckpt = tmp_path / "lightning_logs/driving_detection/quick/checkpoints/last.ckpt"
    saved = torch.load(ckpt, weights_only=True)["state_dict"]["operating_threshold"]
    assert float(saved) == pytest.approx(threshold)

    tested = main(["test", *_cli_args(source, *coco, "--ckpt_path", str(ckpt))])
    assert float(tested.trainer.callback_metrics["test/f1_threshold"]) == pytest.approx(threshold)
    assert "test/f1" in tested.trainer.callback_metrics

    out = tmp_path / "pred"
    cli = main(
        ["predict", *_cli_args(source, *coco, "--ckpt_path", str(ckpt), "--model.predict_dir", str(out))]
    )
    (writer,) = [c for c in cli.trainer.callbacks if isinstance(c, KittiPredictionWriter)]
    assert writer.score_thresh == pytest.approx(threshold)  # drawn at the fitted point (config: null)
    by_file = {image["file_name"]: image["id"] for image in json.loads(source.read_text())["images"]}
    test = {Path(a.image_path).relative_to(tmp_path).as_posix() for a in cli.datamodule.splits["test"]}
    results = json.loads((out / COCO_RESULTS).read_text())
    assert results and {r["image_id"] for r in results} == {by_file[file] for file in test}
    assert {r["category_id"] for r in results} <= set(CATEGORY_IDS.values())
    gt = COCO(str(source))
    assert len(gt.loadRes(str(out / COCO_RESULTS)).getAnnIds()) == len(results)


# ------------------------------------------------------------------------- 3: data.image_size vs input_size


def test_an_image_size_the_network_would_shrink_back_is_refused_at_fit(monkeypatch):
    task, _ = _evaluated_task(monkeypatch)  # input_size (64, 128)
    refused = (
        r"--data.image_size \[128, 256\] is larger than the network's input_size \[64, 128\].*"
        r"Set --model.network.init_args.input_size \[128, 256\] too"
    )
    with pytest.raises(ValueError, match=refused):
        task.check_image_size((128, 256), "fit")
    with pytest.warns(
        UserWarning, match=r"would shrink every image back into \[64, 128\], the size this checkpoint"
    ):
        task.check_image_size((64, 256), "predict")
    for fine in (None, (64, 128), (32, 64), (128, 64)):  # null: native; smaller: upsampled; the box turned
        task.check_image_size(fine, "fit")


def test_cli_fit_refuses_an_image_size_above_input_size(tmp_path, monkeypatch):
    from domains.driving.detection.__main__ import main

    data = make_kitti(tmp_path / "kitti", n=8)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"larger than the network's input_size \[64, 128\]"):
        main(["fit", *_cli_args(data, "--data.image_size", "[128, 256]", "--trainer.fast_dev_run", "1")])


# ---------------------------------------------------------------------------------- 4: the export sidecar


def test_sidecar_names_dynamic_axes_resize_orientation_and_the_operating_point(tmp_path, monkeypatch):
    task, _ = _evaluated_task(monkeypatch)
    task = task.eval()
    # never validated: the sidecar's operating_point is None (checked on the export of tests/driving/
    # test_export.py::test_detector_graph_plus_torchvision_postprocessing_reproduces_the_detector)
    task.operating_threshold.fill_(0.45)
    export_detection(task, tmp_path / "b")
    sidecar = json.loads((tmp_path / "b" / "detector.json").read_text())
    assert sidecar["inputs"] == {"image": ["batch", 3, "height", "width"]}
    assert sidecar["operating_point"]["score_thresh"] == 0.45 and sidecar["score_thresh"] == 0.05
    assert "EXIF orientation" in sidecar["orientation"]
    assert "align_corners false" in sidecar["resize"]["interpolation"]
    # the written rule is the code's: a landscape, a portrait and a small image of the 64x128 box
    for h, w in ((100, 300), (300, 100), (20, 30)):
        _, (size,), _ = preprocess([torch.rand(3, h, w)], sidecar)
        scale = min(sidecar["input_size"][0] / h, sidecar["input_size"][1] / w)
        assert tuple(size) == (math.floor(h * scale), math.floor(w * scale))
