"""``predict`` writes road-anomaly score maps and overlays at each source image's size, not the network's."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from domains.driving.anomaly.data import AnomalyDataset, pad_collate, segmentation_transforms
from domains.driving.anomaly.predict import score_to_original
from domains.driving.classes import SEMANTIC_CLASSES
from tests.helpers import anomaly_task, quiet_trainer, write_image

# source (H, W) per image: neither matches the network input nor is a multiple of 32
SIZES = {"tall": (97, 61), "wide": (50, 130)}
MSP_MAX = 1.0 - 1.0 / len(SEMANTIC_CLASSES)  # msp = 1 - max softmax lies in [0, 1 - 1/C]


def test_score_to_original_cuts_padding_then_resizes_bilinearly():
    padded = torch.full((3, 3), 1e6)
    padded[:2, :2] = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    assert np.array_equal(score_to_original(padded, (2, 2), (2, 2)), [[0, 1], [2, 3]])
    # half-pixel bilinear 2 -> 4: columns 0, .25, .75, 1 apart; rows 0, .5, 1.5, 2 apart (no padding leaks in)
    up = score_to_original(padded, (4, 4), (2, 2))
    expected = np.add.outer([0.0, 0.5, 1.5, 2.0], [0.0, 0.25, 0.75, 1.0])
    assert up.dtype == np.float32 and np.allclose(up, expected)
    with pytest.raises(ValueError, match="does not fit"):
        score_to_original(padded, (4, 4), (4, 2))


def _smiyc(root):
    for name, (h, w) in SIZES.items():
        write_image(root / "images" / f"{name}.png", width=w, height=h, seed=h)
        (root / "labels_masks").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(root / "labels_masks" / f"{name}.png"), np.zeros((h, w), np.uint8))
    return root


@pytest.mark.parametrize("image_size", [(32, 96), None], ids=["resized", "padded"])
def test_predict_writes_scores_and_overlays_at_the_source_size(tmp_path, image_size):
    root = _smiyc(tmp_path / "data")
    out = tmp_path / "pred"
    torch.manual_seed(0)
    task = anomaly_task(encoder_kwargs={"channels": [4, 8, 16]}, oe_weight=0.0, score="msp")
    task.predict_dir, task.overlay_alpha = str(out), 0.0  # alpha 0: the overlay is the picture it is drawn on
    dataset = AnomalyDataset(root, segmentation_transforms(False, image_size))
    loader = DataLoader(dataset, batch_size=2, collate_fn=pad_collate)
    quiet_trainer().predict(task, loader)

    batch = next(iter(loader))
    network = task.anomaly_map(batch["image"]).numpy()  # the maps at network resolution, as predict saw them
    for i, name in enumerate(batch["name"]):
        h, w = SIZES[name]
        score = np.load(out / f"{name}_score.npy")
        assert score.shape == (h, w) and score.dtype == np.float32 and np.isfinite(score).all()
        assert 0.0 <= score.min() and score.max() <= MSP_MAX + 1e-6
        if image_size is None:  # padded to 97x130, not resized: the written map is the image's own, exactly
            assert network.shape[-2:] == (97, 130)
            alone = task.anomaly_map(batch["image"][i : i + 1, :, :h, :w]).numpy()[0]  # not its batch mates'
            assert np.allclose(score, alone, atol=1e-6)
        else:  # bilinear resizing mixes values: they stay inside the network map's own range
            # fitted into 32x96 keeping the aspect ratio, not squashed: tall 97x61 x 0.33 = 32x20, wide 50x130
            # x 0.64 = 32x83; the batch is padded to the wider
            fitted = {"tall": (32, 20), "wide": (32, 83)}[name]
            assert tuple(batch["unpadded_size"][i]) == fitted and network.shape[-2:] == (32, 83)
            own = task.anomaly_map(batch["image"][i : i + 1, :, : fitted[0], : fitted[1]]).numpy()[0]  # alone
            assert own.min() - 1e-6 <= score.min() and score.max() <= own.max() + 1e-6
        overlay = cv2.imread(str(out / f"{name}_overlay.png"))
        assert overlay.shape == (h, w, 3)
        assert np.array_equal(overlay, cv2.imread(str(root / "images" / f"{name}.png")))  # the source pixels
    with (out / "image_scores.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["name"] for r in rows) == sorted(SIZES)
    # paths relative to the CSV's folder, so the folder can move whole (they were absolute)
    assert all(r["score_npy"] == f"{r['name']}_score.npy" and (out / r["overlay_png"]).is_file() for r in rows)
    assert all(0.0 <= float(r["image_score_msp"]) <= MSP_MAX + 1e-6 for r in rows)


def test_maps_of_a_padded_batch_are_each_images_own():
    """test and predict pad a batch to its largest image: the zero border reached the smaller image's edge."""
    torch.manual_seed(0)
    task = anomaly_task(encoder_kwargs={"channels": [4, 8, 16]}, oe_weight=0.0, score="msp").eval()
    small, large = torch.rand(3, 40, 70), torch.rand(3, 64, 96)
    batch = pad_collate([{"image": small}, {"image": large}])["image"]
    with torch.no_grad():
        logits, maps = task.model.maps_by_size(batch, ["msp", "energy"], [(40, 70), (64, 96)], smoothing=1.0)
        alone_logits, alone = task.model.maps_by_size(small[None], ["msp", "energy"], smoothing=1.0)
    torch.testing.assert_close(logits[0, :, :40, :70], alone_logits[0], rtol=0, atol=1e-6)
    for name in ("msp", "energy"):
        torch.testing.assert_close(maps[name][0, :40, :70], alone[name][0], rtol=0, atol=1e-6)
        assert (maps[name][0, 40:] == 0).all() and (maps[name][0, :, 70:] == 0).all()  # the padding reads 0


def test_a_score_map_cut_short_by_a_failure_leaves_no_file_under_its_name(tmp_path, monkeypatch):
    """np.save wrote straight to <name>_score.npy: a run stopped mid-write left half a map there."""
    from domains.driving.anomaly import predict

    def half_then_fail(file, array):
        with open(file, "wb") as f:
            f.write(b"\x93NUMPY half")
        raise OSError("disk full")

    monkeypatch.setattr(predict.np, "save", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        predict.write_predictions(tmp_path, ["a"], torch.rand(1, 3, 8, 8), torch.rand(1, 8, 8))
    assert list(tmp_path.iterdir()) == []
