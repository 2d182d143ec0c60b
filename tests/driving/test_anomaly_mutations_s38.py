"""Anomaly score and model lines that no test pinned (a mutation audit changed each and every test still
passed): the two-class minimum of the scores, the outlier logit's (B, 1, H, W) form, the check on non-finite
score output; the calibration's SML statistics and fallbacks, centred covariance, class check and
``max_batches``; the learnt energy scale in ``stats``."""

from __future__ import annotations

import math

import pytest
import torch

from domains.driving.anomaly.model import AnomalySegmenter
from domains.driving.anomaly.outliers import OUTLIER_LABEL
from domains.driving.anomaly.scores import AnomalyScoreError, compute_score


def test_scores_need_two_classes():
    """One class has no softmax to be unsure over (MSP and entropy are 0 everywhere): refused."""
    with pytest.raises(AnomalyScoreError, match="at least 2 classes, got C=1"):
        compute_score("msp", torch.zeros(1, 1, 2, 2))
    assert compute_score("msp", torch.zeros(1, 2, 2, 2)).shape == (1, 2, 2)


def test_outlier_prob_takes_the_head_logit_with_its_channel():
    """The head's logit as it comes, (B, 1, H, W), gives (B, H, W) maps like the (B, H, W) form."""
    head = torch.tensor([[[[0.0, 2.0], [-2.0, 0.0]]]])  # (1, 1, 2, 2)
    prob = compute_score("outlier_prob", torch.zeros(1, 3, 2, 2), outlier_logit=head)
    assert prob.shape == (1, 2, 2)
    assert torch.allclose(prob, torch.sigmoid(head[:, 0]))
    assert torch.allclose(compute_score("outlier_prob", torch.zeros(1, 3, 2, 2), outlier_logit=head[:, 0]), prob)


def test_a_score_that_comes_out_non_finite_is_an_error():
    """Statistics with no valid class (an uncalibrated or broken set) give an infinite Mahalanobis distance
    everywhere: an error naming the score, not inf maps."""
    stats = {
        "feat_mean": torch.zeros(2, 2),
        "feat_precision": torch.eye(2),
        "feat_valid": torch.tensor([False, False]),
    }
    with pytest.raises(AnomalyScoreError, match="'mahalanobis' produced 2 non-finite"):
        compute_score("mahalanobis", torch.zeros(1, 2, 1, 2), stats, torch.zeros(1, 2, 1, 2))


# ---------------------------------------------------------------------------------------------- calibrate
def _fixed_calibration(monkeypatch):
    """A 3-class model calibrated on one 4x4 batch whose logits and features are fixed: class 0 predicted at 13
    labelled pixels, class 1 at exactly one, class 2 only on the void and pasted-outlier pixels (left out).
    Returns the model, the labelled pixels' max logits and prediction, the features and the mask."""
    model = AnomalySegmenter(encoder_kwargs={"channels": [8, 16, 32, 64]}, num_classes=3)
    d = model.feat_mean.shape[1]
    g = torch.Generator().manual_seed(0)
    logits = torch.zeros(1, 3, 4, 4)
    logits[0, 0] = torch.rand(4, 4, generator=g) * 4 + 1  # class 0 wins with 1..5
    logits[0, 1, 0, 0] = 9.0  # class 1 wins once
    logits[0, 2, 3, 2:] = 50.0  # class 2 wins on the void and outlier pixels only
    feats = torch.randn(1, d, 4, 4, generator=g)
    mask = torch.zeros(1, 4, 4, dtype=torch.long)
    mask[0, :2, :2] = 1
    mask[0, 3, 2], mask[0, 3, 3] = 255, OUTLIER_LABEL
    monkeypatch.setattr(model, "features", lambda images, with_outlier=False: (logits, feats, None))
    model.calibrate([{"image": torch.zeros(1, 3, 4, 4), "mask": mask}])
    valid = (mask != 255) & (mask != OUTLIER_LABEL)
    top, pred = logits.max(1)
    return model, top[valid].double(), pred[valid], feats, mask, valid


