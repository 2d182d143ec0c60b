"""Detection metrics: KITTI AP|R40 by hand and against the devkit's numbers, recall by box height."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from domains.driving.detection.metrics import kitti_average_precision, recall_by_height

# ------------------------------------------------------------------------------------------------ KITTI


def gt(typ="Car", box=(100, 100, 200, 180), trunc=0.0, occ=0):
    return {"type": typ, "bbox": box, "truncated": trunc, "occluded": occ}


def det(typ="Car", box=(100, 100, 200, 180), score=0.5):
    return {"type": typ, "bbox": box, "score": score}


def _perfect(n, typ="Car"):
    """n images with one object each, found exactly, distinct scores."""
    return [[det(typ, score=0.5 + i / (2 * n))] for i in range(n)], [[gt(typ)] for _ in range(n)]


def test_kitti_perfect_detections_ap_one():
    dets, gts = _perfect(100)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = kitti_average_precision(dets, gts)
    assert sorted(str(w.message).split()[4] for w in caught) == ["Cyclist", "Pedestrian"]  # "no valid X ..."
    assert out["Car"] == pytest.approx(1.0) and math.isnan(out["Pedestrian"])


def test_kitti_half_found_by_hand_and_small_set_quirk():
    # 80 cars, the 40 in even images found with precision 1: recall reaches 1/2. R40 samples recall
    # 1/40 ... 40/40; samples 1/40 ... 20/40 have precision 1, the rest 0 -> AP = 20/40.
    dets, gts = _perfect(80)
    dets = [d if i % 2 == 0 else [] for i, d in enumerate(dets)]
    assert kitti_average_precision(dets, gts, classes=("Car",)) == {"Car": pytest.approx(0.5)}
    # The devkit samples recall by detection count: 2 perfectly found cars give only 1/40 (kept on purpose).
    dets2, gts2 = _perfect(2)
    assert kitti_average_precision(dets2, gts2, classes="Car")["Car"] == pytest.approx(1 / 40)


def test_kitti_a_detection_at_exactly_the_minimum_overlap_is_no_match_as_the_devkit_says():
    """The devkit matches on overlap > 0.7 for cars: a box of IoU exactly 0.7 is a miss and a false alarm."""
    truth = gt(box=(100, 100, 200, 200))
    exact = det(box=(100, 100, 200, 170))  # 7,000 / 10,000 px: IoU 0.7
    above = det(box=(100, 100, 200, 171))
    for found, ap in ((exact, 0.0), (above, 1.0)):
        dets = [[{**found, "score": 0.5 + i / 200}] for i in range(100)]
        assert kitti_average_precision(dets, [[truth]] * 100, classes=("Car",))["Car"] == pytest.approx(ap)


def test_kitti_iou_threshold_depends_on_class():
    # det (100,100,200,160) inside gt (100,100,200,200): IoU = 6000 / 10000 = 0.6
    n = 100
    for typ, expected in (("Car", 0.0), ("Pedestrian", 1.0)):
        dets = [[det(typ, box=(100, 100, 200, 160), score=0.5 + i / 1000)] for i in range(n)]
        gts = [[gt(typ, box=(100, 100, 200, 200))] for _ in range(n)]
        assert kitti_average_precision(dets, gts, classes=(typ,))[typ] == pytest.approx(expected), typ


def test_kitti_difficulty_filters_ignore_hard_ground_truth():
    dets, gts = _perfect(100)
    # 100 more images with one heavily occluded (level 2) car that nobody detects
    gts = gts + [[gt(occ=2)] for _ in range(100)]
    dets = dets + [[] for _ in range(100)]
    assert kitti_average_precision(dets, gts, classes=("Car",), difficulty="easy")["Car"] == pytest.approx(
        1.0
    )
    assert kitti_average_precision(dets, gts, classes=("Car",), difficulty="moderate")[
        "Car"
    ] == pytest.approx(1.0)
    # under "hard" they count: recall 1/2 at precision 1 -> 20/40
    assert kitti_average_precision(dets, gts, classes=("Car",), difficulty="hard")["Car"] == pytest.approx(
        0.5
    )
    # too small for easy (height 30 < 40) but fine for moderate
    dets_s, gts_s = _perfect(100)
    gts_s = gts_s + [[gt(box=(0, 0, 50, 30))] for _ in range(100)]
    dets_s = dets_s + [[] for _ in range(100)]
    assert kitti_average_precision(dets_s, gts_s, classes=("Car",), difficulty="easy")["Car"] == 1.0
    assert kitti_average_precision(dets_s, gts_s, classes=("Car",), difficulty="moderate")["Car"] == 0.5



def test_kitti_ground_truth_exactly_at_the_minimum_height_is_ignored_as_the_devkit_does():
    """cleanData: a ground-truth box with ``height <= MIN_HEIGHT`` is too hard; a detection only when below it."""
    dets, gts = _perfect(100)
    for height, difficulty in ((25, "moderate"), (40, "easy")):
        missed = [[gt(box=(0, 0, 50, height))] for _ in range(100)]  # exactly at the level's minimum: ignored
        ap = kitti_average_precision(dets + [[] for _ in range(100)], gts + missed, "Car", difficulty)["Car"]
        assert ap == pytest.approx(1.0), (height, difficulty)
        missed = [[gt(box=(0, 0, 50, height + 0.5))] for _ in range(100)]  # just above: counted, recall 1/2
        ap = kitti_average_precision(dets + [[] for _ in range(100)], gts + missed, "Car", difficulty)["Car"]
        assert ap == pytest.approx(0.5), (height, difficulty)
    # a detection exactly at the minimum height stays valid: it finds a car of that height
    found = [[det(box=(0, 0, 50, 25), score=0.5 + i / 200)] for i in range(100)]
    tall = [[gt(box=(0, 0, 50, 25.5))] for _ in range(100)]
    assert kitti_average_precision(found, tall, "Car", "moderate")["Car"] == pytest.approx(1.0)

def test_kitti_min_height_scale_keeps_the_same_objects_in_smaller_frames():
    # 100 found cars plus 100 missed 20-px-high cars: at KITTI's 375 px the small ones are under moderate's
    # 25 px (ignored, AP 1); in a 192-px frame (scale 0.512 -> 12.8 px) they count: recall 1/2 -> 20/40
    dets, gts = _perfect(100)
    gts = gts + [[gt(box=(0, 0, 30, 20))] for _ in range(100)]
    dets = dets + [[] for _ in range(100)]
    assert kitti_average_precision(dets, gts, classes="Car")["Car"] == pytest.approx(1.0)
    assert kitti_average_precision(dets, gts, classes="Car", min_height_scale=0.512)["Car"] == pytest.approx(
        0.5
    )
    # easy's 40 px become 20.48 px: the 20-px cars stay ignored
    assert kitti_average_precision(dets, gts, "Car", "easy", min_height_scale=0.512)["Car"] == pytest.approx(
        1.0
    )
    with pytest.raises(ValueError, match="min_height_scale"):
        kitti_average_precision(dets, gts, classes="Car", min_height_scale=0)


def test_kitti_dontcare_suppresses_false_positive():
    dets, gts = _perfect(100)
    # one extra, higher-scoring Car detection per image inside a DontCare region
    fp_box = (400, 100, 480, 160)
    dets_fp = [d + [det(box=fp_box, score=0.99)] for d in dets]
    no_dc = kitti_average_precision(dets_fp, gts, classes=("Car",))["Car"]
    assert no_dc < 0.6  # precision about 1/2 everywhere
    gts_dc = [g + [gt("DontCare", box=(390, 90, 500, 170), trunc=-1, occ=-1)] for g in gts]
    assert kitti_average_precision(dets_fp, gts_dc, classes=("Car",))["Car"] == pytest.approx(1.0)


def test_kitti_neighbour_class_and_small_detections_are_ignored():
    dets, gts = _perfect(100)
    van = (400, 100, 500, 180)
    # a Car detection on a Van: neither TP nor FP; the Van itself is not a missed Car
    dets_v = [d + [det(box=van, score=0.99)] for d in dets]
    gts_v = [g + [gt("Van", box=van)] for g in gts]
    assert kitti_average_precision(dets_v, gts_v, classes=("Car",))["Car"] == pytest.approx(1.0)
    # a 20-px-high stray Car detection is below the moderate minimum height: ignored, not a FP
    dets_small = [d + [det(box=(600, 10, 640, 30), score=0.99)] for d in dets]
    assert kitti_average_precision(dets_small, gts, classes=("Car",))["Car"] == pytest.approx(1.0)
    # the same stray box at 40 px high is a FP
    dets_big = [d + [det(box=(600, 10, 640, 50), score=0.99)] for d in dets]
    assert kitti_average_precision(dets_big, gts, classes=("Car",))["Car"] < 0.6


def _random_kitti(seed, n_images):
    """Random scenes with every KITTI corner case (used for the devkit regression below)."""
    rng = np.random.default_rng(seed)
    gt_types = [
        "Car",
        "Car",
        "Car",
        "Van",
        "Pedestrian",
        "Pedestrian",
        "Person_sitting",
        "Cyclist",
        "DontCare",
    ]
    det_types = ["Car", "Car", "Pedestrian", "Cyclist", "Van"]

    def box():
        x, y, w, h = rng.uniform(0, 1100), rng.uniform(0, 300), rng.uniform(10, 200), rng.uniform(10, 120)
        return [round(x, 2), round(y, 2), round(x + w, 2), round(y + h, 2)]

    gts, dets = [], []
    for _ in range(n_images):
        g = []
        for _ in range(int(rng.integers(0, 7))):
            t = gt_types[int(rng.integers(len(gt_types)))]
            dc = t == "DontCare"
            g.append(
                gt(
                    t,
                    box(),
                    -1.0 if dc else [0.0, 0.1, 0.2, 0.4][int(rng.integers(4))],
                    -1 if dc else [0, 0, 0, 1, 2][int(rng.integers(5))],
                )
            )
        d = []
        for o in g:
            if rng.random() < 0.35:
                continue
            b = np.array(o["bbox"]) + rng.normal(0, [1, 4, 10][int(rng.integers(3))], 4)
            b[2], b[3] = max(b[2], b[0] + 1), max(b[3], b[1] + 1)
            t = (
                o["type"]
                if o["type"] in det_types and rng.random() < 0.8
                else det_types[int(rng.integers(5))]
            )
            d.append(det(t, [round(float(v), 2) for v in b], round(float(rng.random()), 3)))
        for _ in range(int(rng.integers(0, 4))):
            d.append(det(det_types[int(rng.integers(5))], box(), round(float(rng.random()), 3)))
        gts.append(g)
        dets.append(d)
    return dets, gts


# AP|R40 of _random_kitti(0, 150) from a C++ transcription of the devkit's cleanData / computeStatistics /
# getThresholds / eval_class (the Python port agreed to 5e-13 on 35 random data sets).
# Printed by the C++ with %.12f.
DEVKIT_REFERENCE = {
    "easy": {"Car": 0.052071658675, "Pedestrian": 0.161823204502, "Cyclist": 0.009821428571},
    "moderate": {"Car": 0.107650614678, "Pedestrian": 0.219129824804, "Cyclist": 0.046838649156},
    "hard": {"Car": 0.168642796319, "Pedestrian": 0.258506963943, "Cyclist": 0.127634566706},
}


@pytest.mark.parametrize("difficulty", ["easy", "moderate", "hard"])
def test_kitti_matches_devkit_reference(difficulty):
    dets, gts = _random_kitti(0, 150)
    out = kitti_average_precision(dets, gts, difficulty=difficulty)
    for cls, ref in DEVKIT_REFERENCE[difficulty].items():
        assert out[cls] == pytest.approx(ref, abs=1e-9), cls


def test_kitti_input_validation():
    dets, gts = _perfect(3)
    with pytest.raises(ValueError, match="2 images but ground truth for 3"):
        kitti_average_precision(dets[:2], gts)
    with pytest.raises(ValueError, match=r"image 'b'.*missing 'score'"):
        kitti_average_precision(
            {"a": dets[0], "b": [{"type": "Car", "bbox": (0, 0, 5, 5)}]}, {"a": gts[0], "b": gts[1]}
        )
    with pytest.raises(ValueError, match="same images"):
        kitti_average_precision({"a": dets[0]}, {"b": gts[0]})
    with pytest.raises(ValueError, match="difficulty"):
        kitti_average_precision(dets, gts, difficulty="extreme")
    with pytest.raises(ValueError, match="boxes"):
        kitti_average_precision([[det(box=(10, 10, 5, 20))]], [[gt()]])
    # a dict of sequences per image is accepted as well as a list of dicts
    boxes = [[100, 100, 200, 180], [300, 100, 400, 180]]
    as_arrays = [{"type": ["Car", "Car"], "bbox": np.array(boxes), "score": [0.9, 0.8]}]
    gt_arrays = [{"type": ["Car", "Car"], "bbox": boxes, "truncated": [0.0, 0.0], "occluded": [0, 0]}]
    out = kitti_average_precision(as_arrays, gt_arrays, classes=("Car",))
    assert out["Car"] == pytest.approx(1 / 40)  # 2 objects found: the small-set quirk again


# -------------------------------------------------------------------------------------- recall by height


def test_recall_by_height_hand_made_boxes():
    gts = [
        {"boxes": [[0, 0, 20, 10], [100, 0, 110, 30], [200, 0, 205, 20]], "labels": [0, 1, 1]},
        {"boxes": [[0, 0, 100, 50]], "labels": [0]},
    ]
    dets = [
        {  # car IoU 0.9; pedestrian IoU 200/300; the last pedestrian only by a car box or under min_score
            "boxes": [[0, 0, 20, 9], [100, 0, 110, 20], [200, 0, 205, 20], [200, 0, 205, 20]],
            "labels": [0, 1, 1, 0],
            "scores": [0.9, 0.8, 0.01, 0.9],
        },
        {"boxes": [[0, 0, 100, 30]], "labels": [0], "scores": [0.9]},  # IoU 0.6 < the car's 0.7
    ]
    out = recall_by_height(dets, gts, num_classes=2, iou_threshold=[0.7, 0.5])
    car = {(b["low"], b["high"]): (b["n"], b["found"]) for b in out[0]}
    ped = {(b["low"], b["high"]): (b["n"], b["found"]) for b in out[1]}
    assert car[(0.0, 15.0)] == (1, 1) and car[(40.0, 80.0)] == (1, 0) and car[(15.0, 25.0)] == (0, 0)
    assert ped[(15.0, 25.0)] == (1, 0) and ped[(25.0, 40.0)] == (1, 1)
    assert math.isnan(out[0][1]["recall"]) and out[1][2]["recall"] == 1.0
    # with one IoU threshold of 0.6 the second car counts as found
    loose = recall_by_height(dets, gts, num_classes=2, iou_threshold=0.6)
    assert loose[0][3]["found"] == 1
    with pytest.raises(ValueError, match="detection sets"):
        recall_by_height(dets[:1], gts, num_classes=2)
    with pytest.raises(ValueError, match="outside 0..1"):
        recall_by_height(dets[:1], [{"boxes": [[0, 0, 1, 1]], "labels": [5]}], num_classes=2)


def test_recall_by_height_puts_a_box_on_an_edge_in_the_bin_it_opens():
    """Bins are [low, high): a 25 px box belongs to (25, 40) and a 15 px one to (15, 25), not the bins below."""
    gts = [{"boxes": [[0, 0, 10, 25], [20, 0, 30, 15]], "labels": [0, 0]}]
    dets = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "scores": torch.zeros(0)}]
    car = {(b["low"], b["high"]): (b["n"], b["found"]) for b in recall_by_height(dets, gts, num_classes=1)[0]}
    assert car[(25.0, 40.0)] == (1, 0) and car[(15.0, 25.0)] == (1, 0) and car[(0.0, 15.0)] == (0, 0)


def test_ap50_per_class_from_the_extended_summary_equals_a_metric_at_iou_half_only():
    """One COCO metric gives per-class AP50 (precision table, first IoU) exactly as a second metric evaluated at
    IoU 0.5 alone would; a class predicted but never in the ground truth is left out."""
    from torchmetrics.detection import MeanAveragePrecision

    from domains.driving.detection.metrics import ap50_per_class

    g = torch.Generator().manual_seed(0)
    preds, targets = [], []
    for _ in range(6):
        corner = torch.rand(4, 2, generator=g) * 50
        boxes = torch.cat([corner, corner + 10 + torch.rand(4, 2, generator=g) * 20], 1)
        labels = torch.randint(0, 3, (4,), generator=g)
        noisy = boxes + torch.randn(4, 4, generator=g) * 3
        predicted = labels.clone()
        predicted[0] = 3  # a class the ground truth never has
        preds.append({"boxes": noisy, "scores": torch.rand(4, generator=g), "labels": predicted})
        targets.append({"boxes": boxes, "labels": labels})
    full = MeanAveragePrecision(backend="faster_coco_eval", class_metrics=True, extended_summary=True)
    half = MeanAveragePrecision(backend="faster_coco_eval", class_metrics=True, iou_thresholds=[0.5])
    full.update(preds, targets)
    half.update(preds, targets)
    got, reference = ap50_per_class(full.compute()), half.compute()
    expected = {
        int(c): float(v) for c, v in zip(reference["classes"], reference["map_per_class"]) if float(v) >= 0
    }
    assert set(got) == set(expected) == {0, 1, 2}
    assert got == pytest.approx(expected, abs=1e-6)
