"""Defects a newcomer audit found in the detection / instance path: class names with spaces in the text outputs,
truncated photos in a predict folder, a YOLO yaml without val, class names matching nothing, a 0 in image_size,
the shipped operating point and DontCare, sequence maps with spaces, instance mAP -1, a KITTI file with a BOM,
portrait photos scaled twice, and a Mac copy's hidden files. Tiny files in tmp_path."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from domains.driving.common import find_sequence_groups, predict_images, read_label_map
from domains.driving.detection.data import DetectionDataModule, detection_transforms
from domains.driving.detection.export import preprocess
from domains.driving.detection.model import RoadDetector
from domains.driving.detection.predict import KittiPredictionWriter
from domains.driving.formats import LabelFormatError, LabelWarning, read_kitti_dir, read_kitti_label
from domains.driving.instances.predict import InstancePredictionWriter
from tests.driving.layouts import KITTI_LINE, TINY_MASK_RCNN, write_kitti
from tests.helpers import write_image

# ------------------------------------------------------------------------------- 1: class names with spaces


def test_class_names_with_spaces_are_written_with_underscores_in_the_text_outputs(tmp_path):
    """'traffic light' (COCO) made predict's KITTI writer raise after the first batch, and the instance list an
    8-field line."""
    names = ["car", "traffic light"]
    pred = {
        "boxes": torch.tensor([[3.0, 2.0, 9.0, 8.0]]),
        "scores": torch.tensor([0.9]),
        "labels": torch.tensor([1]),
    }
    with pytest.warns(LabelWarning, match="'traffic light' is written as 'traffic_light'"):
        KittiPredictionWriter(str(tmp_path / "det"), names).write_image(
            torch.rand(3, 20, 30), {**pred, "image_id": "x", "image_path": None, "orig_size": (20, 30)}
        )
    (obj,) = read_kitti_label(tmp_path / "det" / "data" / "x.txt", known_types=None)
    assert obj.type == "traffic_light" and obj.score == pytest.approx(0.9)

    masks = torch.zeros(1, 20, 30, dtype=torch.bool)
    masks[0, 2:8, 3:9] = True
    with pytest.warns(LabelWarning, match="'traffic light' is written as 'traffic_light'"):
        InstancePredictionWriter(str(tmp_path / "inst"), names).write_image(
            torch.rand(3, 20, 30), {**pred, "masks": masks, "image_id": "x", "image_path": None}
        )
    line = (tmp_path / "inst" / "instances" / "x.txt").read_text().split()
    assert len(line) == 7 and line[1] == "traffic_light"


def test_a_label_file_itself_refuses_a_type_name_with_spaces(tmp_path):
    """Predict types its detections with underscores; a label file written from data (a COCO -> KITTI
    conversion) is not renamed behind the user's back: the converter's summary would still name 'traffic light'."""
    from domains.driving.formats import ObjectLabel, write_kitti_label

    with pytest.raises(ValueError, match="cannot be empty or contain spaces: 'traffic light'"):
        write_kitti_label(tmp_path / "x.txt", [ObjectLabel(type="traffic light", bbox=(1.0, 1.0, 5.0, 5.0))])


# ------------------------------------------------------------------------------- 2: truncated photos


def test_predict_skips_photos_whose_data_is_cut_short_naming_them(tmp_path):
    """A readable header with truncated data passed the listing and stopped predict at that photo."""
    write_image(tmp_path / "a_good.png", seed=1)
    write_image(tmp_path / "c_good.jpg", seed=2)
    noise = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    png, jpg = (cv2.imencode(suffix, noise)[1].tobytes() for suffix in (".png", ".jpg"))
    (tmp_path / "b_cut.png").write_bytes(png[:300])
    (tmp_path / "d_cut.jpg").write_bytes(jpg[: len(jpg) // 2])  # OpenCV would decode it half grey
    with pytest.warns(
        LabelWarning, match=r"2 of 4 images are not predicted: dropped unreadable: 2 .*b_cut.*d_cut"
    ):
        found = predict_images(tmp_path)
    assert [path.name for path, *_ in found] == ["a_good.png", "c_good.jpg"]


def test_predict_leaves_out_what_an_earlier_predict_run_wrote_into_the_folder(tmp_path, monkeypatch):
    """A predict_dir inside --data.predict_path: the next run predicted its drawn images as photos."""
    write_image(tmp_path / "a.png", seed=1)
    write_image(tmp_path / "out" / "images" / "a.png", seed=2)  # drawn by the earlier run
    (tmp_path / "out" / "data").mkdir()
    (tmp_path / "out" / "data" / "a.txt").write_text("Car ...")
    # a listed path outside the manifest's folder, or gone since, hides nothing
    (tmp_path / "out" / ".predictions.json").write_text('["images/a.png", "data/a.txt", "../a.png", "gone.png"]')
    with pytest.warns(LabelWarning, match=r"2 file\(s\) an earlier predict run wrote there") as caught:
        found = predict_images(tmp_path)
    assert [path.name for path, *_ in found] == ["a.png"] and found[0][0].parent == tmp_path
    assert not [w for w in caught if "hidden" in str(w.message)]
    # a relative --data.predict_path: the same files left out (paths compared resolved)
    monkeypatch.chdir(tmp_path)
    with pytest.warns(LabelWarning, match=r"2 file\(s\) an earlier predict run"):
        assert [path.name for path, *_ in predict_images(Path("."))] == ["a.png"]
    # a manifest that does not parse lists nothing, and stops nothing
    (tmp_path / "out" / ".predictions.json").write_text("{not json")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its hidden manifest is counted
        assert sorted(path.name for path, *_ in predict_images(tmp_path)) == ["a.png", "a.png"]  # read again


def test_predict_skips_an_image_over_pillows_decompression_bomb_limit_naming_it(tmp_path, monkeypatch):
    """Pillow's DecompressionBombError (a panorama of 180+ megapixels) is no OSError: it escaped the header
    read as a bare traceback and stopped the whole run. The limit is lowered here so a 64x48 image passes it."""
    write_image(tmp_path / "a_small.png", 8, 8, seed=1)
    write_image(tmp_path / "b_huge.png", seed=2)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # an error above twice this: 64 x 48 = 3072 pixels
    with pytest.warns(LabelWarning, match=r"1 of 2 images are not predicted: .*b_huge.*decompression bomb"):
        found = predict_images(tmp_path)
    assert [path.name for path, *_ in found] == ["a_small.png"]
    with pytest.raises(LabelFormatError, match=r"b_huge\.png: cannot decode label mask .*decompression bomb"):
        read_label_map(tmp_path / "b_huge.png")


# ------------------------------------------------------------------------------- 3: YOLO yaml without val


def _yolo(root, splits: dict[str, int], names=("Car",)) -> None:
    for split, n in splits.items():
        for i in range(n):
            write_image(root / "images" / split / f"{split}{i}.png", seed=i)
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split / f"{split}{i}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    entries = {split: f"images/{split}" for split in splits}
    (root / "data.yaml").write_text(yaml.safe_dump({**entries, "names": list(names)}))


def test_a_yolo_yaml_with_train_and_test_keeps_its_test_and_cuts_val_out_of_train(tmp_path):
    """The yaml's test entry was ignored and test scored images cut out of the user's training set."""
    _yolo(tmp_path, {"train": 6, "test": 2})
    data = DetectionDataModule("yolo", str(tmp_path / "data.yaml"), ["Car"], {}, num_workers=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no sequence map
        data.setup("fit")
    ids = {name: [a.image_id for a in items] for name, items in data.splits.items()}
    assert ids["test"] == ["test0", "test1"]
    assert (
        sorted(ids["train"] + ids["val"]) == [f"train{i}" for i in range(6)] and ids["val"] and ids["train"]
    )
    hparams = {"seed": 0, "split_fractions": [0.7, 0.15, 0.15]}
    assert data.split_settings(hparams, "test") == {} and data.split_settings(hparams, "validate") == hparams


def test_a_yolo_yaml_without_test_says_what_adds_one(tmp_path):
    """The hint said to set --data.split_fractions, which moves nothing in a yaml naming its own splits."""
    _yolo(tmp_path, {"train": 2, "val": 1})
    data = DetectionDataModule("yolo", str(tmp_path / "data.yaml"), ["Car"], {}, num_workers=0)
    with pytest.raises(
        ValueError, match=r"test split, which is empty .* names its own splits.*add a 'test:' entry"
    ):
        data.setup("test")


def test_a_yolo_yaml_whose_val_is_its_train_folder_is_warned_and_its_splits_counted(tmp_path, caplog):
    """A coco8-style yaml (``val: images/train``) validated on the training images without a word, and a yaml
    naming its own splits printed no count of them."""
    _yolo(tmp_path, {"train": 3, "test": 1})
    (tmp_path / "data.yaml").write_text(
        yaml.safe_dump({"train": "images/train", "val": "images/train", "test": "images/test", "names": ["Car"]})
    )
    data = DetectionDataModule("yolo", str(tmp_path / "data.yaml"), ["Car"], {}, num_workers=0)
    leak = r"data\.yaml: 3 of the val split's 3 images are also in train"
    with pytest.warns(LabelWarning, match=leak) as caught, caplog.at_level("INFO"):
        data.setup("fit")
    assert not [w for w in caught if "test split" in str(w.message)]  # test has its own image
    assert "data.yaml: its own splits: train 3 images, val 3 images, test 1 images" in caplog.text
    # images named alike in two folders are two images: nothing shared; a val folder that is part of train is
    other = tmp_path / "other"
    _yolo(other, {"train": 3, "val": 1})
    write_image(other / "images" / "val" / "train0.png", seed=7)  # named as a training image, another one
    (other / "labels" / "val" / "train0.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*also in")
        DetectionDataModule("yolo", str(other / "data.yaml"), ["Car"], {}, num_workers=0).setup("fit")
    (other / "data.yaml").write_text(
        yaml.safe_dump({"train": ["images/train", "images/val"], "val": "images/val", "names": ["Car"]})
    )
    data = DetectionDataModule("yolo", str(other / "data.yaml"), ["Car"], {}, num_workers=0)
    with pytest.warns(LabelWarning, match=r"2 of the val split's 2 images are also in train") as caught:
        data.setup("fit")  # train: 3 + 2 images
    assert len([w for w in caught if "also in" in str(w.message)]) == 1


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"- train\n- val\n", r"data\.yaml: dataset yaml must be a mapping"),  # a list: AttributeError
        (b"names: [Caf\xe9]\n", r"data\.yaml: not a UTF-8 text file"),  # cp1252: an unnamed UnicodeDecodeError
        (b"train: images\nval: [images\n", r"data\.yaml:3: invalid YAML"),  # the line YAML names (the stream end)
    ],
)
def test_a_malformed_yolo_yaml_is_an_error_naming_it(tmp_path, content, expected):
    """The data module read the yaml itself to see its splits: a list was a bare traceback, and neither the
    encoding error nor a YAML error named the file's line."""
    _yolo(tmp_path, {"train": 2, "val": 1})
    (tmp_path / "data.yaml").write_bytes(content)
    data = DetectionDataModule("yolo", str(tmp_path / "data.yaml"), ["Car"], {}, num_workers=0)
    with pytest.raises(LabelFormatError, match=expected):
        data.setup("fit")


