"""Accident-anticipation metrics against answers computed by hand on 2-4 tiny clips (numbers in comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from domains.driving.accident.metrics import (
    ClipScores,
    ap_before,
    brier,
    ece,
    false_alarm_rate,
    fit_temperature,
    frame_ap,
    frame_labels,
    lead_time_at_false_alarm_rate,
    legacy_mtta,
    mtta,
    object_hit_rate,
    operating_threshold,
    summarize,
    threshold_at_recall,
    tta_at_recall,
    tta_curve,
    ttc_error,
    video_ap,
)

FPS = 10.0


def four_clips() -> list[ClipScores]:
    """Two crashes and two negatives, 10 frames at 10 fps.

    c1 (toa 8): best score before contact 0.9 (first reached at frame 3); frames from toa on do not count.
    c2 (toa 6): best before contact 0.7 (frame 5); 0.9 only after contact.
    n1 (near miss): max 0.8.  n2 (normal): max 0.4.
    """
    return [
        ClipScores(
            [0.1, 0.2, 0.6, 0.9, 0.9, 0.9, 0.9, 0.9, 1.0, 1.0], toa=8, fps=FPS, kind="crash", clip_id="c1"
        ),
        ClipScores(
            [0.1, 0.1, 0.1, 0.3, 0.5, 0.7, 0.9, 0.9, 0.9, 0.9], toa=6, fps=FPS, kind="crash", clip_id="c2"
        ),
        ClipScores([0.2] * 5 + [0.8] + [0.2] * 4, toa=-1, fps=FPS, kind="near_miss", clip_id="n1"),
        ClipScores([0.4] * 10, toa=-1, fps=FPS, kind="normal", clip_id="n2"),
    ]


def test_video_ap_by_hand_and_equal_to_sklearn():
    # Clip scores: positives 0.9 (c1), 0.7 (c2); negatives 0.8 (n1), 0.4 (n2). Descending thresholds:
    #   0.9: TP 1 FP 0 -> P 1,   R 0.5
    #   0.8: TP 1 FP 1 -> P 1/2, R 0.5 (recall unchanged: adds nothing)
    #   0.7: TP 2 FP 1 -> P 2/3, R 1
    #   0.4: TP 2 FP 2 -> P 1/2, R 1
    # AP = 0.5 * 1 + 0.5 * 2/3 = 5/6 (UString's trapezoid would give 0.5 + 0.5 * (1 + 2/3) / 2 = 11/12).
    clips = four_clips()
    assert video_ap(clips) == pytest.approx(5 / 6)
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    assert video_ap(clips) == pytest.approx(
        sklearn_metrics.average_precision_score([1, 1, 0, 0], [0.9, 0.7, 0.8, 0.4])
    )
    rng = np.random.default_rng(0)
    for _ in range(5):  # random clips: the same step sum as sklearn on (max before toa, max) clip scores
        recs, labels, clip_scores = [], [], []
        for i in range(12):
            s = np.round(rng.random(8), 1)  # rounding makes ties
            if i % 2:
                recs.append(ClipScores(s, toa=5, fps=FPS, kind="crash"))
                labels.append(1)
                clip_scores.append(s[:5].max())
            else:
                recs.append(ClipScores(s, toa=-1, fps=FPS, kind="normal"))
                labels.append(0)
                clip_scores.append(s.max())
        assert video_ap(recs) == pytest.approx(sklearn_metrics.average_precision_score(labels, clip_scores))


def test_crash_at_frame_zero_is_never_found_but_counts():
    # c0 has contact at frame 0: no frame before it, never found. With c1 (found at 0.9) and n2 (0.4):
    # 0.9: TP 1 FP 0 -> P 1, R 1/2; 0.4: TP 1 FP 1, R 1/2 -> AP = 0.5.
    clips = [four_clips()[0], ClipScores([0.9] * 10, toa=0, fps=FPS), four_clips()[3]]
    assert video_ap(clips) == pytest.approx(0.5)


def test_tta_mtta_legacy_and_r80_by_hand():
    # Recall levels (clip scores 0.9 and 0.7):
    #   recall 1/2 (only c1): thresholds in (0.7, 0.9]; the lowest sweep threshold there is 0.8 (n1's max).
    #     c1's first frame with score > 0.7 is frame 3: TTA = (8 - 3) / 10 = 0.5 s;
    #     legacy (1 - 3/8) * 10 frames / 10 fps = 0.625 s.
    #   recall 1: the lowest threshold (0) alarms at frame 0 everywhere: TTA = mean(0.8, 0.6) = 0.7 s;
    #     legacy (1 - 0) * 1 s = 1.0 s for both.
    # mTTA = (0.5 + 0.7) / 2 = 0.6 s; legacy = (0.625 + 1.0) / 2 = 0.8125 s; TTA@R80 = 0.7 s (recall 1 level).
    clips = four_clips()
    curve = tta_curve(clips)
    np.testing.assert_allclose(curve.recall, [0.5, 1.0])
    np.testing.assert_allclose(curve.threshold, [0.8, 0.0])
    np.testing.assert_allclose(curve.tta, [0.5, 0.7])
    np.testing.assert_allclose(curve.legacy_tta, [0.625, 1.0])
    assert mtta(clips) == pytest.approx(0.6)
    assert legacy_mtta(clips) == pytest.approx(0.8125)
    assert tta_at_recall(clips, 0.8) == pytest.approx(0.7)
    assert tta_at_recall(clips, 0.5) == pytest.approx(0.5)
    assert threshold_at_recall(clips, 0.8) == 0.0 and threshold_at_recall(clips, 0.5) == pytest.approx(0.8)
    assert math.isnan(tta_at_recall(clips[:1] + clips[2:] + [ClipScores([0.5] * 10, toa=0, fps=FPS)], 0.8))


def test_legacy_exceeds_the_physical_maximum_on_a_dad_like_clip():
    # DAD: 100 frames at 20 fps, contact at frame 90: at most 90 / 20 = 4.5 s of warning is possible.
    # a alarms (0.9) from frame 45, b (0.6) from frame 30; one normal clip at 0.1.
    #   recall 1/2 (a only): a's first frame > 0.6 is 45: TTA (90 - 45) / 20 = 2.25 s; legacy (1 - 45/90) * 5 = 2.5 s
    #   recall 1: every frame alarms: TTA 90 / 20 = 4.5 s (the physical maximum); legacy (1 - 0) * 100 / 20 = 5.0 s
    a = ClipScores([0.0] * 45 + [0.9] * 55, toa=90, fps=20.0)
    b = ClipScores([0.0] * 30 + [0.6] * 70, toa=90, fps=20.0)
    n = ClipScores([0.1] * 100, toa=-1, fps=20.0, kind="normal")
    curve = tta_curve([a, b, n])
    np.testing.assert_allclose(curve.tta, [2.25, 4.5])
    np.testing.assert_allclose(curve.legacy_tta, [2.5, 5.0])
    assert curve.tta.max() <= 90 / 20.0
    assert curve.legacy_tta.max() > 90 / 20.0  # the legacy formula reports more lead than physically possible
    assert mtta([a, b, n]) == pytest.approx(3.375)
    assert legacy_mtta([a, b, n]) == pytest.approx(3.75)


def test_ap_before_seconds_by_hand():
    # 0.5 s = 5 frames: c1 may alarm at t <= 3 (max 0.9), c2 at t <= 1 (max 0.1). Negatives 0.8, 0.4.
    #   0.9: TP 1 FP 0 (P 1, R 1/2); 0.8, 0.4: no new TP; 0.1: TP 2 FP 2 (P 1/2, R 1) -> AP = 0.5 + 0.25 = 0.75
    # 1.0 s = 10 frames: no frame early enough in either crash clip -> AP 0.
    clips = four_clips()
    assert ap_before(clips, 0.5) == pytest.approx(0.75)
    assert ap_before(clips, 1.0) == 0.0
    assert ap_before(clips, 0.0) == pytest.approx(video_ap(clips))


def test_false_alarms_and_operating_threshold_by_hand():
    clips = four_clips()
    assert false_alarm_rate(clips, 0.5) == 1.0  # n1 reaches 0.8
    assert false_alarm_rate(clips, 0.85) == 0.0
    assert false_alarm_rate(clips, 0.5, kind="normal") == 0.0  # n2 peaks at 0.4
    assert false_alarm_rate(clips, 0.3, kind=("near_miss", "normal")) == 1.0
    # No false alarm allowed: just above n1's 0.8 (the next float, not the next score 0.9).
    assert operating_threshold(clips, 0.0) == np.nextafter(0.8, 1.0)
    # One of two negatives may alarm: just above n2's 0.4.
    assert operating_threshold(clips, 0.5) == np.nextafter(0.4, 1.0)
    assert operating_threshold(clips, 1.0) == 0.0  # every negative may alarm
    # Just above 0.4: c1 first > 0.4 at frame 2 (lead 0.6 s), c2 at frame 4 (0.2 s): recall 1, mean lead 0.4 s.
    out = lead_time_at_false_alarm_rate(clips, 0.5)
    assert out == pytest.approx({"threshold": 0.4, "recall": 1.0, "lead_time": 0.4, "false_alarm_rate": 0.5})
    # Just above 0.8: only c1 (frame 3, 0.5 s).
    out = lead_time_at_false_alarm_rate(clips, 0.0)
    assert out == pytest.approx({"threshold": 0.8, "recall": 0.5, "lead_time": 0.5, "false_alarm_rate": 0.0})


def test_frame_ap_by_hand():
    # a: crash, toa 2, 4 frames at 10 fps; horizon 0.1 s = 1 frame -> labels t >= 1: [0, 1, 1, 1]. b: normal.
    # Pooled, descending: 0.8+ 0.7- 0.6+ 0.4+ 0.3- 0.2- 0.2- 0.1-
    #   0.8: P 1 R 1/3; 0.6: P 2/3 R 2/3; 0.4: P 3/4 R 1 -> AP = (1 + 2/3 + 3/4) / 3 = 29/36
    # Horizon 0.2 s: a's frame 0 (0.2) is positive too; at 0.2 TP 4 FP 3 (0.7, 0.3, b's 0.2):
    #   AP = (1 + 2/3 + 3/4 + 4/7) / 4 = 251/336
    a = ClipScores([0.2, 0.6, 0.8, 0.4], toa=2, fps=FPS)
    b = ClipScores([0.1, 0.7, 0.3, 0.2], toa=-1, fps=FPS, kind="normal")
    np.testing.assert_array_equal(frame_labels(a, 0.1), [0, 1, 1, 1])
    assert frame_ap([a, b], horizon=0.1) == pytest.approx(29 / 36)
    assert frame_ap([a, b], horizon=0.2) == pytest.approx(251 / 336)
    assert math.isnan(frame_ap([b]))
    # Before contact (a cut at toa 2: 0.2, 0.6), horizon 0.1 s: labels [0, 1]. Descending 0.7- 0.6+ ...:
    #   P 1/2 at R 1 -> 1/2. Horizon 0.2 s: labels [1, 1]: 0.7- 0.6+ (P 1/2, R 1/2), then at 0.2 a's 0.2+ ties
    #   b's 0.2-: TP 2 FP 3 (0.7, 0.3, 0.2) -> P 2/5 at R 1 -> 1/2 * 1/2 + 1/2 * 2/5 = 9/20
    assert frame_ap([a, b], horizon=0.1, before_contact=True) == pytest.approx(1 / 2)
    assert frame_ap([a, b], horizon=0.2, before_contact=True) == pytest.approx(9 / 20)
    # every frame positive (a crash clip alone, its contact within 2 s of frame 0): 1.0 whatever the scores
    with pytest.warns(UserWarning, match="every frame is a positive"):
        assert math.isnan(frame_ap([a]))


def test_ece_and_brier_by_hand():
    # One crash clip, toa 1, horizon 0: labels [0, 1, 1, 1] for risks [0.1, 0.3, 0.7, 0.9].
    # 15 bins: each risk alone in its bin: ECE = (0.1 + 0.7 + 0.3 + 0.1) / 4 = 0.3
    # 2 bins: [0, .5): mean risk 0.2, mean label 0.5 -> 0.3 * 2/4; [.5, 1]: 0.8 vs 1 -> 0.2 * 2/4. ECE = 0.25
    # Brier = (0.01 + 0.49 + 0.09 + 0.01) / 4 = 0.15
    clip = [ClipScores([0.1, 0.3, 0.7, 0.9], toa=1, fps=FPS)]
    assert ece(clip, horizon=0.0) == pytest.approx(0.3, abs=1e-6)
    assert ece(clip, horizon=0.0, n_bins=2) == pytest.approx(0.25, abs=1e-6)
    assert brier(clip, horizon=0.0) == pytest.approx(0.15)


def test_ttc_error_by_hand():
    # Frames with true TTC < 2 s: 1.9, 1.0, 0.5 (3.0 and NaN left out); predictions 1.5, inf, 0.7.
    # cap 5: |1.5 - 1.9| + |5 - 1| + |0.7 - 0.5| = 0.4 + 4 + 0.2 -> 4.6 / 3; cap 2: 0.4 + 1 + 0.2 -> 1.6 / 3
    clip = ClipScores(
        [0.0] * 5,
        toa=4,
        fps=FPS,
        ttc_true=[3.0, 1.9, 1.0, 0.5, np.nan],
        ttc_pred=[2.0, 1.5, np.inf, 0.7, 1.0],
    )
    assert ttc_error([clip]) == pytest.approx(4.6 / 3)
    assert ttc_error([clip], cap=2.0) == pytest.approx(1.6 / 3)


def test_object_hit_rate_by_hand():
    # A (toa 3): involved object 0 peaks only after contact (0.3 before), object 1 reaches 0.7 -> miss.
    # B (toa 2): involved object 1 reaches 0.9 before contact, object 0 0.8 -> hit.
    # C: no involved object (left out); N: a negative (left out). Rate = 1/2.
    nan = np.nan
    a = ClipScores(
        [0.0] * 5,
        toa=3,
        fps=FPS,
        involved=[True, False, False],
        object_scores=[[0.1, 0.5, nan], [0.2, 0.6, nan], [0.3, 0.7, nan], [0.99, 0.1, nan], [0.99, 0.1, nan]],
    )
    b = ClipScores(
        [0.0] * 3, toa=2, fps=FPS, involved=[False, True], object_scores=[[0.2, 0.9], [0.8, 0.1], [0.0, 0.0]]
    )
    c = ClipScores([0.0] * 3, toa=2, fps=FPS, involved=[False, False], object_scores=np.ones((3, 2)))
    n = ClipScores([0.0] * 3, toa=-1, fps=FPS, kind="normal", involved=[True], object_scores=np.ones((3, 1)))
    assert object_hit_rate([a, b, c, n]) == 0.5
    # A tie between the involved and another object is not a hit.
    tie = ClipScores([0.0] * 3, toa=2, fps=FPS, involved=[True, False], object_scores=np.full((3, 2), 0.5))
    assert object_hit_rate([tie]) == 0.0


def test_temperature_fit_recovers_a_known_temperature():
    # Calibrated logits z, labels ~ Bernoulli(sigmoid(z)); the model reports 2.5 z (over-confident).
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(20000, generator=gen, dtype=torch.float64) * 2.0
    labels = (torch.rand(20000, generator=gen, dtype=torch.float64) < torch.sigmoid(z)).long()
    assert fit_temperature(2.5 * z, labels) == pytest.approx(2.5, rel=0.05)
    # Multi-class form: logits (M, 2) = [0, 2.5 z] has the same softmax as the binary logit.
    two = torch.stack([torch.zeros_like(z), 2.5 * z], dim=1)
    assert fit_temperature(two, labels) == pytest.approx(2.5, rel=0.05)
    # Lightning's validate / test run under inference mode: the fit must still get its gradients there
    with torch.inference_mode():
        assert fit_temperature(2.5 * z, labels) == pytest.approx(2.5, rel=0.05)


def test_summarize_every_figure_by_hand():
    # three clips at 10 fps: a crash with contact at frame 2 (object slot 1 empty), a near miss and a normal clip
    nan = float("nan")
    records = [
        ClipScores(scores=np.array([0.2, 0.6, 0.8, 0.4]), toa=2, fps=10.0, kind="crash", clip_id="a",
                   object_scores=np.array([[0.5, nan]] * 4), involved=np.array([True, False]),
                   ttc_true=np.array([0.2, 0.1, nan, nan])),
        ClipScores(scores=np.array([0.1, 0.7]), toa=-1, fps=10.0, kind="near_miss", clip_id="n",
                   object_scores=np.full((2, 2), 0.5), involved=np.array([False, False])),
        ClipScores(scores=np.array([0.1, 0.1]), toa=-1, fps=10.0, kind="normal", clip_id="z"),
    ]  # fmt: skip
    # Clip scores: a 0.6 (max of frames 0, 1 before contact), n 0.7, z 0.1.
    #   video AP: 0.7: TP 0 FP 1 (R 0); 0.6: TP 1 FP 1 -> P 1/2 at R 1 -> 1/2.
    #   AP before 0.5 / 1.0 / 1.5 s (>= 5 frames before contact): a has no such frame -> never found -> 0.
    #   One recall level (1), reached at the lowest threshold where every frame alarms: a's lead is
    #   toa / fps = 0.2 s -> mTTA = TTA@R80 = 0.2 s; legacy (1 - 0 / 2) * 4 frames / 10 fps = 0.4 s.
    # Threshold 0.65: a's frames before contact (0.2, 0.6) stay below -> recall 0, no lead time (NaN);
    #   n reaches 0.7 -> near-miss false alarms 1; z peaks at 0.1 -> normal false alarms 0.
    # Frame labels at horizon 0.1 s (1 frame): a [0, 1, 1, 1], every negative frame 0. Pooled, descending:
    #   0.8+ 0.7- 0.6+ 0.4+ 0.2- 0.1- 0.1- 0.1-
    #   frame AP: 0.8: P 1 R 1/3; 0.6: P 2/3 R 2/3; 0.4: P 3/4 R 1 -> (1 + 2/3 + 3/4) / 3 = 29/36
    #   before contact (a's 0.2-, 0.6+): 0.7- 0.6+ -> P 1/2 at R 1 -> 1/2
    #   Brier: a (0.2^2 + 0.4^2 + 0.2^2 + 0.6^2) + n (0.1^2 + 0.7^2) + z 2 * 0.1^2 = 0.6 + 0.5 + 0.02 = 1.12 / 8
    #   ECE (15 bins of 1/15; the distinct scores are 0.1 apart, one bin each): sum |labels - scores| per bin
    #   / 8 = (0.3 [three 0.1s] + 0.2 + 0.6 + 0.4 + 0.7 + 0.2) / 8 = 2.4 / 8 = 0.3
    # At the default horizon (2 s) a's frame 0 is positive too: frame AP adds 4/5 at R 1 (a's 0.2 then has
    #   TP 4 FP 1 above it) -> (1 + 2/3 + 3/4 + 4/5) / 4 = 193/240; Brier 1.72 / 8; ECE (2.4 - 0.2 + 0.8) / 8.
    # TTC: no prediction -> NaN. Object hit rate: a's only visible object (0.5) is the involved one -> 1.
    expected = {
        "video_ap": 0.5,
        "frame_ap": 29 / 36,
        "frame_ap_before_contact": 1 / 2,
        "mtta": 0.2,
        "tta_r80": 0.2,
        "tta_r80_threshold": 0.0,
        "legacy_mtta": 0.4,
        "ap_0.5s": 0.0,
        "ap_1.0s": 0.0,
        "ap_1.5s": 0.0,
        "threshold": 0.65,
        "recall_at_threshold": 0.0,
        "lead_time_at_threshold": nan,
        "near_miss_false_alarms": 1.0,
        "normal_false_alarms": 0.0,
        "ece": 0.3,
        "brier": 1.12 / 8,
        "ttc_mae": nan,
        "object_hit_rate": 1.0,
    }
    assert summarize(records, horizon=0.1, threshold=0.65) == pytest.approx(expected, nan_ok=True)
    # the horizon reaches the frame figures: at the default 2 s
    default = summarize(records, threshold=0.65)
    assert default["frame_ap"] == pytest.approx(193 / 240)
    # before contact at 2 s: a's frames 0, 1 both positive: 0.7- 0.6+ (P 1/2, R 1/2), 0.2+ (P 2/3, R 1) -> 7/12
    assert default["frame_ap_before_contact"] == pytest.approx(7 / 12)
    assert default["brier"] == pytest.approx(1.72 / 8)
    assert default["ece"] == pytest.approx(3.0 / 8)


def test_summarize_recall_levels_and_operating_point_by_hand():
    # four_clips (two crashes, so recall 0.5 and 0.8 fall on different levels); by hand in the tests above:
    #   video AP 5/6; AP before 0.5 s 0.75, before 1.0 s and 1.5 s 0 (no frame early enough);
    #   levels recall 1/2 (TTA 0.5 s, legacy 0.625 s) and 1 (TTA 0.7 s, legacy 1.0 s):
    #   mTTA 0.6 s, legacy 0.8125 s, TTA@R80 = the recall-1 level's 0.7 s (TTA@R50 would be 0.5 s).
    # Threshold 0.5: c1 first >= 0.5 at frame 2 (lead 0.6 s), c2 at frame 4 (0.2 s): recall 1, lead 0.4 s;
    #   n1 (near miss) peaks at 0.8 -> 1; n2 (normal) at 0.4 -> 0.
    # Frame labels at horizon 0.1 s: c1 frames 7-9, c2 frames 5-9. Brier:
    #   c1 0.01 + 0.04 + 0.36 + 4 * 0.81 + 0.01 = 3.66; c2 3 * 0.01 + 0.09 + 0.25 + 0.09 + 4 * 0.01 = 0.5;
    #   n1 9 * 0.04 + 0.64 = 1.0; n2 10 * 0.16 = 1.6 -> 6.76 / 40
    out = summarize(four_clips(), horizon=0.1, threshold=0.5)
    assert out["video_ap"] == pytest.approx(5 / 6)
    assert [out["ap_0.5s"], out["ap_1.0s"], out["ap_1.5s"]] == pytest.approx([0.75, 0.0, 0.0])
    assert out["mtta"] == pytest.approx(0.6) and out["legacy_mtta"] == pytest.approx(0.8125)
    assert out["tta_r80"] == pytest.approx(0.7)
    assert out["recall_at_threshold"] == 1.0
    assert out["lead_time_at_threshold"] == pytest.approx(0.4)
    assert out["near_miss_false_alarms"] == 1.0 and out["normal_false_alarms"] == 0.0
    assert out["brier"] == pytest.approx(6.76 / 40)
    assert math.isnan(out["object_hit_rate"]) and math.isnan(out["ttc_mae"])  # no object scores, no TTC


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"scores": [0.1, 0.2], "toa": 2, "fps": 10.0}, "toa < 2"),
        ({"scores": [0.1, 1.2], "toa": 0, "fps": 10.0}, r"\[0, 1\]"),
        ({"scores": [0.1], "toa": 0, "fps": 0.0}, "fps"),
        ({"scores": [0.1], "toa": 0, "fps": 10.0, "kind": "normal"}, "toa must be -1"),
        ({"scores": [0.1], "toa": 0, "fps": 10.0, "kind": "crashed"}, "kind"),
    ],
)
def test_bad_records_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ClipScores(**kwargs, clip_id="v1")
