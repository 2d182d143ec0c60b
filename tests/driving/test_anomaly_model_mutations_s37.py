"""Anomaly model and task lines that no test pinned (a mutation audit changed each and every test still passed):
the outlier-exposure part of the training loss, the input normalisation, the ``both`` objective's mean of two
logits, the calibrated energy's bias, the calibration's class means and eval mode, the image-level target and
AUROC of the test epoch, and uint8 input to ``analyze``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

import domains.driving.anomaly.task as anomaly_task_module
from domains.driving.anomaly.model import AnomalySegmenter
from domains.driving.anomaly.outliers import OUTLIER_LABEL, outlier_bce
from domains.driving.anomaly.scores import outlier_prob
from shared.backbones import IMAGENET_MEAN, IMAGENET_STD
from tests.helpers import anomaly_task

TINY = {"encoder_kwargs": {"channels": [8, 16, 32, 64]}}


# ------------------------------------------------------------------------------------------- training loss
def _oe_step(task, monkeypatch):
    """One training step with pasted objects (``oe_prob`` 1): the returned loss, the logged terms and the pasted
    batch the step trained on."""
    pasted, logged = {}, {}
    paste = anomaly_task_module.paste_outliers_batch

    def recording_paste(*args, **kwargs):
        images, masks, count = paste(*args, **kwargs)
        pasted.update(images=images, masks=masks, count=count)
        return images, masks, count

    monkeypatch.setattr(anomaly_task_module, "paste_outliers_batch", recording_paste)
    monkeypatch.setattr(task, "log", lambda name, value, **_: logged.__setitem__(name, float(value)))
    torch.manual_seed(0)  # the paste's generator is seeded from torch's initial seed
    g = torch.Generator().manual_seed(0)
    batch = {"image": torch.rand(2, 3, 64, 64, generator=g), "mask": torch.zeros(2, 64, 64, dtype=torch.long)}
    loss = task.training_step(batch, 0)
    return float(loss), logged, pasted


def test_the_outlier_exposure_loss_is_ce_plus_the_weighted_mean_of_the_two_objectives(monkeypatch):
    """``both`` trains the head's logit and the calibrated energy on the pasted objects: the loss is
    ``ce + oe_weight * oe``, ``oe`` the MEAN of the two balanced BCE terms, recomputed here from the pasted batch
    the step saw; a larger ``oe_weight`` adds exactly its difference times ``oe``."""
    torch.manual_seed(0)
    task = anomaly_task(**TINY, oe_objective="both", oe_weight=0.5, oe_prob=1.0)
    loss, logged, pasted = _oe_step(task, monkeypatch)
    outlier = pasted["masks"] == OUTLIER_LABEL
    assert pasted["count"] > 0 and bool(outlier.any())
    with torch.no_grad():  # train mode as the step ran (batch norms on the batch's statistics)
        logits, _, head = task.model.features(pasted["images"], with_outlier=True)
        target = pasted["masks"].masked_fill(outlier, 255)
        ce = F.cross_entropy(logits, target, ignore_index=255)
        inlier = target != 255
        bce_head = outlier_bce(head[:, 0], outlier, inlier, hard_fraction=0.5)
        bce_energy = outlier_bce(task.model.energy_logit(logits), outlier, inlier, hard_fraction=0.5)
    oe = 0.5 * (float(bce_head) + float(bce_energy))
    assert logged["train/ce"] == pytest.approx(float(ce), rel=1e-5)
    assert logged["train/oe"] == pytest.approx(oe, rel=1e-5)
    assert loss == pytest.approx(float(ce) + 0.5 * oe, rel=1e-5) and logged["train/loss"] == pytest.approx(loss)
    assert oe > 0.1  # a term large enough that dropping or unweighting it shows

    task.oe_weight = 2.0  # the same step again (same paste, same weights): the loss moves by 1.5 * oe
    loss2, logged2, _ = _oe_step(task, monkeypatch)
    assert logged2["train/oe"] == pytest.approx(oe, rel=1e-5)
    assert loss2 - loss == pytest.approx(1.5 * oe, rel=1e-4)


# ------------------------------------------------------------------------------------------------ model
def test_the_model_feeds_imagenet_normalised_images_to_the_segmenter():
    """Images in [0, 1] are normalised with the ImageNet mean and std before the U-Net (64x64: no padding)."""
    model = AnomalySegmenter(**TINY).eval()
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        got, want = model(x), model.segmenter((x - mean) / std)
    assert torch.allclose(got, want, atol=1e-5)


def test_the_both_objective_averages_the_head_and_the_calibrated_energy():
    """``both``: the outlier logit is 0.5 * (head + a * E + b). Uniform zero logits of C classes have energy
    -log C; a = softplus(log(e - 1)) = 1, b = 0.5, head 2: 0.5 * (2 - log C + 0.5)."""
    model = AnomalySegmenter(**TINY, num_classes=5, oe_objective="both").eval()
    with torch.no_grad():
        model.oe_scale_raw.fill_(math.log(math.e - 1))
        model.oe_bias.fill_(0.5)
    z = model.outlier_logit(torch.zeros(1, 5, 4, 4), torch.full((1, 1, 4, 4), 2.0))
    want = 0.5 * (2.0 + (-math.log(5) + 0.5))  # 0.4453
    assert z.shape == (1, 4, 4)
    assert torch.allclose(z, torch.full((1, 4, 4), want), atol=1e-6)


def test_outlier_prob_of_the_calibrated_energy_hand_value():
    """Without a head: sigmoid(a * E + b); zero logits of 3 classes (E = -log 3), a = 1, b = 2 -> 0.7112."""
    p = outlier_prob(torch.zeros(1, 3, 1, 1), {"oe_scale": torch.tensor(1.0), "oe_bias": torch.tensor(2.0)})
    assert float(p) == pytest.approx(1 / (1 + math.exp(math.log(3) - 2)), abs=1e-6)
    assert float(p) == pytest.approx(0.7112, abs=1e-4)


def test_calibration_class_means_are_the_eval_mode_feature_means_by_true_class():
    """The Mahalanobis class means are the means (not sums) of the decoder features by ground-truth class, from
    the model in EVAL mode (batch norms on their running statistics, which calibration leaves alone), even when
    the model was training; its mode is restored after. A BatchNorm encoder (the U-Net encoder's instance norms
    read the same in both modes); 2 x 32 x 64 px: under max_feature_pixels, all kept."""
    model = AnomalySegmenter(encoder="tiny_cnn", encoder_kwargs={"width": 8}, num_classes=3).train()
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 32, 64, generator=g)
    masks = torch.randint(0, 2, (2, 32, 64), generator=g)  # classes 0 and 1; class 2 never seen
    masks[:, 0] = 255  # void row: left out
    norms = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    assert norms
    model.calibrate([{"image": images, "mask": masks}])
    assert model.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in norms.items())
    model.eval()
    with torch.no_grad():
        feats = model.features(images)[1].permute(0, 2, 3, 1)
    for c in (0, 1):
        want = feats[masks == c].double().mean(0).float()
        assert torch.allclose(model.feat_mean[c], want, rtol=1e-4, atol=1e-5), c
    assert model.feat_valid.tolist() == [True, True, False]


# ------------------------------------------------------------------------------------------- test epoch
def test_a_normal_image_with_a_void_band_has_image_target_0():
    """The image-level target is "holds an anomaly pixel" (label 1): void (255) is not an anomaly."""
    task = anomaly_task(**TINY, oe_weight=0.0, component_metrics=False)
    task.on_test_epoch_start()
    label = torch.zeros(2, 32, 32, dtype=torch.long)
    label[:, :4] = 255  # both: a void band
    label[1, 10:14, 10:14] = 1  # the second: an anomaly too
    batch = {"image": torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)), "label": label,
             "name": ["normal", "anomalous"]}  # fmt: skip
    with torch.no_grad():
        task.test_step(batch, 0)
    assert task._image_targets == [0, 1]


def test_image_auroc_reads_only_the_order_of_60_distinct_image_scores(monkeypatch):
    """60 images, the 10 anomalous ones scored highest: AUROC 1 (sklearn's on the scores). The scores' ranks go
    up to 59; torchmetrics squashes values outside [0, 1] with a sigmoid, which ties every rank from ~37 up at
    1.0 in float64 (the anomalies tied with 13 normal images: AUROC 0.87), so the task rescales the ranks to [0, 1]."""
    task = anomaly_task(**TINY, oe_weight=0.0, component_metrics=False, score="max_logit", test_scores=["max_logit"])
    monkeypatch.setattr(task, "log", lambda *a, **k: None)
    task.on_test_epoch_start()
    scores = [float(s) for s in range(60)]
    targets = [int(s >= 50) for s in range(60)]
    task._image_scores["max_logit"] = scores
    task._image_targets = targets
    task._image_names = [str(i) for i in range(60)]
    task._pixel_acc["max_logit"].update(np.array([0.0, 1.0]), np.array([0, 1]))
    task.on_test_epoch_end()
    assert roc_auc_score(targets, scores) == 1.0
    assert task.test_results["image_auroc"]["max_logit"] == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------- analyze
def test_analyze_reads_uint8_images_as_0_to_255():
    """uint8 images are divided by 255: the same maps and classes as the float image in [0, 1]."""
    task = anomaly_task(**TINY, oe_weight=0.0, score="energy")
    raw = torch.randint(0, 256, (1, 3, 32, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    got, want = task.analyze(raw), task.analyze(raw.float() / 255.0)
    assert torch.allclose(got["score"], want["score"], atol=1e-6)
    assert torch.equal(got["pred"], want["pred"])