# ------------------------------------------------------- 4: class names matching nothing; 5: image_size


def test_class_names_matching_none_of_the_objects_are_refused_naming_both(tmp_path):
    """YOLO's lower-case names against the default class_names: fit trained on no object, with a warning."""
    _yolo(tmp_path, {"train": 2, "val": 1}, names=["car"])
    data = DetectionDataModule("yolo", str(tmp_path / "data.yaml"), num_workers=0)  # Car, Pedestrian, Cyclist
    expected = r"--data.class_names \['Car', 'Pedestrian', 'Cyclist'\].*the data's types are car \(3\)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LabelWarning)  # each dataset's count of what it dropped
        with pytest.raises(ValueError, match=expected):
            data.setup("fit")


@pytest.mark.parametrize("size", [(0, 0), (96, 0), (-1, 64)])
def test_an_image_size_with_a_zero_is_refused(size):
    """A 0 fitted every image to 1x1 pixel and went on."""
    with pytest.raises(ValueError, match=r"--data.image_size must be \[height, width\], both > 0"):
        DetectionDataModule("kitti", None, image_size=size)


# ------------------------------------------------------------------------- 6: operating point and DontCare


def test_the_shipped_operating_point_drops_detections_on_dontcare_as_the_evaluation_does():
    """A detection inside a DontCare region counted as a false positive in the card's best-F1 threshold."""
    from types import SimpleNamespace

    from apps.ship_weights import _detection_boxes
    from domains.driving.detection.operating_point import best_f1_threshold

    pred = {
        "boxes": torch.tensor([[10.0, 10.0, 90.0, 50.0], [200.0, 5.0, 230.0, 20.0]]),
        "scores": torch.tensor([0.9, 0.3]),
        "labels": torch.tensor([0, 0]),
    }
    target = {  # a tensor half the original size: ground truth and DontCare scaled by 2 like the detections
        "boxes": torch.tensor([[5.0, 5.0, 45.0, 25.0]]),
        "labels": torch.tensor([0]),
        "ignore_boxes": torch.tensor([[97.5, 0.0, 120.0, 12.5]]),
        "image_id": "000000",
        "orig_size": (128, 256),
    }
    from domains.driving.detection.task import DetectionTask

    task = SimpleNamespace(
        ignore_overlap=0.5, eval=lambda: None, predict_original=lambda images, targets: [dict(pred)]
    )
    task.scored_original = lambda images, targets: DetectionTask.scored_original(task, images, targets)  # the task's rule
    preds, targets = _detection_boxes(task, [([torch.zeros(3, 64, 128)], [target])])
    assert preds[0]["scores"].tolist() == [pytest.approx(0.9)] and targets[0]["boxes"].tolist() == [
        [10, 10, 90, 50]
    ]
    assert best_f1_threshold(preds, targets)["f1"] == 1.0


