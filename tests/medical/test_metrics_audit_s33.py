"""The medical metrics audit: ECE against the readers' mean, the images no reader marked counted and set apart,
Hungarian IoU with too few samples warned of, the benchmark's table. Hand-computed values on 1x4 strips."""

from __future__ import annotations

import logging
import math
import types
import warnings

import pytest
import torch
from torch.utils.data import DataLoader

from domains.medical.metrics import SegmentationUncertaintyMetrics
from tests.medical.test_metrics import EMPTY, A, B, _toy_batch, stack

pytestmark = pytest.mark.usefixtures("one_thread")


def strip_readers(*counts: int, readers: int = 4) -> torch.Tensor:
    """(1, M, 1, W) reader masks of a 1 x W strip whose pixel i is marked by the first ``counts[i]`` readers."""
    masks = torch.zeros(1, readers, 1, len(counts))
    for i, c in enumerate(counts):
        masks[0, :c, 0, i] = 1
    return masks


def scores(mean_prob, readers) -> dict:
    """The metrics of one update: ``mean_prob`` a list (one 1 x W image) or a (B, 1, H, W) tensor, 16 samples
    each its thresholded mask (16 samples for 4 readers: no Hungarian warning)."""
    if isinstance(mean_prob, list):
        mean_prob = torch.tensor(mean_prob, dtype=torch.float32)[None, None, None]
    samples = (mean_prob >= 0.5).expand(-1, 16, -1, -1)
    metric = SegmentationUncertaintyMetrics()
    metric.update(samples, mean_prob, readers)
    return metric.compute()


def test_ece_targets_the_readers_share_and_ece_majority_the_majority():
    """Pixels marked by 4, 3, 1 and 0 of 4 readers: shares 1, .75, .25, 0; majority (>= 2 of 4) 1, 1, 0, 0.

    A model whose probability is the share (what one random reader per training step teaches): ``ece`` 0, each
    bin's mean p equals its mean share; vs the majority the .75 and .25 pixels miss by .25 each: 2/4 * .25 = .125.
    The majority output with probabilities 0 / 1: bin 1 holds shares 1, .75 (mean .875), bin 0 shares .25, 0
    (mean .125): ``ece`` = 2/4 * .125 + 2/4 * .125 = .125; vs the majority it is exact: 0. Before the fix
    ``ece`` was the majority one, ranking the overconfident model first."""
    readers = strip_readers(4, 3, 1, 0)
    oracle = scores([1.0, 0.75, 0.25, 0.0], readers)
    assert oracle["ece"] == pytest.approx(0.0, abs=1e-6)
    assert oracle["ece_majority"] == pytest.approx(0.125, abs=1e-6)
    overconfident = scores([1.0, 1.0, 0.0, 0.0], readers)
    assert overconfident["ece"] == pytest.approx(0.125, abs=1e-6)
    assert overconfident["ece_majority"] == pytest.approx(0.0, abs=1e-6)


def test_ece_averages_the_readers_share_within_each_bin_over_all_pixels():
    """p = .5, .5, 0, 0 on pixels marked by 1, 4, 0, 0 of 4 readers (shares .25, 1, 0, 0): bin [.5, .55) has mean
    p .5 against mean share .625, weight 2/4; bin 0 is exact -> ECE 2/4 * .125 = .0625 (MONAI averages the soft
    target per bin; a per-pixel mean |p - share| would give (.25 + .5) / 4 = .1875). Majority 0, 1, 0, 0: the
    .5 bin's mean target .5 -> 0.

    An image no reader marked, predicted at p = .02 everywhere: every pixel is background and counts, bin
    [0, .05) -> |.02 - 0| = .02 for both targets. Two images: the mean of the two images' values."""
    readers = strip_readers(1, 4, 0, 0)
    out = scores([0.5, 0.5, 0.0, 0.0], readers)
    assert out["ece"] == pytest.approx(0.0625, abs=1e-6)
    assert out["ece_majority"] == pytest.approx(0.0, abs=1e-6)

    empty = scores(torch.full((1, 1, 1, 4), 0.02), torch.zeros(1, 4, 1, 4))
    assert empty["ece"] == pytest.approx(0.02, abs=1e-6) and empty["ece_majority"] == pytest.approx(0.02, abs=1e-6)
    both = scores(
        torch.tensor([[0.5, 0.5, 0, 0], [0.02] * 4])[:, None, None],
        torch.cat([readers, torch.zeros(1, 4, 1, 4)]),
    )
    assert both["ece"] == pytest.approx((0.0625 + 0.02) / 2, abs=1e-6)
    assert both["ece_majority"] == pytest.approx((0.0 + 0.02) / 2, abs=1e-6)


