"""The anomaly task's test epoch on a stub network with known score maps: hand-known headline metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from domains.driving.classes import SEMANTIC_CLASSES, SEMANTIC_ID
from tests.helpers import anomaly_task, quiet_trainer

C = len(SEMANTIC_CLASSES)
ROAD = SEMANTIC_ID["road"]
H, W = 16, 24


def _stub_features(images, with_outlier=False):
    """Logits read off image channel 0 (1 = "anomalous pixel"), road the top class everywhere.

    Normal pixel: road 10, others 0 -> max_logit score -10, msp (C-1) e^-10 / (...), i.e. about 1e-3.
    Anomalous pixel: road 2, others -10 -> max_logit score -2 (higher: perfect ranking), but msp about
    (C-1) e^-12, LOWER than a normal pixel's: msp ranks every anomaly last, so a headline taken from msp
    instead of the selected score cannot read AP 1 / FPR95 0.
    """
    hot = images[:, 0] > 0.5  # (B, H, W)
    logits = torch.zeros(images.shape[0], C, *images.shape[-2:])
    logits[:, ROAD] = 10.0
    logits = torch.where(hot[:, None], torch.full_like(logits, -10.0), logits)
    logits[:, ROAD] = torch.where(hot, 2.0, 10.0)
    return logits, torch.zeros(images.shape[0], 4, *images.shape[-2:]), None


def _image(anomalous: bool):
    """One frame: row 0 void (label 255); an anomalous frame has a 4x4 anomaly (label 1) and a void row whose
    scores look anomalous too (counted as negatives, they would pull the AP under 1)."""
    image = torch.zeros(3, H, W)
    label = torch.zeros(H, W, dtype=torch.long)
    label[0] = 255
    if anomalous:
        image[0, 6:10, 8:12] = 1.0
        label[6:10, 8:12] = 1
        image[0, 0] = 1.0
    return image, label


def _batches():
    order = [[False, True], [True, False]]  # anomalous frames in both batches, in both positions
    batches = []
    for b, flags in enumerate(order):
        pairs = [_image(f) for f in flags]
        batches.append(
            {
                "image": torch.stack([p[0] for p in pairs]),
                "label": torch.stack([p[1] for p in pairs]),
                "name": [f"b{b}_{i}" for i in range(len(flags))],
            }
        )
    return batches


def test_test_epoch_headline_metrics_come_from_the_selected_score_and_rank_images_right(monkeypatch):
    task = anomaly_task(
        encoder_kwargs={"channels": [4, 8, 16]},
        oe_weight=0.0,
        score="max_logit",
        test_scores=["msp", "max_logit"],
    )
    monkeypatch.setattr(task.model, "features", _stub_features)
    trainer = quiet_trainer()
    trainer.test(task, DataLoader(_batches(), batch_size=None), verbose=False)
    got = {k: float(v) for k, v in trainer.callback_metrics.items()}
    results = task.test_results

    # the pixel counts: 2 anomalies of 16 px; every row 0 is void (4 frames x 24 px)
    sel = results["pixel"]["max_logit"]
    assert sel["num_positive"] == 2 * 16 and sel["num_void"] == 4 * W
    assert sel["num_negative"] == 4 * H * W - 4 * W - 2 * 16
    # the selected score separates anomaly from normal pixels perfectly, void left out
    assert got["test/ap"] == pytest.approx(1.0)
    assert got["test/auroc"] == pytest.approx(1.0)
    assert got["test/fpr95"] == pytest.approx(0.0)
    for key in ("ap", "auroc", "fpr95"):
        assert got[f"test/{key}"] == got[f"test/max_logit/{key}"], key
    # msp ranks every anomaly below every normal pixel: AP = 32 / all pixels, AUROC 0, FPR95 1
    msp = results["pixel"]["msp"]
    assert msp["ap"] == pytest.approx(32 / (4 * H * W - 4 * W))
    assert msp["auroc"] == pytest.approx(0.0) and msp["fpr95"] == pytest.approx(1.0)
    assert got["test/msp/ap"] == pytest.approx(msp["ap"])
    # image level: frames with the anomaly score -2 at their top quantile, the others -10
    assert results["image_scores"]["targets"] == [0, 1, 1, 0]
    assert results["image_scores"]["max_logit"] == pytest.approx([-10.0, -2.0, -2.0, -10.0], abs=1e-4)
    assert got["test/image_auroc"] == pytest.approx(1.0)
    assert got["test/max_logit/image_auroc"] == pytest.approx(1.0)
    # components at the best-F1 threshold: each blob found exactly
    assert got["test/sIoU_gt"] == pytest.approx(1.0) and got["test/PPV"] == pytest.approx(1.0)
    assert got["test/mean_F1"] == pytest.approx(1.0)


def test_a_test_set_without_anomaly_pixels_says_why_its_pixel_metrics_are_nan(monkeypatch):
    """AP, AUROC and FPR95 came out NaN with no reason: the accumulators' own warnings were silenced."""
    task = anomaly_task(
        encoder_kwargs={"channels": [4, 8, 16]}, oe_weight=0.0, score="max_logit", test_scores=["max_logit"]
    )
    monkeypatch.setattr(task.model, "features", _stub_features)
    batches = _batches()
    for batch in batches:
        batch["label"][batch["label"] == 1] = 255  # a 0 / 255 mask: no anomaly left
    normal = 4 * H * W - 4 * W - 2 * 16
    with pytest.warns(UserWarning, match=rf"undefined \(NaN\): the test set has 0 anomaly pixels \(label 1\), "
                      rf"{normal} normal \(0\) and {4 * W + 32} void"):  # fmt: skip
        quiet_trainer().test(task, DataLoader(batches, batch_size=None), verbose=False)


