"""The driving demo's instance work without Streamlit: masks kept at the analysis size, boxes and areas in the
photo's pixels, the upscaled id map numbered as ``predict`` numbers it, and the text list in its format."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from apps import demo_models as dm

NAMES = ["Car", "Pedestrian", "Cyclist"]


def _pred(size=(8, 16)) -> dict:
    """Three rectangles at an 8x16 analysis size; the second (highest score) overlaps the first."""
    masks = np.zeros((3, *size), bool)
    masks[0, 1:5, 2:8] = True
    masks[1, 3:7, 6:12] = True
    masks[2, 0:2, 13:16] = True
    return {
        "boxes": np.array([[2.0, 1.0, 8.0, 5.0], [6.0, 3.0, 12.0, 7.0], [13.0, 0.0, 16.0, 2.0]]),
        "scores": np.array([0.6, 0.9, 0.3], np.float32),
        "labels": np.array([0, 1, 0]),
        "areas": masks.reshape(3, -1).sum(1).astype(np.float64),
        "masks": masks,
    }


def test_instance_ids_number_by_score_and_upscale_each_mask_to_its_exact_rectangle():
    pred = _pred()
    small, order = dm.instance_ids(pred, (8, 16))
    assert order == [1, 0, 2]  # id 1 = the highest score
    assert small[3, 6] == 1 and small[2, 6] == 2 and small[0, 14] == 3  # the higher score owns the overlap
    big, big_order = dm.instance_ids(pred, (32, 64))
    assert big_order == order and big.dtype == np.uint16
    # bilinear per mask, cut at 0.5: each rectangle scaled by 4 is the scaled rectangle with its corner pixels
    # rounded off (0.625 x 0.625 < 0.5 there), and nothing else moves
    exact = np.kron(small, np.ones((4, 4), np.uint16))
    differ = {tuple(int(v) for v in d) for d in np.argwhere(big != exact)}
    # id 1's four corners (the one at (12, 24) shows id 2 beneath), id 2's three not under id 1, id 3's one
    # corner off the image's border (the border replicates: no ramp there)
    assert differ == {(12, 24), (12, 47), (27, 24), (27, 47), (4, 8), (4, 31), (19, 8), (7, 52)}
    assert big[12, 24] == 2 and big[13, 25] == 1
    odd, _ = dm.instance_ids(pred, (20, 37))  # any size: every id is still there, in place
    assert set(np.unique(odd)) == {0, 1, 2, 3} and odd[-1, 0] == 0 and odd[0, -1] == 3


def test_the_downloads_are_what_the_prediction_writer_writes(tmp_path):
    """Same numbering, same text list, same uint16 PNG as ``InstancePredictionWriter`` (at one size)."""
    from domains.driving.instances.predict import InstancePredictionWriter, instance_list

    pred = _pred()
    ids, order = dm.instance_ids(pred, (8, 16))
    writer = InstancePredictionWriter(str(tmp_path), NAMES)
    writer.score_thresh = 0.0  # as a task predicting at 0 sets it when predicting starts
    tensors = {k: torch.as_tensor(v) for k, v in pred.items() if k != "areas"}
    writer.write_image(torch.rand(3, 8, 16), {**tensors, "image_id": "x", "image_path": None})
    # the demo's numbering (dm.instance_ids) is the writer's: the same list in the same order
    assert instance_list(pred, order, NAMES) == (tmp_path / "instances" / "x.txt").read_text()
    assert instance_list(pred, order, NAMES).splitlines()[0] == "1 Pedestrian 0.9000 6.0 3.0 12.0 7.0"
    png = cv2.imdecode(np.frombuffer(dm.id_map_png(ids), np.uint8), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(
        png, cv2.imread(str(tmp_path / "instances" / "x.png"), cv2.IMREAD_UNCHANGED)
    )
    with pytest.raises(ValueError, match="uint16"):
        dm.id_map_png(ids.astype(np.int32))


def test_segment_instances_keeps_masks_small_and_maps_boxes_and_areas_to_the_photo(demo_env):
    task = dm.load_task("driving_instances", demo_env["checkpoints"] / "driving_instances.ckpt")
    assert task.model.postprocess_module().score_thresh == pytest.approx(0.05)  # the slider filters
    photo = np.random.default_rng(0).integers(0, 255, (600, 2000, 3), dtype=np.uint8)
    pred = dm.segment_instances(task, photo)
    assert pred["masks"].dtype == bool and pred["masks"].shape[1:] == (38, 128)  # the network's 128-px input
    n = len(pred["scores"])
    assert n > 0 and pred["boxes"].shape == (n, 4) and pred["labels"].shape == (n,)
    assert (pred["boxes"][:, [0, 2]] <= 2000).all() and (pred["boxes"][:, [1, 3]] <= 600).all()
    assert pred["boxes"][:, 2].max() > 128  # in the photo's pixels, not the analysis size's
    scale = 600 * 2000 / (38 * 128)
    np.testing.assert_allclose(pred["areas"], pred["masks"].reshape(n, -1).sum(1) * scale)
    assert (pred["scores"] >= 0.05).all()


def test_segment_instances_of_a_photo_without_objects(demo_env, monkeypatch):
    import torch

    from domains.driving.detection import predict

    task = dm.load_task("driving_instances", demo_env["checkpoints"] / "driving_instances.ckpt")
    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long),
             "masks": torch.zeros(0, 38, 128)}  # fmt: skip
    monkeypatch.setattr(predict, "detect", lambda model, image: empty)
    pred = dm.segment_instances(task, np.zeros((600, 2000, 3), np.uint8))
    assert pred["masks"].shape == (0, 38, 128) and pred["areas"].shape == (0,) and pred["boxes"].shape == (0, 4)
    ids, order = dm.instance_ids(pred, (600, 2000))
    assert order == [] and ids.shape == (600, 2000) and not ids.any()
