"""Decathlon's volume-grouped training order follows (seed, epoch), as the other tasks' shuffles do: it drew
from torch's global generator, so a fit resumed at epoch k (``--ckpt_path last``) replayed epoch 0's order."""

from __future__ import annotations

import torch
from lightning_fabric.utilities.data import _set_sampler_epoch

from domains.medical.data import VolumeGroupedSampler

VOLUMES = [0] * 5 + [1] * 5 + [2] * 5 + [3] * 5


def _order(seed: int, epoch: int) -> list[int]:
    """The order a fit's sampler draws at ``epoch``, built afresh (a resumed fit builds a new one) after
    ``seed_everything`` put the global generator where it was at epoch 0."""
    torch.manual_seed(7)
    sampler = VolumeGroupedSampler(VOLUMES, volumes_at_once=2, seed=seed)
    _set_sampler_epoch(torch.utils.data.DataLoader(range(20), sampler=sampler), epoch)  # as Lightning does
    return list(sampler)


def test_a_resumed_fit_draws_its_epochs_volume_grouped_order():
    uninterrupted = VolumeGroupedSampler(VOLUMES, volumes_at_once=2, seed=3)
    orders = []
    for epoch in range(3):
        uninterrupted.set_epoch(epoch)
        orders.append(list(uninterrupted))
    assert len({tuple(order) for order in orders}) == 3, "the order must change per epoch"
    assert all(len({i // 5 for i in order[:10]}) == 2 for order in orders)  # still two volumes at once
    assert _order(3, 2) == orders[2]  # resumed at epoch 2: the uninterrupted order, not epoch 0's
    assert _order(4, 2) != orders[2]  # the order is the seed's