def test_test_scores_pixels_at_each_label_masks_own_size(monkeypatch, tmp_path):
    """The metrics pooled the network-size masks (nearest-resized): a constant predictor's AP was 0.027 where
    the data's anomaly share is 0.023, and small objects shrank or vanished. Scores now go back to each mask's
    own pixels (bilinear, as predict writes them) and the mask is read from its file."""

    batches = _batches()
    for batch in batches:
        native = [np.kron(label, np.ones((2, 2), np.int64)).astype(np.uint8) for label in batch["label"].numpy()]
        batch |= {"native_label": native, "orig_size": [(2 * H, 2 * W)] * 2, "unpadded_size": [(H, W)] * 2}
    for at_label_size, positives, void in ((True, 2 * 64, 4 * 2 * 2 * W), (False, 2 * 16, 4 * W)):
        task = anomaly_task(
            encoder_kwargs={"channels": [4, 8, 16]}, oe_weight=0.0, score="max_logit",
            test_scores=["max_logit"], score_at_label_size=at_label_size,
        )  # fmt: skip
        monkeypatch.setattr(task.model, "features", _stub_features)
        trainer = quiet_trainer()
        trainer.test(task, DataLoader(batches, batch_size=None), verbose=False)
        sel = task.test_results["pixel"]["max_logit"]
        assert (sel["num_positive"], sel["num_void"]) == (positives, void), at_label_size
        # bilinear edges stay between the classes (anomaly >= -5.5, normal <= -8): the ranking is still perfect
        assert float(trainer.callback_metrics["test/ap"]) == pytest.approx(1.0)
        assert float(trainer.callback_metrics["test/fpr95"]) == pytest.approx(0.0)
        assert task.test_results["component"]["mean_F1"] == pytest.approx(1.0)


def test_a_batch_mixing_resized_and_own_size_images_scores_every_image_once(monkeypatch, tmp_path):
    """The first version added a mixed batch's resized images alone: its images already at their own size went
    missing from the pixel metrics."""

    batches = _batches()
    for batch in batches:
        label = batch["label"][0].numpy()  # item 0 comes from a 2x mask; item 1 is at its own size
        batch |= {"native_label": [np.kron(label, np.ones((2, 2), np.int64)).astype(np.uint8), None],
                  "orig_size": [(2 * H, 2 * W), (H, W)], "unpadded_size": [(H, W)] * 2}  # fmt: skip
    task = anomaly_task(encoder_kwargs={"channels": [4, 8, 16]}, oe_weight=0.0, score="max_logit",
                        test_scores=["max_logit"])  # fmt: skip
    monkeypatch.setattr(task.model, "features", _stub_features)
    quiet_trainer().test(task, DataLoader(batches, batch_size=None), verbose=False)
    sel = task.test_results["pixel"]["max_logit"]
    # batch 0: item 1's anomaly at its own size (16 px); batch 1: item 0's at 2x (64 px). Void: row 0 of each
    # image, 2 x 2W px from a 2x file and W px at own size, in both batches
    assert (sel["num_positive"], sel["num_void"]) == (16 + 64, 2 * (4 * W + W))
    assert sel["num_negative"] == 2 * (4 * H * W + H * W) - 80 - 10 * W


