"""The training order of epoch k is a function of (seed, k) alone: a fit resumed at epoch k (``fit --ckpt_path
last``) builds its sampler afresh, and drew epoch 0's order again while the augmentation (seed, epoch, index)
followed the epoch; a short pass read besides (class counts, calibration) moved every later epoch's order."""

from __future__ import annotations

import pytest
import torch

from domains.driving.anomaly.data import SeededItems, SegmentationDataModule
from shared.data import RepeatFactorSampler
from tests.driving.layouts import write_kitti


@pytest.fixture(scope="module")
def kitti(tmp_path_factory):
    """16 tiny KITTI-layout images in 8 sequences: 12 of them train (enough orders to tell epochs apart)."""
    return write_kitti(tmp_path_factory.mktemp("resume_order") / "kitti", n=16)


def _sampler(root, repeat_threshold) -> SeededItems:
    """The training sampler a fit builds (one per fit: a resumed fit builds a new one)."""
    dm = SegmentationDataModule(
        data_path=str(root), image_size=(16, 24), batch_size=2, num_workers=0, seed=5,
        split_fractions=(0.75, 0.25), repeat_threshold=repeat_threshold,
    )  # fmt: skip
    dm.setup("fit")
    return dm.train_sampler()


def _epoch(sampler, epoch: int) -> list[tuple[int, int, int]]:
    sampler.set_epoch(epoch)  # as Lightning does at each training epoch
    return list(sampler)


@pytest.mark.parametrize("repeat_threshold", [None, 0.9], ids=["shuffle", "repeat_factors"])
def test_resumed_fit_draws_the_order_of_its_epoch(kitti, repeat_threshold):
    uninterrupted = _sampler(kitti, repeat_threshold)
    orders = [_epoch(uninterrupted, epoch) for epoch in range(3)]
    assert len(orders[0]) == 12
    assert len({tuple(i for i, _, _ in order) for order in orders}) == 3, "the order must change per epoch"
    # a fit resumed at epoch 2: a fresh sampler, told the epoch, draws what the uninterrupted one drew
    assert _epoch(_sampler(kitti, repeat_threshold), 2) == orders[2]
    # a short pass read in epoch 1 (class counts, calibration) moves no epoch's order
    again = _sampler(kitti, repeat_threshold)
    _epoch(again, 0), _epoch(again, 1), _epoch(again, 1)
    assert _epoch(again, 2) == orders[2]


def test_pass_drawn_whole_when_it_starts(kitti):
    """Two passes of one epoch open at once (the training loader's, a short pass's) draw one order: the order
    is drawn when the pass starts, not at its first index, after the other pass reseeded the generator."""
    sampler = _sampler(kitti, None)
    sampler.set_epoch(1)
    first, second = iter(sampler), iter(sampler)
    assert list(second) == list(first)


def test_repeat_factor_sampler_of_other_domains_follows_seed_and_epoch():
    """The repeat-factor sampler the other domains use as is (detection, instances): epoch k's draws follow
    (seed, k) once Lightning sets the epoch; without set_epoch (a plain loop) its generator runs on."""
    factors = torch.tensor([2.0] + [1.0] * 15, dtype=torch.float64)
    uninterrupted = RepeatFactorSampler(factors, seed=3)
    draws = [_epoch(uninterrupted, epoch) for epoch in range(3)]
    assert len({tuple(d) for d in draws}) == 3
    assert _epoch(RepeatFactorSampler(factors, seed=3), 2) == draws[2]
    assert _epoch(RepeatFactorSampler(factors, seed=4), 2) != draws[2]
    plain = RepeatFactorSampler(factors, seed=3)
    assert list(plain) != list(plain)  # no epoch given: each pass draws anew