def test_a_model_that_predicts_nothing_is_scored_apart_on_the_images_with_a_lesion():
    """``_toy_batch``'s readers (image 0: A, B; image 1: nobody marks anything), 2 empty samples per image.

    Image 0: d(S, Y) = 1 for both readers, E d(Y, Y') = (0 + 2/3 + 2/3 + 0) / 4 = 1/3 -> GED 2 - 1/3 = 5/3;
    Hungarian IoU 0; Dice 0. Image 1: GED 0, Hungarian IoU 1, Dice 1. All images: 5/6, 1/2, 1/2; the one image
    with a lesion: 5/3, 0, 0."""
    _, _, readers = _toy_batch()
    samples = torch.zeros_like(readers)
    metric = SegmentationUncertaintyMetrics()
    metric.update(samples, None, readers)
    out = metric.compute()
    assert out["num_images"] == 2 and out["num_empty_images"] == 1
    expected = {
        "ged": 5 / 6,
        "hungarian_iou": 0.5,
        "dice_readers": 0.5,
        "ged_lesion": 5 / 3,
        "hungarian_iou_lesion": 0.0,
        "dice_readers_lesion": 0.0,
    }
    for key, value in expected.items():
        assert out[key] == pytest.approx(value, abs=1e-6), key

    # two "ranks", one image each: the summed states give the same
    rank0, rank1 = SegmentationUncertaintyMetrics(), SegmentationUncertaintyMetrics()
    rank0.update(samples[:1], None, readers[:1])
    rank1.update(samples[1:], None, readers[1:])
    rank0.merge_state(rank1)
    merged = rank0.compute()
    assert merged["num_empty_images"] == 1
    for key, value in expected.items():
        assert merged[key] == pytest.approx(value, abs=1e-6), key

    only_empty = SegmentationUncertaintyMetrics()
    only_empty.update(samples[1:], None, readers[1:])
    out = only_empty.compute()
    assert out["num_images"] == out["num_empty_images"] == 1 and out["ged"] == pytest.approx(0.0)
    assert all(math.isnan(out[f"{k}_lesion"]) for k in ("ged", "hungarian_iou", "dice_readers"))


def _sample_count_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if "hungarian_iou:" in str(w.message)]


def test_hungarian_iou_with_too_few_samples_for_the_readers_warns_once():
    """One sample A against readers A, B, nothing, nothing: the matching scores the best reader only, IoU 1
    (the four readers' mean IoU would be (1 + 1/3 + 0 + 0) / 4)."""
    readers = torch.from_numpy(stack(A, B, EMPTY, EMPTY)).float()[None]
    one = torch.from_numpy(stack(A)).float()[None]
    metric = SegmentationUncertaintyMetrics()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metric.update(one, None, readers)
        metric.update(one, None, readers)  # the same object: no second warning
    (message,) = _sample_count_warnings(caught)
    assert "1 samples per image against 4 readers" in message and "best single reader" in message
    assert "16 samples to 4 readers" in message and "--model.num_samples" in message
    two = SegmentationUncertaintyMetrics()  # the single-reader words are for one sample only
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        two.update(torch.cat([one, one], dim=1), None, readers)
    (message,) = _sample_count_warnings(caught)
    assert "only the best-matching 2 of the 4 readers" in message and "best single reader" not in message
    assert metric.compute()["hungarian_iou"] == pytest.approx(1.0)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        SegmentationUncertaintyMetrics().update(one.expand(-1, 6, -1, -1), None, readers)  # 6 = 4 + 2
    (message,) = _sample_count_warnings(caught)
    assert "tiled 2 times" in message and "which 2 copies stay unused" in message

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for n in (4, 8, 16):  # whole multiples of the readers: the published protocol, nothing to say
            SegmentationUncertaintyMetrics().update(one.expand(-1, n, -1, -1), None, readers)
    assert _sample_count_warnings(caught) == []


def test_task_logs_image_counts_and_says_at_test_how_many_images_no_reader_marked(caplog):
    """The toy batch through the task's test loop: ``test/num_images`` 2, ``test/num_empty_images`` 1, and one
    line saying so; ``test/ged`` (the checkpoint monitor's kind of value, all images) stays the all-image mean."""
    from domains.medical.models import UNetSegmenter
    from domains.medical.task import MedicalSegmentationTask
    from shared.cli import quiet_trainer
    from tests.medical.test_models import TINY
    from tests.medical.test_task_metrics import _Oracle

    samples, _, readers = _toy_batch()
    task = MedicalSegmentationTask(network=UNetSegmenter(**TINY["unet"]), num_samples=2, predict_dir=None)
    task.model = _Oracle(samples)
    items = [{"image": torch.zeros(1, 2, 2), "mask": readers[i, :1], "masks": readers[i]} for i in range(2)]
    trainer = quiet_trainer(accelerator="cpu", devices=1)
    with caplog.at_level(logging.INFO):
        (logged,) = trainer.test(task, dataloaders=DataLoader(items, batch_size=2), verbose=False)
    assert logged["test/num_images"] == 2 and logged["test/num_empty_images"] == 1
    assert logged["test/ged"] == pytest.approx(1 / 6) and logged["test/ged_lesion"] == pytest.approx(1 / 3)
    assert "[MedicalSegmentationTask] test: 2 images, 1 (50%) with no reader's lesion" in caplog.text


def test_benchmark_table_prints_both_eces_and_the_test_images():
    from benchmarks.medical import report

    row = {"name": "prob_unet", "steps": 800, "img_per_s": 10.0, "ged": 0.3, "hungarian_iou": 0.5,
           "diversity": 0.3, "dice": 0.5, "dice_majority": 0.6, "ece": 0.012, "ece_majority": 0.034,
           "sample16_ms": 10.0, "unet_forward_ms": 8.0, "num_images": 180.0, "num_empty_images": 34.0}  # fmt: skip
    args = types.SimpleNamespace(data_path=None, readers="default", crop_size=64, batch_size=16, lr=1e-3,
                                 steps=800, num_samples=16, precision="32-true", timing_repeats=3,
                                 budget_minutes=12.0, models=["prob_unet"], argv=[])  # fmt: skip
    lines = report([row], args, "cpu", 4.0).splitlines()
    header = next(line for line in lines if line.startswith("| model"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns[8:10] == ["ECE (vs readers' mean)", "ECE (vs majority)"]
    cells = [c.strip() for c in next(line for line in lines if line.startswith("| Prob.")).strip("|").split("|")]
    assert len(cells) == len(columns) and cells[8:10] == ["0.012", "0.034"]
    assert lines[lines.index(header) + 1] == "|---" * len(columns) + "|"
    assert "Test split: 180 images, 34 (19%) with no reader's lesion" in "\n".join(lines)  # 34 / 180 = 0.189
