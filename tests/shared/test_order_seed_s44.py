"""Every training sampler follows the run's seed (``--seed_everything``, passed on in ``PL_GLOBAL_SEED``) when
one is set, else the data seed (``SplitLoaders.order_seed``): the shuffle did, while the repeat-factor sampler
and the Decathlon volume-grouped sampler took the data seed alone, so a seed sweep left their order fixed."""

from __future__ import annotations

import torch

from shared.data import RepeatFactorSampler, SeededShuffle, SplitLoaders
from tests.helpers import decathlon_fit_data


class _Labelled(torch.utils.data.Dataset):
    def __len__(self):
        return 40

    def __getitem__(self, i):
        return torch.tensor(i)

    def image_classes(self):
        return [{1} if i % 7 == 0 else {0} for i in range(40)]


class _Loaders(SplitLoaders):
    def __init__(self, threshold):
        super().__init__()
        self.datasets, self.batch_size, self.num_workers = {"train": _Labelled()}, 8, 0
        self.repeat_threshold, self.seed = threshold, 3


def _order(sampler) -> list[int]:
    sampler.set_epoch(1)
    return list(sampler)


def test_shuffle_and_repeat_factors_follow_seed_everything(monkeypatch):
    for threshold, kind in ((None, SeededShuffle), (0.5, RepeatFactorSampler)):
        monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
        data_seed = _Loaders(threshold).train_sampler()
        assert isinstance(data_seed, kind) and data_seed.seed == 3
        orders = []
        for seed in ("11", "12"):
            monkeypatch.setenv("PL_GLOBAL_SEED", seed)
            sampler = _Loaders(threshold).train_sampler()
            assert sampler.seed == int(seed)
            orders.append(_order(sampler))
        assert orders[0] != orders[1], kind.__name__


def test_the_volume_grouped_sampler_follows_seed_everything(tmp_path, monkeypatch):
    dm = decathlon_fit_data(tmp_path / "dec", n_cases=10, fractions=[0.8, 0.1, 0.1])
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    assert dm.train_sampler().seed == dm.seed
    orders = []
    for seed in ("11", "12"):
        monkeypatch.setenv("PL_GLOBAL_SEED", seed)
        sampler = dm.train_sampler()
        assert sampler.seed == int(seed)
        orders.append(_order(sampler))
    assert sorted(orders[0]) == sorted(orders[1]) and orders[0] != orders[1]
