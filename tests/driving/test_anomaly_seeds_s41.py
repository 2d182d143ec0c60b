"""The anomaly segmenter's training augmentations are a function of (seed, epoch, item index) alone.

Before, albumentations drew from the pipeline's generators in whichever process read the item (workers
reseeded from torch's worker seed, the main process running on from ``Compose(seed=...)``), so the same seed gave
val/miou 0.2115 under ``fork`` and 0.1986 under ``spawn``: the short passes read spawned batches in the main
process."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from domains.driving.anomaly.data import SeededItems, SegmentationDataModule, segmentation_transforms
from shared.data import reseed_pipeline
from tests.driving.layouts import write_kitti

SIZE = (16, 24)  # training crops: tiny, so that reading 6 items in 2 workers stays well under a second


def _module(tmp_path, workers: int, **kw) -> SegmentationDataModule:
    """A data module over 6 tiny KITTI-layout images (three sequences: 4 train, 2 val), augmenting."""
    root = tmp_path / "kitti"
    if not root.exists():
        write_kitti(root, n=6)
    dm = SegmentationDataModule(
        data_path=str(root), image_size=SIZE, batch_size=2, num_workers=workers, seed=5,
        split_fractions=(0.67, 0.33), **kw,
    )  # fmt: skip
    dm.setup("fit")
    return dm


def _read(loader: DataLoader, epoch: int = 0) -> list[tuple[list[str], torch.Tensor, torch.Tensor]]:
    loader.batch_sampler.sampler.set_epoch(epoch)  # as Lightning does at each training epoch
    return [(batch["name"], batch["image"], batch["mask"]) for batch in loader]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(
        na == nb and torch.equal(ia, ib) and torch.equal(ma, mb) for (na, ia, ma), (nb, ib, mb) in zip(a, b)
    )


def _like(loader: DataLoader, workers: int, context: str | None) -> DataLoader:
    """``loader`` read with other workers (as the short passes rebuild the training loader)."""
    return DataLoader(
        loader.dataset, batch_sampler=loader.batch_sampler, num_workers=workers, collate_fn=loader.collate_fn,
        worker_init_fn=loader.worker_init_fn, multiprocessing_context=context if workers else None,
    )  # fmt: skip


def test_train_items_read_alike_in_the_main_process_and_in_forked_workers(tmp_path):
    """The short passes read the training loader's batches in the main process where workers would be
    spawned: the same batches must come out as from the workers."""
    main = _read(_module(tmp_path, 0).train_dataloader())
    forked = _read(_like(_module(tmp_path, 0).train_dataloader(), 2, "fork"))
    assert len(main) == 2 and _same(main, forked)
    # the data module's own loader with workers, and one worker reading it all
    assert _same(main, _read(_module(tmp_path, 2).train_dataloader()))
    assert _same(main, _read(_like(_module(tmp_path, 0).train_dataloader(), 1, "fork")))


@pytest.mark.slow  # two spawned workers import the suite again: 20-40 s on 2 busy cores
def test_train_items_read_alike_in_spawned_workers(tmp_path):
    main = _read(_module(tmp_path, 0).train_dataloader())
    assert _same(main, _read(_like(_module(tmp_path, 0).train_dataloader(), 2, "spawn")))


def test_augmentation_differs_between_epochs_and_items(tmp_path):
    """Seeded per item, the draws still change with the epoch and the item; the training loader says it."""
    dm = _module(tmp_path, 0)
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, SeededItems)
    dataset = loader.dataset
    index = [i for i in range(len(dataset))]
    epochs = [[dataset[(i, 5, epoch)]["image"] for i in index] for epoch in range(4)]
    for i in index:  # 4 epochs of one item: at least 3 different crops
        distinct = {tuple(np.round(e[i].numpy().ravel()[:50], 5)) for e in epochs}
        assert len(distinct) >= 3, f"item {i}: {len(distinct)} distinct augmentations in 4 epochs"
    # items of one image: the same picture under 12 indices comes out cropped in (nearly) 12 ways
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    transform = segmentation_transforms(True, SIZE, True, seed=5)
    outs = set()
    for i in range(12):
        reseed_pipeline(transform, (5, 0, i))
        outs.add(transform(image=image)["image"].tobytes())
    assert len(outs) >= 10
    # and one key gives one augmentation, whatever was read before
    reseed_pipeline(transform, (5, 0, 3))
    first = transform(image=image)["image"]
    transform(image=image)
    reseed_pipeline(transform, (5, 0, 3))
    assert np.array_equal(first, transform(image=image)["image"])


def test_each_transform_draws_from_its_own_stream():
    """Compose.set_random_seed hands every transform one seed: reseeded per item, a flip and a jitter of
    p = 0.5 drew the same first number and came together or not at all."""
    image = np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    pipeline = A.Compose(
        [A.HorizontalFlip(p=0.5), A.Affine(scale=(0.8, 1.25), p=0.5)], seed=0, save_applied_params=True
    )
    combos = np.zeros((2, 2), int)
    for i in range(200):
        reseed_pipeline(pipeline, (0, 0, i))
        applied = {name for name, _ in pipeline(image=image)["applied_transforms"]}
        combos[int("HorizontalFlip" in applied), int("Affine" in applied)] += 1
    assert combos.min() >= 25, combos  # all four combinations, each about 50 times


def test_repeat_factor_sampling_keeps_its_weights_and_its_epochs(tmp_path):
    """The wrapped repeat-factor sampler: its weights read through, the epoch passed on to the keys."""
    dm = _module(tmp_path, 0, repeat_threshold=0.9)
    sampler = dm.train_dataloader().sampler
    assert isinstance(sampler, SeededItems) and len(sampler.sampler.weights) == len(dm.datasets["train"])
    sampler.set_epoch(3)
    assert {(seed, epoch) for _, seed, epoch in sampler} == {(5, 3)}