# ------------------------------------------------------------------------------ 7: sequence maps with spaces


def test_a_tab_separated_sequence_map_lists_ids_with_spaces(tmp_path):
    (tmp_path / "sequences.txt").write_text("# id<TAB>drive\nmy photo 1\tdrive a\nmy photo 2\t drive_b\n")
    assert find_sequence_groups(tmp_path, ["my photo 1", "my photo 2"]) == ["drive a", "drive_b"]
    (tmp_path / "sequences.txt").write_text("000001 drive_a\n000002, drive_b\n")  # as before
    assert find_sequence_groups(tmp_path, ["000001", "000002"]) == ["drive_a", "drive_b"]


# ------------------------------------------------------------------------------- 8: instance mAP -1


def test_an_instance_split_without_ground_truth_says_why_its_map_is_minus_one(monkeypatch):
    from domains.driving.instances.model import RoadInstanceSegmenter
    from domains.driving.instances.task import InstanceTask

    torch.manual_seed(0)
    task = InstanceTask(
        network=RoadInstanceSegmenter(3, **TINY_MASK_RCNN), class_names=["Car", "Pedestrian", "Cyclist"]
    )
    monkeypatch.setattr(task, "log", lambda *a, **k: None)
    monkeypatch.setattr(task, "log_dict", lambda *a, **k: None)
    target = {
        "masks": torch.zeros(0, 64, 128, dtype=torch.uint8),
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.int64),
        "ignore_mask": torch.zeros(64, 128, dtype=torch.bool),
    }
    with torch.no_grad():
        task.eval()._evaluation_step(([torch.rand(3, 64, 128)], [target]), "val")
    with pytest.warns(UserWarning, match=r"val: the split holds no ground-truth object .* \(logged as -1\)"):
        values = task._log_epoch_metrics("val")
    assert values["val/mask_map"] == -1.0