def test_label_size_maps_cut_the_batch_padding_and_resize_bilinearly(monkeypatch, tmp_path):
    """The map goes back to the mask's pixels as predict writes it: padding (beyond unpadded_size) cut off first,
    then a bilinear resize (align_corners false): native row 12 reads source row 5.75, row 11 row 5.25."""
    import torch.nn.functional as F

    from domains.driving.anomaly import task as task_module

    batches = _batches()
    for batch in batches:
        native = [np.kron(label, np.ones((2, 2), np.int64)).astype(np.uint8) for label in batch["label"].numpy()]
        batch |= {"image": F.pad(batch["image"], (0, 8)), "label": F.pad(batch["label"], (0, 8), value=255),
                  "native_label": native, "orig_size": [(2 * H, 2 * W)] * 2, "unpadded_size": [(H, W)] * 2}  # fmt: skip
    kept = {}
    original = task_module.component_metrics
    monkeypatch.setattr(task_module, "component_metrics",
                        lambda maps, **kw: kept.update({name: m for m, _, name in maps}) or original(maps, **kw))  # fmt: skip
    task = anomaly_task(encoder_kwargs={"channels": [4, 8, 16]}, oe_weight=0.0, score="max_logit",
                        test_scores=["max_logit"])  # fmt: skip
    monkeypatch.setattr(task.model, "features", _stub_features)
    quiet_trainer().test(task, DataLoader(batches, batch_size=None), verbose=False)
    m = kept["b0_1"]  # the anomaly at network rows 6-9, columns 8-11
    assert m.shape == (2 * H, 2 * W)
    assert m[14, 18] == pytest.approx(-2.0)  # inside
    assert m[12, 18] == pytest.approx(0.25 * -10 + 0.75 * -2)  # -4
    assert m[11, 18] == pytest.approx(0.75 * -10 + 0.25 * -2)  # -8


def test_each_image_score_reads_its_own_road_over_its_own_rows_and_columns(monkeypatch):
    """The road region is found once per image: each image must get its own, cut to (H, W) of that image.
    Image 0: road everywhere, an anomaly on it at columns 20-23 (beyond the first 16). Image 1: road only left of
    column 12, its hot pixels off the road, at columns 14-17."""
    building = SEMANTIC_ID["building"]

    def features(images, with_outlier=False):
        logits, decoder, outlier = _stub_features(images)
        off_road, hot = images[:, 1] > 0.5, images[:, 0] > 0.5
        # off the road a building, sure of itself (score -20) or, where hot, unsure (-1.5: anomalous)
        logits = torch.where(off_road[:, None], torch.full_like(logits, -10.0), logits)
        logits[:, building] = torch.where(off_road, torch.where(hot, 1.5, 20.0), logits[:, building])
        return logits, decoder, outlier

    task = anomaly_task(encoder_kwargs={"channels": [4, 8, 16]}, oe_weight=0.0, score="max_logit")
    monkeypatch.setattr(task.model, "features", features)
    images, labels = torch.zeros(2, 3, H, W), torch.zeros(2, H, W, dtype=torch.long)
    images[0, 0, 6:10, 20:24] = 1.0
    labels[0, 6:10, 20:24] = 1
    images[1, 1, :, 12:] = 1.0  # not road
    images[1, 0, 6:10, 14:18] = 1.0  # hot, but off the road
    batch = {"image": images, "label": labels, "name": ["on_road", "off_road"]}
    trainer = quiet_trainer()
    trainer.test(task, DataLoader([batch], batch_size=None), verbose=False)
    scores = task.test_results["image_scores"]["max_logit"]
    assert scores[0] == pytest.approx(-2.0, abs=1e-4)  # its anomaly, on its road
    assert scores[1] < -5  # nothing anomalous on its own road
    # analyze gives the same image score (the app's path), one image at a time
    assert task.analyze(images[1:])["image_score"][0] == pytest.approx(scores[1], abs=1e-4)
