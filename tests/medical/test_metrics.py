"""Medical metrics against hand-computed answers (2x2 and 1xW toy masks)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from domains.medical.metrics import (
    SegmentationUncertaintyMetrics,
    generalized_energy_distance,
    hungarian_matched_iou,
    majority_vote,
    pairwise_iou,
    sample_diversity,
)

# Two 2x2 masks of two pixels each sharing one pixel: IoU = 1 / 3.
A = np.array([[1, 1], [0, 0]], dtype=np.uint8)
B = np.array([[1, 0], [1, 0]], dtype=np.uint8)
EMPTY = np.zeros((2, 2), dtype=np.uint8)
FULL = np.ones((2, 2), dtype=np.uint8)


def stack(*masks):
    return np.stack(masks)


def interval(start, stop, width=20):
    """A 1 x width mask with pixels [start, stop) set: IoUs of intervals are easy to do by hand."""
    m = np.zeros((1, width), dtype=np.uint8)
    m[0, start:stop] = 1
    return m


def test_pairwise_iou_conventions():
    iou = pairwise_iou(stack(A, B, EMPTY), stack(A, B, EMPTY))
    expected = np.array([[1, 1 / 3, 0], [1 / 3, 1, 0], [0, 0, 1]])  # empty-empty = 1, one empty = 0
    np.testing.assert_allclose(iou, expected, atol=1e-12)
    assert isinstance(pairwise_iou(torch.from_numpy(stack(A)), torch.from_numpy(stack(B))), torch.Tensor)


def test_ged_identical_sets_is_zero():
    s = stack(A, B, EMPTY)
    assert generalized_energy_distance(s, s) == pytest.approx(0.0, abs=1e-12)


def test_ged_empty_sample_vs_full_annotation():
    # d(S,Y) = 1 - 0 = 1; both self terms are 0 -> 2 * 1 - 0 - 0 = 2
    assert generalized_energy_distance(stack(EMPTY), stack(FULL)) == pytest.approx(2.0)


def test_ged_one_sample_two_readers_by_hand():
    # E[d(S,Y)] = (0 + 2/3) / 2 = 1/3; E[d(S,S')] = 0; E[d(Y,Y')] = (0 + 2/3 + 2/3 + 0) / 4 = 1/3
    # D2 = 2/3 - 0 - 1/3 = 1/3
    assert generalized_energy_distance(stack(A), stack(A, B)) == pytest.approx(1 / 3)


def test_all_empty_gives_zero_ged_and_unit_hungarian():
    s, y = stack(EMPTY, EMPTY, EMPTY), stack(EMPTY, EMPTY)
    assert generalized_energy_distance(s, y) == pytest.approx(0.0)
    assert hungarian_matched_iou(s, y) == pytest.approx(1.0)


def test_diversity():
    assert sample_diversity(stack(A, A, A)) == pytest.approx(0.0)
    # pairs (A,A) 0, (A,B) 2/3, (B,A) 2/3, (B,B) 0 -> 1/3 (self-pairs included)
    assert sample_diversity(stack(A, B)) == pytest.approx(1 / 3)


def test_hungarian_beats_greedy():
    y0, y1 = interval(0, 10), interval(4, 14)
    s0, s1 = interval(1, 11), interval(0, 8)
    # IoU(s0,y0)=9/11, IoU(s0,y1)=7/13, IoU(s1,y0)=8/10, IoU(s1,y1)=4/14.
    iou = pairwise_iou(stack(s0, s1), stack(y0, y1))
    np.testing.assert_allclose(iou, [[9 / 11, 7 / 13], [8 / 10, 4 / 14]])
    greedy = (9 / 11 + 4 / 14) / 2  # best pair first, then what is left
    optimal = (7 / 13 + 8 / 10) / 2  # = 87/130
    got = hungarian_matched_iou(stack(s0, s1), stack(y0, y1))
    assert got == pytest.approx(87 / 130)
    assert got == pytest.approx(optimal) and got > greedy + 0.1


def test_hungarian_replicates_readers():
    # 4 samples, 2 readers -> each reader used twice: samples A,A,B,B match perfectly.
    assert hungarian_matched_iou(stack(A, A, B, B), stack(A, B)) == pytest.approx(1.0)
    # 4 samples all A, readers A,B -> two matched to A (1), two forced onto B (1/3) -> 2/3
    assert hungarian_matched_iou(stack(A, A, A, A), stack(A, B)) == pytest.approx(2 / 3)


def test_hungarian_non_multiple_lets_assignment_pick_surplus_copies():
    # N=3, M=2: targets A,B,A,B; samples B,B,A all find an exact copy -> 1.
    # (Truncating the tile to A,B,A would force one B onto A: 7/9.)
    assert hungarian_matched_iou(stack(B, B, A), stack(A, B)) == pytest.approx(1.0)
    # N < M: the best reader is chosen.
    assert hungarian_matched_iou(stack(B), stack(A, B)) == pytest.approx(1.0)


def test_input_validation():
    with pytest.raises(ValueError, match=r"\(K, H, W\)"):
        generalized_energy_distance(A, stack(A))
    with pytest.raises(ValueError, match="share"):
        generalized_energy_distance(stack(A), np.zeros((1, 3, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="binary"):
        hungarian_matched_iou(stack(A * 2), stack(A))
    with pytest.raises(ValueError, match="binary"):
        sample_diversity(np.full((1, 2, 2), 0.5))
    with pytest.raises(ValueError, match="at least one"):
        sample_diversity(np.zeros((0, 2, 2)))


def test_torch_inputs_match_numpy():
    rng = np.random.default_rng(0)
    s = (rng.random((5, 6, 6)) > 0.5).astype(np.uint8)
    y = (rng.random((3, 6, 6)) > 0.5).astype(np.uint8)
    ged_np = generalized_energy_distance(s, y)
    ged_t = generalized_energy_distance(torch.from_numpy(s).bool(), torch.from_numpy(y).float())
    assert ged_np == pytest.approx(ged_t)


def test_majority_vote_ties_go_to_foreground():
    readers = torch.tensor(np.stack([A, B, EMPTY, EMPTY]))[None]  # votes [[2,1],[1,0]] of 4
    np.testing.assert_array_equal(majority_vote(readers)[0, 0].numpy(), [[1, 0], [0, 0]])


def _toy_batch():
    """Image 0: samples A,A readers A,B. Image 1: everything empty."""
    samples = torch.tensor(np.stack([stack(A, A), stack(EMPTY, EMPTY)])).float()
    readers = torch.tensor(np.stack([stack(A, B), stack(EMPTY, EMPTY)])).float()
    return samples, samples.mean(dim=1, keepdim=True), readers


# Image 0 by hand: GED 1/3; Hungarian (1 + 1/3)/2 = 2/3; diversity 0; prediction = A;
# Dice(A,A)=1, Dice(A,B)=2*1/(2+2)=0.5 -> 0.75; majority of {A,B} (ties -> fg) = 3 px: Dice 2*2/5 = 0.8;
# ECE (20 bins) vs the readers' mean [[1, .5], [.5, 0]]: p=1 on A's two pixels (shares 1 and .5, mean .75)
# -> |1 - .75| * 2/4, p=0 on the other two (shares .5 and 0, mean .25) -> |0 - .25| * 2/4 -> 0.25.
# ECE vs the majority [[1, 1], [1, 0]]: p=0 on two pixels with majority 1 and 0 -> |0 - 0.5| * 2/4, p=1 on two
# correct -> 0 -> 0.25 (the two targets part in test_metrics_audit_s33).
# Image 1: GED 0, Hungarian 1, diversity 0, Dice 1 (empty vs empty), both ECEs 0; no reader marks a lesion,
# so the *_lesion means are image 0's alone.
EXPECTED = {
    "ged": (1 / 3 + 0) / 2,
    "hungarian_iou": (2 / 3 + 1) / 2,
    "diversity": 0.0,
    "dice_readers": (0.75 + 1) / 2,
    "dice_majority": (0.8 + 1) / 2,
    "ece": (0.25 + 0) / 2,
    "ece_majority": (0.25 + 0) / 2,
    "num_samples": 2.0,
    "num_images": 2,
    "num_empty_images": 1,
    "ged_lesion": 1 / 3,
    "hungarian_iou_lesion": 2 / 3,
    "dice_readers_lesion": 0.75,
}


def assert_expected(out):
    assert set(out) == set(EXPECTED)
    for k, v in EXPECTED.items():
        assert out[k] == pytest.approx(v, abs=1e-6), k


def test_metric_class_hand_computed():
    metric = SegmentationUncertaintyMetrics()
    metric.update(*_toy_batch())
    assert_expected(metric.compute())


def test_metric_class_accumulates_resets_and_merges_like_ddp():
    samples, prob, readers = _toy_batch()
    metric = SegmentationUncertaintyMetrics()
    metric.update(samples[:1], prob[:1], readers[:1])
    metric.update(samples[1:], None, readers[1:])  # mean_prob defaults to the sample mean
    assert_expected(metric.compute())

    metric.reset()
    metric.update(samples[1:], prob[1:], readers[1:])
    assert metric.compute()["ged"] == pytest.approx(0.0) and metric.compute()["num_images"] == 1

    # Two "ranks" each holding one image: summing states (what dist_reduce_fx="sum" does) gives the total.
    rank0, rank1 = SegmentationUncertaintyMetrics(), SegmentationUncertaintyMetrics()
    rank0.update(samples[:1], prob[:1], readers[:1])
    rank1.update(samples[1:], prob[1:], readers[1:])
    rank0.merge_state(rank1)
    assert_expected(rank0.compute())


def test_metric_class_batches_its_set_metrics_as_the_per_image_functions_score_them():
    """The class computes each image's IoU matrices once, a few images per product: over a batch that is not
    a multiple of that, with empty masks among them, it agrees with the functions image by image."""
    gen = torch.Generator().manual_seed(0)
    samples = (torch.rand(6, 5, 9, 7, generator=gen) > 0.6).float()
    readers = (torch.rand(6, 3, 9, 7, generator=gen) > 0.6).float()
    samples[2], readers[3, 1] = 0, 0
    metric = SegmentationUncertaintyMetrics()
    metric.update(samples, None, readers)
    out = metric.compute()
    pairs = list(zip(samples, readers))
    assert out["ged"] == pytest.approx(np.mean([generalized_energy_distance(s, y) for s, y in pairs]), abs=1e-12)
    assert out["hungarian_iou"] == pytest.approx(np.mean([hungarian_matched_iou(s, y) for s, y in pairs]), abs=1e-12)
    assert out["diversity"] == pytest.approx(np.mean([sample_diversity(s) for s, _ in pairs]), abs=1e-12)


def test_metric_class_dice_empty_reader_nonempty_prediction_is_zero():
    samples = torch.tensor(stack(A, A))[None].float()
    readers = torch.tensor(stack(EMPTY))[None].float()
    metric = SegmentationUncertaintyMetrics()
    metric.update(samples, None, readers)
    out = metric.compute()
    assert out["dice_readers"] == pytest.approx(0.0)
    assert out["dice_majority"] == pytest.approx(0.0)
    assert out["hungarian_iou"] == pytest.approx(0.0)


def test_metric_class_threshold_is_inclusive():
    # samples A and EMPTY -> mean_prob 0.5 on A's pixels -> foreground at threshold 0.5 -> Dice vs A is 1
    samples = torch.tensor(stack(A, EMPTY))[None].float()
    readers = torch.tensor(stack(A))[None].float()
    metric = SegmentationUncertaintyMetrics()
    metric.update(samples, None, readers)
    assert metric.compute()["dice_readers"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "probs, reader, ece",
    [
        # 20 bins of width 0.05: 0.2 and 0.8 fall in different bins. Bin of 0.2: confidence 0.2, frequency
        # of the (majority = only) reader 1 -> 0.8; bin of 0.8: 0.8 vs 0 -> 0.8; weights 2/4 each -> 0.8.
        # A single bin would pool them: confidence 0.5, frequency 0.5 -> 0.
        ([0.2, 0.2, 0.8, 0.8], [1, 1, 0, 0], 0.8),
        # 0.32 in [0.30, 0.35), 0.37 in [0.35, 0.40): (|0.32 - 1| + |0.37 - 0|) / 2 = 0.525.
        # 10 bins would pool them in [0.3, 0.4): |0.345 - 0.5| = 0.155.
        ([0.32, 0.37], [1, 0], 0.525),
        # 0.449 | 0.451 straddle the 20-bin edge 0.45, which 10, 15, 25, 30, 50 or 100 bins do not have:
        # apart, (0.551 + 0.451) / 2 = 0.501; pooled, |0.45 - 0.5| = 0.05
        ([0.449, 0.451], [1, 0], 0.501),
    ],
)
def test_metric_class_ece_uses_20_bins_of_foreground_probability(probs, reader, ece):
    mean_prob = torch.tensor(probs)[None, None, None]  # (1, 1, 1, W)
    # one reader: its mask is both the readers' mean (``ece``) and the majority (``ece_majority``)
    readers = torch.tensor(reader, dtype=torch.float32)[None, None, None]
    samples = (mean_prob >= 0.5).float()
    metric = SegmentationUncertaintyMetrics()
    metric.update(samples, mean_prob, readers)
    out = metric.compute()
    assert out["ece"] == pytest.approx(ece, abs=1e-6)
    assert out["ece_majority"] == pytest.approx(ece, abs=1e-6)


def test_metric_class_validation():
    metric = SegmentationUncertaintyMetrics()
    samples, prob, readers = _toy_batch()
    with pytest.raises(ValueError, match="mean_prob"):
        metric.update(samples, prob[:, :, :1], readers)
    with pytest.raises(ValueError, match="reader_masks"):
        metric.update(samples, prob, readers[:1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metric.update(samples, prob * 3, readers)
    with pytest.raises(ValueError, match="binary"):
        metric.update(samples * 2, prob, readers)


def test_benchmark_majority_reference_by_hand():
    """benchmarks/medical.py's no-model row: three readers mark A, one marks nothing, so the majority is A.

    GED = 2 E d(S,Y) - E d(S,S') - E d(Y,Y') = 2 * 1/4 - 0 - 6/16 = 0.125 (A vs the empty reader: d = 1,
    6 of the 16 reader pairs); reader diversity 6/16; Dice of A vs the readers (1 + 1 + 1 + 0) / 4.
    """
    from benchmarks.medical import majority_reference

    class OneBatch:  # the test split of a data module: one batch of one image's readers (1, 4, 2, 2)
        def __init__(self, *readers):
            self.readers = torch.from_numpy(stack(*readers)).float()[None]

        def test_dataloader(self):
            return [{"masks": self.readers}]

    ref = majority_reference(OneBatch(A, A, A, EMPTY), num_samples=5)
    assert ref["ged"] == pytest.approx(0.125)
    assert ref["reader_diversity"] == pytest.approx(0.375)
    assert ref["dice_readers"] == pytest.approx(0.75)
    assert ref["diversity"] == 0.0
    assert ref["hungarian_iou"] == pytest.approx(1.0)  # 5 samples, 6 of the 8 tiled targets are A

    # Readers split 2-2: A, B, nothing, nothing. The majority (at least 2 of 4) is A & B, one pixel M.
    # d(M, A) = d(M, B) = 1 - 1/2, d(M, empty) = 1: E d(S,Y) = 3/4. Reader pairs: A-B twice at 2/3, eight
    # lesion-empty pairs at 1: E d(Y,Y') = (4/3 + 8) / 16 = 7/12. GED = 3/2 - 7/12 = 11/12, while the empty
    # mask would score 2 * 1/2 - 7/12 = 5/12: the majority is not always the GED-best deterministic answer.
    ref = majority_reference(OneBatch(A, B, EMPTY, EMPTY), num_samples=4)
    assert ref["ged"] == pytest.approx(11 / 12)
    assert ref["reader_diversity"] == pytest.approx(7 / 12)
    empty_ged = generalized_energy_distance(stack(EMPTY, EMPTY), stack(A, B, EMPTY, EMPTY))
    assert empty_ged == pytest.approx(5 / 12)


def test_benchmark_report_judges_no_target_of_a_smoke_run():
    """`benchmarks/medical.py --steps 2`: three untrained models tied (GED 1.194) and the ties PASSed "HPU-Net
    GED <= Prob. U-Net GED" and "Dice at most 0.05 lower"."""
    import types

    from benchmarks.medical import report

    def row(name, steps, ged=1.194):
        return {"name": name, "steps": steps, "img_per_s": 10.0, "ged": ged, "hungarian_iou": 0.5, "diversity": 0.3,
                "dice": 0.5, "dice_majority": 0.5, "ece": 0.1, "ece_majority": 0.2, "sample16_ms": 10.0,
                "unet_forward_ms": 8.0, "num_images": 10.0, "num_empty_images": 2.0}  # fmt: skip

    args = types.SimpleNamespace(data_path=None, readers="lidc", crop_size=64, batch_size=16, lr=1e-3, steps=800,
                                 num_samples=16, precision="32-true", timing_repeats=3, budget_minutes=12.0,
                                 models=["unet", "prob_unet", "hpu_net"], argv=[])  # fmt: skip
    tied = [row("unet", 2), row("prob_unet", 2), row("hpu_net", 2)]
    text = report(tied, args, "cpu", 4.0)
    assert "**Smoke run**: 2 training steps (under 100)" in text
    assert "PASS" not in text and "FAIL" not in text and text.count("not judged (smoke run)") == 7
    trained = [row("unet", 800, 0.5), row("prob_unet", 800, 0.3), row("hpu_net", 725, 0.25)]
    text = report(trained, args, "cpu", 4.0)
    assert "Smoke run" not in text and "up to 800 steps per model" in text and "PASS" in text
    # the fewest steps of any model decide (one under-trained model ties the order targets too); 100 is enough
    assert "**Smoke run**: 50 training steps" in report([*trained[:2], row("hpu_net", 50, 0.25)], args, "cpu", 4.0)
    assert "Smoke run" not in report([*trained[:2], row("hpu_net", 100, 0.25)], args, "cpu", 4.0)
    from benchmarks.report import smoke_run

    assert smoke_run(3.0, 12.0) is None and smoke_run(2.9, 12.0) is not None  # a quarter is enough
    alone = report([trained[1]], types.SimpleNamespace(**{**vars(args), "models": ["prob_unet"]}), "cpu", 4.0)
    assert "Targets:" in alone and "16 samples = 1.25x one U-Net forward (target <= 2x): PASS" in alone
    assert "Smoke run**: 2 of the benchmark's 12 minutes" in report(trained, types.SimpleNamespace(**{**vars(args), "budget_minutes": 2.0}), "cpu", 0.7)