# ------------------------------------------------------------------------------------ 9: a BOM


def test_a_kitti_label_file_with_a_byte_order_mark_keeps_its_first_object(tmp_path):
    path = tmp_path / "000000.txt"
    path.write_text(KITTI_LINE.format("Car", 1, 2, 30, 20) + "\n", encoding="utf-8-sig")
    assert [o.type for o in read_kitti_label(path)] == ["Car"]


# --------------------------------------------------------------------------- 10: portrait photos scaled twice


def test_a_portrait_photo_fitted_by_the_data_module_is_not_scaled_again():
    """torchvision's transform sent a fitted portrait photo's width to min_size (1.5x more), so predict and the
    exported graph's preprocessing (which fits the photo itself) saw different images."""
    model = RoadDetector(
        3, "tiny_cnn", {"width": 8}, input_size=(64, 128), fpn_channels=32, head_convs=1
    ).eval()
    photo = np.random.default_rng(0).integers(0, 255, (90, 60, 3), dtype=np.uint8)
    fitted = detection_transforms(False, (64, 128))(image=photo, bboxes=np.zeros((0, 4)), labels=np.zeros(0))
    fitted = torch.from_numpy(fitted["image"].transpose(2, 0, 1).copy()).float() / 255
    assert fitted.shape[-2:] == (64, 43)
    batch, _ = model.detector.transform([fitted])
    assert batch.image_sizes == [(64, 43)]  # as the data module fitted it (was (95, 64))
    t = model.detector.transform
    meta = {"input_size": [64, 128], "min_size": 64, "max_size": 128, "size_divisible": 32,
            "image_mean": t.image_mean, "image_std": t.image_std}  # fmt: skip
    _, sizes, _ = preprocess([torch.from_numpy(photo.transpose(2, 0, 1).copy()).float() / 255], meta)
    assert sizes == [(64, 42)]  # the export path fits the photo into the same box (floor, not round)


