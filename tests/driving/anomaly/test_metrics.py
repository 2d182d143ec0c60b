"""Road-anomaly metrics: pixel AP/AUROC/FPR95 against sklearn and by hand, SMIYC component metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from domains.driving.anomaly.metrics import (
    PixelAnomalyAccumulator,
    best_f1_threshold,
    component_metrics,
    component_stats,
    pixel_anomaly_metrics,
)

# ------------------------------------------------------------------------------------------------ pixels


def _random_set(seed, n_images=4, shape=(24, 32), levels=15):
    """Score maps with many ties (few levels), labels 0/1 and a void band."""
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, levels, size=(n_images, *shape)) / levels
    labels = (rng.random((n_images, *shape)) < 0.15 + 0.5 * scores).astype(np.uint8)
    labels[:, :3] = 255
    labels[rng.random(labels.shape) < 0.05] = 255
    return scores, labels


def _sklearn_reference(scores, labels):
    v = labels != 255
    y, s = labels[v], scores[v]
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return average_precision_score(y, s), roc_auc_score(y, s), fpr[np.argmax(tpr >= 0.95)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pixel_metrics_match_sklearn_with_ties_and_void(seed):
    scores, labels = _random_set(seed)
    ap, auroc, fpr95 = _sklearn_reference(scores, labels)
    out = pixel_anomaly_metrics(scores, labels)
    assert out["ap"] == pytest.approx(ap, abs=1e-9)
    assert out["auroc"] == pytest.approx(auroc, abs=1e-9)
    assert out["fpr95"] == pytest.approx(fpr95, abs=1e-12)
    assert out["num_pixels"] == int((labels != 255).sum())
    assert out["num_void"] == int((labels == 255).sum())
    assert out["num_images"] == 4 and not out["binned"]


def test_pixel_streaming_equals_one_shot_and_accepts_all_input_forms():
    scores, labels = _random_set(3, n_images=5)
    one_shot = pixel_anomaly_metrics(scores.reshape(-1), labels.reshape(-1))
    acc = PixelAnomalyAccumulator()
    for s, y in zip(scores, labels, strict=True):
        for half in (slice(0, 12), slice(12, None)):  # several chunks per image
            acc.update(torch.from_numpy(s[half]), torch.from_numpy(y[half]))
    streamed = acc.compute()
    as_pairs = pixel_anomaly_metrics(((s, y, f"img{i}") for i, (s, y) in enumerate(zip(scores, labels))))
    as_lists = pixel_anomaly_metrics(list(scores), list(labels))
    for key in ("ap", "auroc", "fpr95", "num_pixels", "num_positive"):
        assert streamed[key] == one_shot[key] == as_pairs[key] == as_lists[key], key


def test_pixel_metrics_by_hand():
    # descending: 0.9 (+) P=1 R=1/2; 0.8 (-) P=1/2 R=1/2; 0.7 (+) P=2/3 R=1 -> AP = 1/2 * 1 + 1/2 * 2/3
    out = pixel_anomaly_metrics(np.array([0.9, 0.8, 0.7]), np.array([1, 0, 1]))
    assert out["ap"] == pytest.approx(0.5 + 1 / 3)
    assert out["auroc"] == pytest.approx(0.5)  # one of the two (pos, neg) pairs ranked right
    # a tie between a positive and a negative is one threshold: P = 1/2 at R = 1
    tie = pixel_anomaly_metrics(np.array([0.5, 0.5]), np.array([1, 0]))
    assert tie["ap"] == pytest.approx(0.5) and tie["auroc"] == pytest.approx(0.5)


def test_fpr95_by_hand():
    # 20 anomaly pixels scored 1..20: TPR first reaches 0.95 (19/20) at threshold 2.
    # 10 normal pixels: 4 scored 10.5 (above 2), 6 scored 0.5 -> FPR95 = 4/10.
    scores = np.concatenate([np.arange(1, 21), [10.5] * 4, [0.5] * 6]).astype(float)
    labels = np.array([1] * 20 + [0] * 10)
    out = pixel_anomaly_metrics(scores, labels)
    assert out["fpr95"] == pytest.approx(0.4)
    assert pixel_anomaly_metrics(scores, labels, tpr_at=1.0)["fpr95"] == pytest.approx(0.4)
    assert pixel_anomaly_metrics(scores, labels, tpr_at=0.5)["fpr95"] == pytest.approx(0.0)  # 11..20 > 10.5


def test_binned_path_stays_close_to_sklearn():
    rng = np.random.default_rng(0)
    n = 120_000
    scores = rng.normal(size=n) + rng.random(n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-2 * scores))).astype(np.uint8)
    # second half shifted so that later chunks leave the first range and force a re-binning
    scores[n // 2 :] *= 1.7
    acc = PixelAnomalyAccumulator(max_distinct=4096)
    acc.FLUSH_PIXELS = 1  # each chunk counted as it comes: the later ones leave the bins' range
    for chunk in np.array_split(np.arange(n), 6):
        acc.update(scores[chunk], labels[chunk])
    out = acc.compute()
    assert out["binned"] and out["num_pixels"] == n
    assert out["ap"] == pytest.approx(average_precision_score(labels, scores), abs=1e-3)
    assert out["auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-3)


def test_binned_counts_bin_the_bulk_and_keep_the_tails_exact_by_hand():
    # 6 distinct negatives > max_distinct=4; TAIL_SHARE 0.2 of 6 pixels = 1.2 at each end: the bins span the
    # quantiles [0.25, 1.0] (width 0.1875: 0.25, 0.5, 0.75, 1.0 one per bin), 0 and 100 stay exact tails
    acc = PixelAnomalyAccumulator(max_distinct=4)
    acc.TAIL_SHARE, acc.FLUSH_PIXELS = 0.2, 1
    acc.update(np.array([0.0, 0.25, 0.5, 0.75, 1.0, 100.0]), np.zeros(6, dtype=np.uint8))
    assert acc.binned and (acc.lo, acc.hi) == (0.25, 1.0) and acc.compute()["bin_width"] == 0.1875
    # positives at 0.9 (the last bin, tied with 1.0) and 50 (a tail, exact). Descending: 100-, 50+ (P 1/2,
    # R 1/2), bin [0.8125, 1] holding 1.0- and 0.9+ (P 2/4, R 1) -> AP 1/2, sklearn's on the raw scores too
    acc.update(np.array([0.9, 50.0]), np.ones(2, dtype=np.uint8))
    thresholds, tps, fps = acc.curve()
    assert thresholds.tolist() == [100.0, 50.0, 0.8125, 0.625, 0.4375, 0.25, 0.0]
    assert tps.tolist() == [0, 1, 2, 2, 2, 2, 2] and fps.tolist() == [1, 1, 2, 3, 4, 5, 6]
    assert acc.compute()["ap"] == pytest.approx(0.5)


def test_one_outlier_score_costs_the_binned_curve_nothing():
    """One normal pixel at 1e6 among scores in [0, 1]: equal-width bins over the observed range put every other
    pixel into a few bins (AP 0.13 against sklearn's 0.19 on 1.57 M pixels); over the bulk, the outlier kept
    exactly in a tail, the curve stays where it was."""
    rng = np.random.default_rng(0)
    n = 60_000
    scores = rng.random(n).astype(np.float32)
    labels = (rng.random(n) < 0.05 + 0.2 * scores).astype(np.uint8)
    scores[123], labels[123] = 1e6, 0
    acc = PixelAnomalyAccumulator(max_distinct=4096)
    for chunk in np.array_split(np.arange(n), 6):
        acc.update(scores[chunk], labels[chunk])
    out = acc.compute()
    assert out["binned"] and out["bin_width"] < 1.01 / 4096  # the bins over [0, 1], not [0, 1e6]
    assert out["ap"] == pytest.approx(average_precision_score(labels, scores), abs=5e-4)
    assert out["auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=5e-4)
    assert out["fpr95"] == pytest.approx(pixel_anomaly_metrics(scores, labels)["fpr95"], abs=2e-3)


def test_pixel_input_errors_name_the_image():
    scores, labels = _random_set(0, n_images=3)
    scores[1, 5, 6] = np.nan
    with pytest.raises(ValueError, match=r"NaN.*image index 1.*\(5, 6\)"):
        pixel_anomaly_metrics(scores, labels)
    with pytest.raises(ValueError, match="NaN.*'frame_007'"):
        pixel_anomaly_metrics([(scores[0], labels[0], "frame_000"), (scores[1], labels[1], "frame_007")])
    bad = labels.copy()
    bad[0, 4, 4] = 2
    with pytest.raises(ValueError, match=r"0 \(normal\), 1 \(anomaly\) or 255.*\[2\]"):
        pixel_anomaly_metrics(np.zeros(bad.shape), bad)
    with pytest.raises(ValueError, match="shape"):
        pixel_anomaly_metrics(np.zeros((4, 4)), np.zeros((4, 5), dtype=np.uint8))


def test_no_anomaly_pixels_gives_nan_with_warning():
    with pytest.warns(UserWarning, match="no anomaly"):
        out = pixel_anomaly_metrics(np.array([0.1, 0.2]), np.array([0, 0]))
    assert math.isnan(out["ap"]) and math.isnan(out["auroc"]) and math.isnan(out["fpr95"])


def test_best_f1_threshold_by_hand():
    # score >= 0.9: F1 = 2*1/(1+0+2) = 2/3; >= 0.8: 2/(1+1+2) = 1/2; >= 0.7: 4/(2+1+2) = 4/5; >= 0.1: 4/6
    scores, labels = np.array([0.9, 0.8, 0.7, 0.1]), np.array([1, 0, 1, 0])
    best = best_f1_threshold(scores, labels)
    assert best["threshold"] == pytest.approx(0.7) and best["f1"] == pytest.approx(0.8)
    assert best["precision"] == pytest.approx(2 / 3) and best["recall"] == pytest.approx(1.0)
    acc = PixelAnomalyAccumulator()
    acc.update(scores, labels)
    assert best_f1_threshold(acc) == best


# ------------------------------------------------------------------------------------------- components


def _blank(h=12, w=16):
    return np.zeros((h, w)), np.zeros((h, w), dtype=np.uint8)


def test_component_fully_hit_blob():
    score, label = _blank()
    label[2:6, 2:6] = 1
    score[2:6, 2:6] = 1.0
    out = component_metrics(score, label, threshold=0.5)
    assert out["sIoU_gt"] == pytest.approx(1.0) and out["PPV"] == pytest.approx(1.0)
    assert out["mean_F1"] == pytest.approx(1.0)
    assert out["num_gt_components"] == 1 and out["num_pred_components"] == 1


def test_component_half_hit_blob():
    score, label = _blank()
    label[2:6, 2:6] = 1  # 16 px
    score[2:6, 2:4] = 1.0  # left half, 8 px, all on the object
    out = component_metrics(score, label, threshold=0.5)
    assert out["sIoU_gt"] == pytest.approx(0.5) and out["PPV"] == pytest.approx(1.0)
    # TP while sIoU >= tau (SMIYC's code): tau = 0.25 ... 0.5 (6 of 11); FN from tau = 0.55 on; never a FP.
    assert out["tp"] == [1] * 6 + [0] * 5 and out["fn"] == [0] * 6 + [1] * 5 and out["fp"] == [0] * 11
    assert out["mean_F1"] == pytest.approx(6 / 11)


def test_component_ties_follow_the_smiyc_evaluation_code():
    """road_anomaly_benchmark: a ground-truth component is a TP when sIoU >= tau, a predicted one a FP when
    PPV < tau. Pixels at the threshold are predicted (the benchmark's ``>`` would drop a saturated score's
    every pixel: the best-F1 threshold is a score value)."""
    score, label = _blank()
    label[2:6, 2:6] = 1
    score[2:6, 2:6] = 0.5  # exactly at the threshold: predicted, the object found
    out = component_metrics(score, label, threshold=0.5)
    assert out["num_pred_components"] == 1 and out["tp"] == [1] * 11 and out["mean_F1"] == 1.0
    # a 2x2 object predicted with 4 background pixels: sIoU 4/8, PPV 4/8
    score, label = _blank()
    label[2:4, 2:4] = 1
    score[2:4, 2:6] = 1.0
    out = component_metrics(score, label, threshold=0.5)
    assert out["sIoU_gt"] == pytest.approx(0.5) and out["PPV"] == pytest.approx(0.5)
    # tau 0.25 ... 0.5: TP and no FP (PPV 0.5 is not < 0.5); tau 0.55 ... 0.75: FN and FP
    assert out["tp"] == [1] * 6 + [0] * 5 and out["fp"] == [0] * 6 + [1] * 5
    assert out["mean_F1"] == pytest.approx(6 / 11)  # 6 x F1 1 + 5 x F1 0 (2*0 / (0 + 1 + 1))


def test_component_false_positive_blob():
    score, label = _blank()
    label[2:6, 2:6] = 1
    score[2:6, 2:6] = 1.0
    score[8:10, 10:14] = 0.9  # far from any object: PPV 0
    out = component_metrics(score, label, threshold=0.5)
    assert out["PPV"] == pytest.approx(0.5)  # mean of 1 and 0
    assert out["fp"] == [1] * 11 and out["tp"] == [1] * 11
    assert out["mean_F1"] == pytest.approx(2 / 3)  # 2 TP / (2 TP + 0 FN + 1 FP)


def test_component_adjustment_excludes_other_objects():
    score, label = _blank()
    label[2:4, 2:4] = 1  # K1, 4 px
    label[2:4, 5:7] = 1  # K2, 4 px, separated by column 4
    score[2:4, 2:7] = 1.0  # one prediction over both and the 2-px gap
    stats = component_stats(score, label, 0.5)
    # sIoU(K1) = |K1| / (|K1| + 2 gap px) = 4/6: K2's pixels are excused (adjustment set A)
    np.testing.assert_allclose(stats["sIoU_gt"], [2 / 3, 2 / 3])
    np.testing.assert_allclose(stats["PPV"], [8 / 10])


def test_component_void_and_connectivity_and_size_filter():
    score, label = _blank()
    label[2, 2] = label[3, 3] = 1  # diagonal neighbours: one 8-connected component
    score[2, 2] = score[3, 3] = 1.0
    label[8:, :] = 255
    score[8:, :] = 1.0  # high scores in void make no prediction
    score[0, 10] = 1.0  # a 1-px false positive
    stats = component_stats(score, label, 0.5)
    assert stats["sIoU_gt"].tolist() == [1.0]
    assert sorted(stats["PPV"].tolist()) == [0.0, 1.0]
    filtered = component_stats(score, label, 0.5, min_pred_size=2)  # both predictions <= 2 px
    assert filtered["PPV"].tolist() == [1.0]
    dropped = component_stats(score, label, 0.5, min_gt_size=3)  # the 2-px object becomes void
    assert dropped["sIoU_gt"].size == 0 and dropped["PPV"].tolist() == [0.0]


def _brute_force_component_stats(score, label, threshold):
    """Straight from the definitions, one set at a time (reference for the vectorised version)."""
    from scipy import ndimage

    roi = label != 255
    gt, n_gt = ndimage.label(label == 1, structure=np.ones((3, 3)))
    pred, n_pred = ndimage.label((score >= threshold) & roi, structure=np.ones((3, 3)))
    siou = []
    for k in range(1, n_gt + 1):
        K = gt == k
        P = np.isin(pred, np.unique(pred[K & (pred > 0)]))
        A = (gt > 0) & ~K
        siou.append((K & P).sum() / ((K | P) & ~A).sum())
    ppv = [((pred == j) & (label == 1)).sum() / (pred == j).sum() for j in range(1, n_pred + 1)]
    return np.array(siou), np.array(ppv)


def test_component_stats_match_definition_on_random_maps():
    rng = np.random.default_rng(0)
    for _ in range(5):
        blobs = rng.random((40, 50)) < 0.25
        label = blobs.astype(np.uint8)
        label[rng.random(label.shape) < 0.03] = 255
        score = np.round(blobs * 0.5 + rng.random(label.shape) * 0.7, 1)  # ties at the threshold 0.6
        got = component_stats(score, label, 0.6)
        siou, ppv = _brute_force_component_stats(score, label, 0.6)
        np.testing.assert_allclose(got["sIoU_gt"], siou)
        np.testing.assert_allclose(got["PPV"], ppv)


def test_merging_accumulators_equals_one_accumulator_over_all_images():
    """What DDP ranks' test shards add up to: the same curve as one pass over every image."""
    from domains.driving.anomaly.metrics import PixelAnomalyAccumulator

    rng = np.random.default_rng(3)
    scores = rng.integers(0, 40, size=(6, 8, 10)) / 40
    labels = (rng.random((6, 8, 10)) < 0.3).astype(np.uint8)
    labels[:, 0] = 255
    whole, first, second = PixelAnomalyAccumulator(), PixelAnomalyAccumulator(), PixelAnomalyAccumulator()
    for i in range(6):
        whole.update(scores[i], labels[i])
        (first if i < 3 else second).update(scores[i], labels[i])
    merged = first.merge(second).compute()
    expected = whole.compute()
    for key in ("ap", "auroc", "fpr95", "num_positive", "num_void"):
        assert merged[key] == pytest.approx(expected[key]), key
    # a binned side (few bins forced) still adds every pixel
    coarse = PixelAnomalyAccumulator(max_distinct=4)
    for i in range(3):
        coarse.update(scores[i], labels[i])
    assert coarse.binned
    total = coarse.merge(second).compute()
    assert total["num_positive"] == expected["num_positive"] and total["num_void"] == expected["num_void"]


@pytest.mark.parametrize(
    ("first_bins", "second_bins"),
    [(None, 2048), (2048, None), (2048, 2048)],
    ids=["exact<-binned", "binned<-exact", "binned<-binned"],
)
def test_merging_binned_accumulators_keeps_the_curve(first_bins, second_bins):
    """Shards merged with a binned side (either or both) give the one-pass AP / AUROC / FPR95 up to the
    binning error (2048 bins over ~8 standard deviations: well under 1e-3 here), not just the right counts."""
    rng = np.random.default_rng(4)
    n = 3 * 3000
    scores = rng.normal(size=n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-2 * scores))).astype(np.uint8)
    labels[::17] = 255
    parts = np.array_split(np.arange(n), 3)
    expected = pixel_anomaly_metrics(scores, labels)

    def shard(idx, bins):
        acc = PixelAnomalyAccumulator(**({} if bins is None else {"max_distinct": bins}))
        acc.update(scores[idx], labels[idx])
        assert acc.binned == (bins is not None)  # 3000 distinct scores > 2048 bins
        return acc

    merged = shard(parts[0], first_bins).merge(shard(parts[1], second_bins)).merge(shard(parts[2], None))
    out = merged.compute()
    for key in ("num_positive", "num_negative", "num_void"):
        assert out[key] == expected[key], key
    assert out["ap"] == pytest.approx(expected["ap"], abs=1e-3)
    assert out["auroc"] == pytest.approx(expected["auroc"], abs=1e-3)
    # FPR95 moves by whole bins at the 95 % TPR crossing: each holds ~10 of the ~4200 normal pixels there, and
    # bins merged into bins move by up to one width (observed: up to 0.0022)
    assert out["fpr95"] == pytest.approx(expected["fpr95"], abs=5e-3)
    assert 0.8 < expected["auroc"] < 0.9  # an informative score: a wrong merge cannot match it by chance
