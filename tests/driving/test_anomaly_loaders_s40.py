"""The anomaly task's short passes over its training loader (the ENet class counts when training starts,
the SML / Mahalanobis calibration when a checkpoint is written or fit ends) read a few batches and drop the
loader: its workers end with the pass, and where a worker would be spawned (``spawn`` / ``forkserver``: macOS,
Windows, Linux from Python 3.14) the pass reads in the main process. Before, a pass iterated the training
loader itself, with its persistent workers: spawned workers cost 35-57 s a pass on 2 busy cores and outlived
it (the suite's workers ignore SIGTERM), and a loader the fit kept (Lightning's own) kept them all the run."""

from __future__ import annotations

import itertools
import multiprocessing

import pytest
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, IterableDataset

from domains.driving.anomaly.model import IGNORE_INDEX
from domains.driving.classes import SEMANTIC_CLASSES
from shared.segmentation import class_pixel_frequencies, enet_class_weights
from tests.driving.test_anomaly import TINY_UNET, _toy_batch
from tests.helpers import anomaly_task, quiet_trainer

BATCHES = 2  # class_weight_batches and calibration_batches of the fits below


class Stream(IterableDataset):
    def __iter__(self):
        return iter(range(5))


def _items(n: int = 8) -> list[dict]:
    batch = _toy_batch(n=n)
    return [{"image": batch["image"][i], "mask": batch["mask"][i]} for i in range(n)]


def _context(monkeypatch, method: str, started: list, refuse: bool):
    """``multiprocessing.get_context(method)`` whose processes are listed in ``started`` when they start (and
    refused with ``refuse``: a spawned worker imports the suite again, 30-60 s here)."""
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method!r} start method on this platform")
    context = multiprocessing.get_context(method)

    class Listed(context.Process):
        def start(self):
            started.append(self)
            if refuse:
                raise AssertionError(f"a short pass started a {method} worker")
            super().start()

    monkeypatch.setattr(context, "Process", Listed)  # the DataLoader asks its context for its processes
    return context


def _fit_with_short_passes(monkeypatch, loader: DataLoader):
    """A one-step fit (on a loader without workers) whose short passes read ``loader``: where the task finds
    its training loader, the data module's or Lightning's, is what the test sets."""
    task = anomaly_task(encoder_kwargs=TINY_UNET, oe_weight=0.0, class_weighting="enet",
                        class_weight_batches=BATCHES, calibration_batches=BATCHES)  # fmt: skip
    monkeypatch.setattr(task, "_calibration_loader", lambda: loader)
    quiet_trainer(max_steps=1).fit(task, DataLoader(_items(), batch_size=2))
    return task


def _persistent_loader(context) -> DataLoader:
    return DataLoader(
        _items(), batch_size=2, num_workers=2, persistent_workers=True, multiprocessing_context=context
    )


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_short_passes_under_spawn_read_in_the_main_process(monkeypatch, method):
    """Before: each pass started the loader's two workers, refused here (it failed at the ENet count)."""
    started: list = []
    loader = _persistent_loader(_context(monkeypatch, method, started, refuse=True))
    task = _fit_with_short_passes(monkeypatch, loader)
    assert started == []
    # the same batches were read: the weights of the first two, counted here by hand, and two calibrated
    masks = (batch["mask"] for batch in itertools.islice(DataLoader(_items(), batch_size=2), BATCHES))
    freq = class_pixel_frequencies(masks, len(SEMANTIC_CLASSES), IGNORE_INDEX)
    assert torch.allclose(task.ce_weight, enet_class_weights(freq).to(task.ce_weight.dtype))
    assert bool(task.model.calibrated) and task.last_calibration["batches"] == BATCHES


def test_forked_short_pass_workers_end_with_the_pass(monkeypatch):
    """Forked workers start in well under a second, so the passes keep them, but not persistent: before, the
    passes iterated the kept loader itself, whose two workers were still alive when the fit had returned."""
    started: list = []
    loader = _persistent_loader(_context(monkeypatch, "fork", started, refuse=False))
    _fit_with_short_passes(monkeypatch, loader)
    assert not any(worker.is_alive() for worker in started)
    assert len(started) == 4  # two workers for the ENet count, two for the calibration at the fit's end


def test_a_mid_epoch_calibration_leaves_the_epoch_of_lightnings_loader_whole(monkeypatch, tmp_path):
    """A fit without a data module: the passes read Lightning's own training loader, the one it is iterating.
    The calibration of a checkpoint written mid-epoch iterated it, and its persistent workers' iterator started
    the epoch again: 12 distinct of the 16 items trained in the epoch, 4 of them twice."""
    task = anomaly_task(encoder_kwargs=TINY_UNET, oe_weight=0.0, calibration_batches=3)
    trained: list[int] = []
    step = task.training_step

    def listing(batch, *args):
        trained.extend(batch.pop("index").tolist())
        return step(batch, *args)

    monkeypatch.setattr(task, "training_step", listing)
    items = [{**item, "index": i} for i, item in enumerate(_items(16))]
    loader = DataLoader(items, batch_size=2, shuffle=True, num_workers=2, persistent_workers=True,
                        multiprocessing_context=_context(monkeypatch, "fork", [], refuse=False))  # fmt: skip
    checkpoints = ModelCheckpoint(dirpath=tmp_path, every_n_train_steps=2, save_top_k=-1)
    quiet_trainer(max_epochs=1, enable_checkpointing=True, callbacks=[checkpoints]).fit(task, loader)
    assert sorted(trained) == list(range(16))
    assert len(list(tmp_path.glob("*.ckpt"))) == 4  # calibrated at steps 2, 4, 6 (mid-epoch) and 8


def test_the_default_start_method_decides_where_a_short_pass_reads(monkeypatch):
    """A loader without its own context starts workers by the process's start method (set, or the platform's
    default): a short pass keeps forked workers and reads spawned ones' batches in the main process."""
    task = anomaly_task(encoder_kwargs=TINY_UNET, oe_weight=0.0)
    loader = DataLoader(_items(), batch_size=2, num_workers=2, persistent_workers=True)
    monkeypatch.setattr(task, "_calibration_loader", lambda: loader)
    previous = multiprocessing.get_start_method(allow_none=True)
    try:
        for method, workers in (("spawn", 0), ("fork", 2)):
            if method in multiprocessing.get_all_start_methods():
                multiprocessing.set_start_method(method, force=True)
                short = task._short_pass_loader()
                assert (short.num_workers, short.persistent_workers) == (workers, False), method
                assert short.dataset is loader.dataset and short.batch_sampler is loader.batch_sampler
        # a stream (IterableDataset) takes no batch sampler: batched by the loader's size
        stream = DataLoader(Stream(), batch_size=3, num_workers=2)
        monkeypatch.setattr(task, "_calibration_loader", lambda: stream)
        multiprocessing.set_start_method("spawn", force=True)
        assert [batch.tolist() for batch in task._short_pass_loader()] == [[0, 1, 2], [3, 4]]
    finally:
        multiprocessing.set_start_method(previous, force=True)
