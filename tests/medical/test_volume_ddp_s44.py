"""Decathlon's volume-grouped training order under DDP, and its setup's one header read per file.

Lightning wrapped the sampler (not a ``DistributedSampler``) in its ``DistributedSamplerWrapper``, which
shuffles the order again and deals it round-robin: every rank got slices of every volume and its cache missed
on almost each one. The sampler now shares whole volumes out itself, and is a ``DistributedSampler`` Lightning
leaves as it is.
"""

from __future__ import annotations

import math
from collections import Counter, OrderedDict
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import pytest
from lightning_fabric.utilities.distributed import DistributedSamplerWrapper
from pytorch_lightning.trainer.connectors.data_connector import _DataConnector
from torch.utils.data import DataLoader

from domains.medical.data import DecathlonSliceDataset, VolumeGroupedSampler, build_predict_dataset
from shared.data import SeededShuffle
from tests.helpers import decathlon_fit_data, run_ddp_fit, tiny_medical_args
from tests.medical.test_data_splits_predict import _decathlon

CONFIGS = Path(__file__).resolve().parents[2] / "domains" / "medical" / "configs"

#: 4 volumes of 3-5 slices, interleaved (a volume's slices are not neighbours by index)
VOLUMES = [2, 0, 1, 0, 2, 3, 1, 3, 0, 2, 3, 1, 0, 2, 3, 0]

#: the one-process order before the DDP change (seed 5, volumes_at_once 2): the first two passes without
#: set_epoch (the generator runs on), then epoch 3
BEFORE = [
    [7, 2, 6, 5, 14, 11, 10, 1, 15, 0, 3, 12, 13, 8, 4, 9],
    [7, 15, 5, 12, 3, 1, 14, 8, 10, 13, 2, 0, 11, 4, 6, 9],
    [9, 2, 11, 0, 13, 6, 4, 5, 8, 1, 7, 10, 12, 14, 3, 15],
]

#: 9 volumes of 2-9 slices (51), interleaved
SIZES = [7, 3, 9, 4, 6, 5, 8, 2, 7]
MANY = [v for k in range(max(SIZES)) for v, n in enumerate(SIZES) if k < n]


def _ranks(volumes, ranks: int, epoch: int | None, seed: int = 0, at_once: int = 2) -> list[list[int]]:
    orders = []
    for rank in range(ranks):
        sampler = VolumeGroupedSampler(volumes, at_once, seed, num_replicas=ranks, rank=rank)
        if epoch is not None:
            sampler.set_epoch(epoch)
        orders.append(list(sampler))
        assert len(orders[-1]) == len(sampler) == math.ceil(len(volumes) / ranks)
    return orders


def _reads(order: list[int], volumes, cache: int) -> int:
    """Volume reads of ``order`` through an LRU cache of ``cache`` volumes (the dataset's, per process)."""
    held, reads = OrderedDict(), 0
    for i in order:
        v = volumes[i]
        if v in held:
            held.move_to_end(v)
            continue
        reads += 1
        held[v] = None
        if len(held) > cache:
            held.popitem(last=False)
    return reads


def test_one_process_keeps_the_order_it_had():
    sampler = VolumeGroupedSampler(VOLUMES, volumes_at_once=2, seed=5)
    assert (sampler.num_replicas, sampler.rank, len(sampler)) == (1, 0, len(VOLUMES))
    first, second = list(sampler), list(sampler)
    sampler.set_epoch(3)
    assert [first, second, list(sampler)] == BEFORE
    explicit = VolumeGroupedSampler(VOLUMES, volumes_at_once=2, seed=5, num_replicas=1, rank=0)
    explicit.set_epoch(3)
    assert list(explicit) == BEFORE[2]


@pytest.mark.parametrize("ranks", [2, 3, 4])
def test_the_ranks_share_whole_volumes_and_every_slice(ranks):
    for epoch in range(3):
        orders = _ranks(MANY, ranks, epoch)
        seen = Counter(i for order in orders for i in order)
        assert set(seen) == set(range(len(MANY)))  # every slice, on some rank
        padding = ranks * math.ceil(len(MANY) / ranks) - len(MANY)
        assert sum(seen.values()) - len(MANY) == padding  # as DistributedSampler pads
        held = [{MANY[i] for i in order} for order in orders]
        # a contiguous share of the volumes each: only those at a share's edge (and the padding's) are split
        assert sum(len(h) for h in held) <= len(SIZES) + ranks
        for order, volumes in zip(orders, held):
            assert _reads(order, MANY, cache=2) == len(volumes)  # each volume read once on its rank


def test_lightning_s_wrapper_would_read_a_volume_per_few_slices():
    """What the sampler avoids: the order dealt round-robin after another shuffle (Lightning's wrapper)."""
    one = VolumeGroupedSampler(MANY, 2, 0)
    one.set_epoch(0)
    wrapped = [list(DistributedSamplerWrapper(one, num_replicas=3, rank=r, shuffle=True)) for r in range(3)]
    ours = _ranks(MANY, 3, epoch=0)
    assert sum(_reads(order, MANY, cache=2) for order in ours) <= len(SIZES) + 3
    assert sum(_reads(order, MANY, cache=2) for order in wrapped) > 2 * (len(SIZES) + 3)