def test_sml_statistics_are_per_predicted_class_with_the_global_fallback(monkeypatch):
    """Class 0 (13 pixels): the mean and population std of its max logits. Class 1 (one pixel) and class 2
    (only on void / outlier pixels): the mean and std of every labelled pixel's max logit."""
    model, top, pred, *_ = _fixed_calibration(monkeypatch)
    assert pred.tolist().count(0) == 13 and pred.tolist().count(1) == 1 and 2 not in pred.tolist()
    own = top[pred == 0]
    want_mean = [float(own.mean()), float(top.mean()), float(top.mean())]
    want_std = [float(own.std(unbiased=False)), float(top.std(unbiased=False)), float(top.std(unbiased=False))]
    assert model.sml_mean.tolist() == pytest.approx(want_mean, rel=1e-5)
    assert model.sml_std.tolist() == pytest.approx(want_std, rel=1e-5)


def test_the_mahalanobis_covariance_is_centred_on_each_pixel_s_class_mean(monkeypatch):
    """One covariance shared by the classes, of the features about their own ground-truth class's mean (ridge
    1e-4 x its mean variance), inverted; classes 0 and 1 hold labelled pixels, class 2 none."""
    model, _, _, feats, mask, valid = _fixed_calibration(monkeypatch)
    f = feats.permute(0, 2, 3, 1)[valid].double()
    y = mask[valid]
    mu = torch.stack([f[y == c].mean(0) for c in (0, 1)])
    centred = f - mu[y]
    cov = centred.T @ centred / len(f)
    ridge = 1e-4 * float(torch.diagonal(cov).mean()) + 1e-8
    want = torch.linalg.inv(cov + ridge * torch.eye(len(cov), dtype=torch.float64)).float()
    assert torch.allclose(model.feat_precision, want, rtol=1e-3, atol=1e-3)
    assert model.feat_valid.tolist() == [True, True, False]


def test_calibrate_refuses_a_class_value_one_past_the_last():
    """Mask value C (3 for three classes) is no class: an error naming it, not an index crash."""
    model = AnomalySegmenter(encoder_kwargs={"channels": [8, 16, 32, 64]}, num_classes=3)
    mask = torch.zeros(1, 32, 32, dtype=torch.long)
    mask[0, 0, 0] = 3
    with pytest.raises(ValueError, match=r"mask values \[3\] outside 0\.\.2"):
        model.calibrate([{"image": torch.rand(1, 3, 32, 32), "mask": mask}])


def test_model_stats_give_outlier_prob_the_same_calibration_as_its_maps():
    """``stats`` (what the scores read) carries the learnt scale a = softplus(raw): ``compute_score`` on it
    gives the energy-objective model's own ``outlier_prob`` maps."""
    model = AnomalySegmenter(encoder_kwargs={"channels": [8, 16, 32, 64]}, num_classes=3, oe_objective="energy")
    with torch.no_grad():
        model.oe_scale_raw.fill_(-1.0)  # a = softplus(-1) = 0.313, not -1
        model.oe_bias.fill_(0.5)
        model.oe_trained.fill_(True)
    model.eval()
    images = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    maps = model.scores(images, ["outlier_prob"])
    direct = compute_score("outlier_prob", maps["logits"], model.stats)
    assert float(model.stats["oe_scale"]) == pytest.approx(math.log1p(math.exp(-1.0)), rel=1e-6)
    assert torch.allclose(direct, maps["outlier_prob"], atol=1e-6)


def test_calibrate_reads_at_most_max_batches():
    """``max_batches`` 1 of three batches: one batch's pixels are counted."""
    model = AnomalySegmenter(encoder_kwargs={"channels": [8, 16, 32, 64]}, num_classes=3)
    batches = [{"image": torch.rand(1, 3, 32, 32), "mask": torch.zeros(1, 32, 32, dtype=torch.long)}] * 3
    info = model.calibrate(batches, max_batches=1)
    assert info["batches"] == 1 and info["pixels"] == 32 * 32