@pytest.mark.parametrize(
    "size, box",
    [((192, 640), (192, 640)), ((375, 1242), (192, 640)), ((192, 636), (192, 640)), ((96, 96), (192, 640)),
     ((500, 200), (640, 192))],
)  # fmt: skip
def test_images_lying_as_the_box_get_exactly_torchvisions_input(size, box):
    """The synthetic 640x192 frames and KITTI's 1242x375 reach the network as before (benchmark figures
    depend on it)."""
    model = RoadDetector(3, "tiny_cnn", {"width": 8}, input_size=box, fpn_channels=32, head_convs=1).eval()
    t = model.detector.transform
    plain = GeneralizedRCNNTransform(t.min_size, t.max_size, t.image_mean, t.image_std).eval()
    image = torch.rand(3, *size)
    ours, theirs = t([image])[0], plain([image])[0]
    assert ours.image_sizes == theirs.image_sizes and torch.equal(ours.tensors, theirs.tensors)


# ------------------------------------------------------------------------------------ 11: hidden files


def test_a_mac_copys_hidden_files_are_left_out_of_a_kitti_folder(tmp_path):
    write_kitti(tmp_path, n=2, semantic=False)
    split = tmp_path / "training"
    for folder in ("image_2", "label_2"):
        (split / folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (split / "image_2" / "._000000.png").write_bytes(b"\x00\x05\x16\x07 resource fork")
    (split / "label_2" / "._000000.txt").write_bytes(b"\x00\x05\x16\x07 resource fork")
    assert [a.image_id for a in read_kitti_dir(tmp_path)] == ["000000", "000001"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert [path.name for path, *_ in predict_images(split / "image_2")] == ["000000.png", "000001.png"]
    # no unreadable image counted; the fork is counted as a hidden file, not read
    assert [str(w.message).split(":")[1] for w in caught] == [" 1 hidden file left out (._000000.png)"]


def test_fit_into_box_scales_a_portrait_training_target_too():
    from domains.driving.detection.model import RoadDetector
    model = RoadDetector(3, "tiny_cnn", {"width": 8}, input_size=(64, 128), fpn_channels=32, head_convs=1).train()
    target = {"boxes": torch.tensor([[0.0, 0.0, 60.0, 90.0]]), "labels": torch.tensor([1])}
    batch, targets = model.detector.transform([torch.rand(3, 90, 60)], [target])
    assert batch.image_sizes == [(64, 42)]
    torch.testing.assert_close(targets[0]["boxes"], torch.tensor([[0.0, 0.0, 42.0, 64.0]]))


def test_instance_segmenter_does_not_scale_a_fitted_portrait_photo_again():
    from domains.driving.instances.model import RoadInstanceSegmenter
    from tests.driving.layouts import TINY_MASK_RCNN
    model = RoadInstanceSegmenter(3, **{**TINY_MASK_RCNN, "input_size": (64, 128)}).eval()
    batch, _ = model.segmenter.transform([torch.rand(3, 64, 43)])
    assert batch.image_sizes == [(64, 43)]


def test_yolo_train_test_yaml_cuts_the_val_share(tmp_path):
    from domains.driving.detection.data import DetectionDataModule
    _yolo(tmp_path, {"train": 6, "test": 2})
    data = DetectionDataModule("yolo", str(tmp_path / "data.yaml"), ["Car"], {}, num_workers=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data.setup("fit")
    assert (len(data.splits["train"]), len(data.splits["val"])) == (5, 1)


def test_class_names_found_in_one_split_only_are_accepted(tmp_path):
    from domains.driving.detection.data import DetectionDataModule
    _yolo(tmp_path, {"train": 2, "val": 1}, names=["Car", "Bus"])
    (tmp_path / "labels" / "val" / "val0.txt").write_text("1 0.5 0.5 0.2 0.2\n")  # a Bus only
    data = DetectionDataModule("yolo", str(tmp_path / "data.yaml"), ["Car"], {}, num_workers=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data.setup("fit")  # must not raise
    assert data.datasets["train"].objects == 2 and data.datasets["val"].objects == 0


def test_a_sequence_map_with_a_bom_keeps_its_first_id(tmp_path):
    from domains.driving.common import find_sequence_groups
    (tmp_path / "sequences.txt").write_text("000001 drive_a\n000002 drive_b\n", encoding="utf-8-sig")
    assert find_sequence_groups(tmp_path, ["000001", "000002"]) == ["drive_a", "drive_b"]


@pytest.mark.parametrize("name", ["", "Car\t", "traffic\tlight"])
def test_write_kitti_label_refuses_empty_and_tabbed_type_names(tmp_path, name):
    from domains.driving.formats import ObjectLabel, write_kitti_label
    with pytest.raises(ValueError, match="cannot be empty or contain spaces"):
        write_kitti_label(tmp_path / "x.txt", [ObjectLabel(type=name, bbox=(1.0, 1.0, 5.0, 5.0))])


def test_detection_boxes_stop_after_the_given_batches():
    from types import SimpleNamespace

    from apps.ship_weights import _detection_boxes
    from domains.driving.detection.task import DetectionTask
    pred = {"boxes": torch.tensor([[1.0, 1.0, 5.0, 5.0]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([0])}
    target = {"boxes": torch.tensor([[1.0, 1.0, 5.0, 5.0]]), "labels": torch.tensor([0]), "image_id": "a",
              "orig_size": (8, 8)}
    task = SimpleNamespace(ignore_overlap=0.5, eval=lambda: None,
                           predict_original=lambda images, targets: [dict(pred) for _ in targets])
    task.scored_original = lambda i, t: DetectionTask.scored_original(task, i, t)
    loader = [([torch.zeros(3, 8, 8)], [target])] * 3
    preds, targets = _detection_boxes(task, loader, batches=2)
    assert len(preds) == len(targets) == 2


def test_kitti_type_name_joins_any_whitespace_with_one_underscore():
    from domains.driving.formats import kitti_type_name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert kitti_type_name("traffic  light") == "traffic_light"
        assert kitti_type_name("traffic\tlight") == "traffic_light"


def test_a_data_folder_with_a_macs_copy_of_its_json_reads_the_json_and_counts_the_copy(tmp_path):
    from domains.driving.common import data_source
    from shared.files import HiddenFilesWarning

    (tmp_path / "instances.json").write_text("{}")
    (tmp_path / "._instances.json").write_bytes(b"\x00\x05\x16\x07 resource fork")
    with pytest.warns(HiddenFilesWarning, match=r"1 hidden file left out \(\._instances\.json\)"):
        assert data_source(tmp_path, ("*.json",)) == tmp_path / "instances.json"


def test_the_unknown_class_note_names_its_split(caplog):
    """Identical 'DetectionDataset: ... Truck: 1' lines, one per split, could not be told apart."""
    import logging

    from domains.driving.formats import ImageAnnotation, ObjectLabel

    objects = [ObjectLabel(t, (0, 0, 10, 10)) for t in ("Car", "Truck", "Truck")]
    dm = DetectionDataModule("kitti", None, ["Car"], num_workers=0)
    with caplog.at_level(logging.INFO):
        val = dm.make_dataset("val", [ImageAnnotation("a.png", 64, 32, objects)])
    assert val.dropped == {"Truck": 2}
    (note,) = [r.getMessage() for r in caplog.records if "not in class_names" in r.getMessage()]
    assert note.startswith("DetectionDataset (val split): ") and note.endswith("Truck: 2")


def test_test_images_the_checkpoint_trained_on_are_warned_of(tmp_path):
    """Images added since the fit move the sequence split's cut: the checkpoint's training images can land in
    test with the seed unchanged. Its data state names the images it trained on."""
    from types import SimpleNamespace

    from pytorch_lightning.trainer.states import TrainerFn

    root = write_kitti(tmp_path / "kitti", n=8, semantic=False)
    fitted = DetectionDataModule("kitti", str(root), ["Car"], num_workers=0)
    fitted.setup("fit")
    state = fitted.state_dict()
    trained = {record.image_id for record in fitted.splits["train"]}
    assert len(state["train_group_digests"]) == len(trained)

    # images added (here 16), or another seed as below, move the split's cut
    grown = DetectionDataModule("kitti", str(write_kitti(root, n=24, semantic=False)), ["Car"], num_workers=0, seed=2)
    grown.setup("test")
    leaked = sorted(trained & {record.image_id for record in grown.splits["test"]})
    assert leaked  # the case the check is for
    grown.trainer = SimpleNamespace(state=SimpleNamespace(fn=TrainerFn.TESTING))
    said = rf"{len(leaked)} of the \d+ images of this test split were in the checkpoint's training split \({leaked[0]}"
    with pytest.warns(UserWarning, match=said):
        grown.load_state_dict(state)