def test_the_order_follows_seed_and_epoch_alike_on_every_rank():
    assert _ranks(MANY, 3, epoch=1) == _ranks(MANY, 3, epoch=1)  # built afresh (a resumed fit): the same
    assert _ranks(MANY, 3, epoch=1) != _ranks(MANY, 3, epoch=2)
    assert _ranks(MANY, 3, epoch=1, seed=1) != _ranks(MANY, 3, epoch=1)
    # without set_epoch the ranks' generators run on in step: still a partition on the second pass
    samplers = [VolumeGroupedSampler(MANY, 2, 0, num_replicas=3, rank=r) for r in range(3)]
    for _ in range(2):
        orders = [list(s) for s in samplers]
        assert {i for order in orders for i in order} == set(range(len(MANY)))
        assert sum(map(len, orders)) == 3 * 17


def test_a_rank_outside_the_processes_is_refused():
    with pytest.raises(ValueError, match="Invalid rank 2"):
        VolumeGroupedSampler(MANY, 2, 0, num_replicas=2, rank=2)
    assert (VolumeGroupedSampler(MANY, 2, 0).num_replicas, VolumeGroupedSampler(MANY, 2, 0).rank) == (1, 0)


def test_lightning_leaves_the_sampler_to_share_the_volumes():
    ddp = SimpleNamespace(use_distributed_sampler=True, is_distributed=True)
    connector = _DataConnector(SimpleNamespace(_accelerator_connector=ddp))
    ours = DataLoader(range(len(MANY)), sampler=VolumeGroupedSampler(MANY, 2, 0, num_replicas=2, rank=0))
    assert not connector._requires_distributed_sampler(ours)
    shuffled = DataLoader(range(len(MANY)), sampler=SeededShuffle(range(len(MANY)), 0))
    assert connector._requires_distributed_sampler(shuffled)  # what it does to a sampler of its own


def test_the_data_module_gives_the_sampler_its_trainer_s_ranks(tmp_path):
    dm = decathlon_fit_data(tmp_path / "dec", n_cases=5, fractions=[0.6, 0.2, 0.2])
    assert len(dm.dataset("train")) == 15  # 3 volumes x 5 slices
    dm.trainer = SimpleNamespace(world_size=3, global_rank=2)
    loader = dm.train_dataloader()
    assert (loader.sampler.num_replicas, loader.sampler.rank, len(loader.sampler)) == (3, 2, 5)
    assert loader.drop_last  # 5 per rank = 2 x 2 + 1: the batch of one is dropped (not ceil(5 / 3) = 2)


def _count_loads(monkeypatch) -> Counter:
    loads: Counter = Counter()
    real = nib.load
    monkeypatch.setattr(nib, "load", lambda path, *a, **k: loads.update([str(path)]) or real(path, *a, **k))
    return loads


def test_setup_reads_each_case_s_files_once(tmp_path, monkeypatch):
    root = _decathlon(tmp_path / "dec", n_cases=3)
    loads = _count_loads(monkeypatch)
    dataset = DecathlonSliceDataset(root, "all", crop_size=16)
    files = [str(p) for _case, image, label in dataset.cases for p in (image, label)]
    assert loads == Counter(files)  # image and label once each
    loads.clear()
    predict = build_predict_dataset(root / "imagesTr", crop_size=16)
    assert loads == Counter(str(p) for _name, p, _ in predict.cases) and len(loads) == 3


@pytest.mark.slow  # two processes: about 30 s
def test_a_ddp_fit_gives_each_rank_its_own_few_volumes(tmp_path):
    root = _decathlon(tmp_path / "dec", n_cases=8, lesion_slices=(1, 2, 3, 4, 5, 6, 7))
    args = tiny_medical_args(
        root, CONFIGS / "unet.yaml", "unet", 1,
        "--data.data_format", "decathlon", "--data.augment", "false",
        "--data.dataset_kwargs", "{fractions: [0.75, 0.125, 0.125], cache_volumes: 2}",
        "--trainer.max_epochs", "1", "--trainer.num_sanity_val_steps", "0",
        "--checkpoint.dirpath", str(tmp_path / "ckpt"),
    )  # fmt: skip
    ranks = run_ddp_fit("domains.medical", args, tmp_path / "ranks", tmp_path)
    ids = [set(r["train_ids"]) for r in ranks]
    assert not ids[0] & ids[1]  # 6 volumes x 9 slices, 27 a rank: no padding
    volumes = [{i.split("/")[0] for i in rank} for rank in ids]
    assert len(volumes[0] | volumes[1]) == 6
    assert len(volumes[0]) + len(volumes[1]) <= 7  # 3 each, one split at the shares' edge at most
