"""Images with no objects (an empty KITTI label file, a frame holding only DontCare regions, a COCO image with no
annotations) are ordinary in road data: they must reach Mask R-CNN as empty targets in fit, test and predict,
not crash the loader.

Tiny 128x64 frames in tmp_path, as in test_instances.py.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pytest
import torch

from domains.driving.instances.data import InstanceDataset, read_coco_instances, read_kitti_instances
from tests.driving.layouts import KITTI_LINE, write_instance_kitti
from tests.driving.test_instances import _cli_args
from tests.helpers import write_image

W, H = 128, 64


def _empty_kitti(root: Path, n: int = 2) -> Path:
    """``n`` frames with an empty label file and an all-zero instance map (no object, no ignore region)."""
    for sub in ("image_2", "label_2", "instance"):
        (root / "training" / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        write_image(root / f"training/image_2/{i:06d}.png", width=W, height=H, seed=i)
        (root / f"training/label_2/{i:06d}.txt").write_text("")
        cv2.imwrite(str(root / f"training/instance/{i:06d}.png"), np.zeros((H, W), np.uint16))
    return root


def _only_dontcare(root: Path, stem: str) -> None:
    """Turn frame ``stem`` into one whose only label line is a DontCare region painted at rows 0-9, cols 0-19."""
    ids = np.zeros((H, W), np.uint16)
    ids[0:10, 0:20] = 1
    cv2.imwrite(str(root / f"training/instance/{stem}.png"), ids)
    (root / f"training/label_2/{stem}.txt").write_text(KITTI_LINE.format("DontCare", 0, 0, 20, 10) + "\n")


def _assert_empty_target(target: dict, size: tuple[int, int]) -> None:
    assert target["masks"].shape == (0, *size) and target["masks"].dtype == torch.uint8
    assert target["boxes"].shape == (0, 4) and target["boxes"].dtype == torch.float32
    assert target["labels"].shape == (0,) and target["labels"].dtype == torch.int64
    assert target["ignore_mask"].shape == size and target["ignore_mask"].dtype == torch.bool


@pytest.mark.parametrize(
    "transform, size",
    [
        (None, (H, W)),
        (A.Compose([A.HorizontalFlip(p=1.0)], seed=0), (H, W)),
        (A.Compose([A.Resize(32, 64)], seed=0), (32, 64)),  # the size comes from the moved ignore mask
    ],
)
def test_empty_label_file_gives_empty_targets_of_the_right_shapes(tmp_path, transform, size):
    (ann,) = read_kitti_instances(_empty_kitti(tmp_path, n=1))
    assert ann.objects == []
    image, target = InstanceDataset([ann], ["Car", "Pedestrian"], transform)[0]
    assert image.shape == (3, *size)
    _assert_empty_target(target, size)
    assert not target["ignore_mask"].any()


def test_dontcare_only_frame_keeps_its_ignore_region_and_no_object(tmp_path):
    root = _empty_kitti(tmp_path, n=1)
    _only_dontcare(root, "000000")
    (ann,) = read_kitti_instances(root)
    assert [o.type for o in ann.objects] == ["DontCare"]
    flip = A.Compose([A.HorizontalFlip(p=1.0)], seed=0)
    _, target = InstanceDataset([ann], ["Car"], flip)[0]
    _assert_empty_target(target, (H, W))
    assert int(target["ignore_mask"].sum()) == 200  # 10 x 20 px
    assert bool(target["ignore_mask"][0, W - 1]) and not bool(target["ignore_mask"][0, 0])  # flipped right


def test_coco_image_without_annotations_gives_an_empty_target(tmp_path):
    write_image(tmp_path / "img.png", width=W, height=H)
    data = {
        "images": [{"id": 1, "file_name": "img.png", "width": W, "height": H}],
        "annotations": [],
        "categories": [{"id": 1, "name": "Car"}],
    }
    (tmp_path / "instances.json").write_text(json.dumps(data))
    (ann,) = read_coco_instances(tmp_path / "instances.json", strict=True)
    _, target = InstanceDataset([ann], ["Car"])[0]
    _assert_empty_target(target, (H, W))


def test_cli_fit_test_and_predict_run_on_frames_without_objects(tmp_path, monkeypatch, one_thread):
    """Every batch mixes a painted frame with an empty one (fit); test and predict see only empty frames."""
    from domains.driving.instances.__main__ import main

    mixed = write_instance_kitti(tmp_path / "mixed", n=4, size=(H, W), sequences=True)
    for stem in ("000001", "000003"):  # one frame of each two-frame sequence: empty label file, zero map
        (mixed / f"training/label_2/{stem}.txt").write_text("")
        cv2.imwrite(str(mixed / f"training/instance/{stem}.png"), np.zeros((H, W), np.uint16))
    empty = _empty_kitti(tmp_path / "empty", n=2)
    _only_dontcare(empty, "000001")
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = main(
            ["fit", *_cli_args(mixed, "--trainer.fast_dev_run", "1", "--data.split_fractions", "[0.5,0.5,0]")]
        )
        assert fit.trainer.global_step == 1 and torch.isfinite(fit.trainer.callback_metrics["train/loss"])
        only_test = ["--data.split_fractions", "[0,0,1]", "--model.score_thresh", "0.0"]
        test = main(["test", "--ckpt_path", "none", *_cli_args(empty, *only_test)])
        # no ground truth at all: COCO AP is undefined (-1), not a crash
        assert float(test.trainer.callback_metrics["test/mask_map50"]) == -1.0
        out = tmp_path / "pred"
        main(["predict", "--ckpt_path", "none", *_cli_args(empty, *only_test, "--model.predict_dir", str(out))])
    assert sorted(p.stem for p in (out / "instances").glob("*.png")) == ["000000", "000001"]
    ids = cv2.imread(str(out / "instances/000000.png"), cv2.IMREAD_UNCHANGED)
    assert ids.dtype == np.uint16 and ids.shape == (H, W)
    # your own unlabelled images (no label_2/, no instance maps), one of another size
    own = tmp_path / "own"
    own.mkdir()
    cv2.imwrite(str(own / "dashcam_1.png"), np.full((H, W, 3), 120, np.uint8))
    cv2.imwrite(str(own / "dashcam_2.jpg"), np.full((H + 7, W - 5, 3), 60, np.uint8))
    mine = tmp_path / "mine"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main(["predict", "--ckpt_path", "none", *_cli_args(empty, "--data.predict_path", str(own), "--model.predict_dir", str(mine))])
    assert sorted(p.stem for p in (mine / "instances").glob("*.png")) == ["dashcam_1", "dashcam_2"]
    ids = cv2.imread(str(mine / "instances/dashcam_2.png"), cv2.IMREAD_UNCHANGED)
    assert ids.shape == (H + 7, W - 5)  # at the image's own size
