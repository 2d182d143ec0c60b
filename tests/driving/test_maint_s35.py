"""Maintenance s35: the accident video AP through torchmetrics, the accident clip split on the shared seeded
order (membership pinned), and the detector pipeline's box settings from one place."""

from __future__ import annotations

import math
from pathlib import Path

import albumentations as A
import numpy as np
import pytest

from domains.driving.accident import data as accident_data
from domains.driving.accident import metrics
from domains.driving.accident.metrics import ClipScores, ap_before, video_ap
from domains.driving.accident.readers import AccidentClip
from domains.driving.detection.data import detection_transforms
from shared import data as shared_data

FPS = 10.0


# ------------------------------------------------------------------------------------------ C: video AP


def test_video_ap_is_torchmetrics_ap_scaled_by_the_share_of_crash_clips_that_can_be_found(monkeypatch):
    """Crash c0 (contact at frame 0) is never found; c1 peaks at 0.9 before contact, c2 at 0.5; negatives 0.8
    and 0.4. Over the three crash clips: 0.9 TP 1 FP 0 (P 1, R 1/3); 0.8 TP 1 FP 1; 0.5 TP 2 FP 1 (P 2/3,
    R 2/3); 0.4 no new TP -> AP = 1/3 + 1/3 * 2/3 = 5/9 (5/6 on the two that can be found, times 2/3).
    torchmetrics computes it (one call)."""
    calls = []
    library = metrics.binary_average_precision

    def counted(*args, **kwargs):
        calls.append(args)
        return library(*args, **kwargs)

    monkeypatch.setattr(metrics, "binary_average_precision", counted)
    clips = [
        ClipScores([0.9] * 10, toa=0, fps=FPS),
        ClipScores([0.1, 0.9, 0.1, 0.1, 0.1] + [1.0] * 5, toa=5, fps=FPS),  # 1.0 from contact on: not counted
        ClipScores([0.1, 0.5, 0.1, 0.1, 0.1] + [1.0] * 5, toa=5, fps=FPS),
        ClipScores([0.8] * 10, toa=-1, fps=FPS, kind="near_miss"),
        ClipScores([0.4] * 10, toa=-1, fps=FPS, kind="normal"),
    ]
    assert video_ap(clips) == pytest.approx(5 / 9)
    assert len(calls) == 1 and len(calls[0][0]) == 4  # the found crash clips and the negatives only
    calls.clear()
    assert ap_before(clips, 1.0) == 0.0 and not calls  # no frame early enough anywhere: nothing to rank
    assert math.isnan(video_ap(clips[:3])) and math.isnan(video_ap(clips[3:]))  # no negatives / no crashes


def test_video_ap_equals_sklearn_with_ties_and_crash_clips_never_found():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(35)
    for _ in range(50):
        recs, labels, clip_scores, n_pos = [], [], [], 0
        for i in range(10):
            s = np.round(rng.random(8), 1)  # ties
            if i % 2:
                toa = int(rng.choice([0, 5]))  # contact at frame 0: never found
                recs.append(ClipScores(s, toa=toa, fps=FPS, kind="crash"))
                n_pos += 1
                if toa:
                    labels.append(1)
                    clip_scores.append(s[:toa].max())
            else:
                recs.append(ClipScores(s, toa=-1, fps=FPS, kind="normal"))
                labels.append(0)
                clip_scores.append(s.max())
        found = sum(labels)
        expected = found / n_pos * sklearn_metrics.average_precision_score(labels, clip_scores) if found else 0.0
        assert video_ap(recs) == pytest.approx(expected, abs=1e-6)


# ----------------------------------------------------------------------------------- D: the clip split


# Produced by split_clips before the refactor onto shared.data.stable_rank (its own _rank, SHA-1 of
# "<seed>:<clip id>"): any change to which clip lands in which split, or to their order, fails here.
SPLIT_BEFORE_REFACTOR = {
    0: {
        "train": [
            "clip_021", "clip_009", "clip_003", "clip_012", "clip_000", "clip_004", "clip_016", "clip_022",
            "clip_007", "clip_001", "clip_008", "clip_002", "clip_011", "clip_020", "Crash-1500:3",
        ],
        "val": ["clip_006", "clip_015", "clip_019", "dota/a_12", "clip_005", "clip_014"],
        "test": ["clip_018", "000007", "clip_010", "clip_013", "clip_017", "clip_023"],
    },
    7: {
        "train": [
            "clip_015", "clip_012", "clip_018", "clip_009", "clip_006", "clip_019", "clip_022", "clip_013",
            "clip_004", "clip_016", "clip_008", "clip_005", "clip_002", "clip_017", "clip_023",
        ],
        "val": ["clip_003", "clip_021", "clip_007", "clip_010", "Crash-1500:3", "clip_014"],
        "test": ["clip_000", "000007", "clip_001", "dota/a_12", "clip_011", "clip_020"],
    },
}  # fmt: skip


def test_clip_split_is_the_one_the_code_before_the_refactor_gave():
    kinds = ["crash", "near_miss", "normal"]
    ids = [f"clip_{i:03d}" for i in range(24)] + ["000007", "dota/a_12", "Crash-1500:3"]
    clips = [
        AccidentClip(c, kinds[i % 3], FPS, 20, 5 if i % 3 == 0 else -1, Path(c)) for i, c in enumerate(ids)
    ]
    for seed, expected in SPLIT_BEFORE_REFACTOR.items():
        splits = accident_data.split_clips(clips, 0.2, 0.25, seed)
        assert {k: [c.clip_id for c in v] for k, v in splits.items()} == expected, seed
    # one seeded order, written once: the accident split sorts by the shared one
    assert accident_data.stable_rank is shared_data.stable_rank


# ------------------------------------------------------------------- E: the detector's box settings


def _boxes_kept_by_crops(pipeline: A.Compose) -> dict[int, int]:
    """Boxes left of a 50x40 box at x 150-200 of a 200x100 image after crops to x < 163 (26 % of it left) and
    x < 168 (36 %), with the pipeline's own box settings."""
    image = np.zeros((100, 200, 3), np.uint8)
    box = np.array([[150.0, 30.0, 200.0, 70.0]], np.float32)
    params = pipeline.processors["bboxes"].params
    kept = {}
    for x_max in (163, 168):
        crop = A.Compose([A.Crop(x_min=0, y_min=0, x_max=x_max, y_max=100)], bbox_params=params)
        kept[x_max] = len(crop(image=image, bboxes=box, labels=[0])["bboxes"])
    return kept


@pytest.mark.parametrize("train", [True, False])
def test_detection_transforms_take_min_visibility_from_the_shared_box_settings(train):
    default = detection_transforms(train, image_size=(100, 200), seed=0)
    assert default.processors["bboxes"].params.min_visibility == shared_data.DETECTION_MIN_VISIBILITY == 0.3
    assert _boxes_kept_by_crops(default) == {163: 0, 168: 1}
    strict = detection_transforms(train, image_size=(100, 200), seed=0, min_visibility=0.5)
    assert strict.processors["bboxes"].params.min_visibility == 0.5
    assert _boxes_kept_by_crops(strict) == {163: 0, 168: 0}  # 36 % < 50 %: dropped too
