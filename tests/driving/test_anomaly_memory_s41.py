"""``test``'s memory does not grow with the number of test images: the score maps that wait for the component
metrics' best-F1 threshold are kept on disk (:class:`SpilledMaps`), with the same metric values."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from domains.driving.anomaly.metrics import (
    ComponentMetricsAccumulator,
    PixelAnomalyAccumulator,
    SpilledMaps,
    component_metrics,
)
from domains.driving.classes import SEMANTIC_CLASSES, SEMANTIC_ID
from tests.helpers import anomaly_task, quiet_trainer

H, W = 96, 128  # 61 KB of kept map (float32 score, uint8 label) per image


def _maps(n: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """``n`` (score, label, name) of varied sizes: blobs of anomaly, a void band, scores that mostly find them."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        h, w = 20 + 3 * i, 30 + i
        label = np.zeros((h, w), np.uint8)
        label[4:9, 5:12] = 1
        label[h - 6 : h - 3, w - 9 : w - 2] = 1
        label[0] = 255
        score = (label == 1) * 0.6 + rng.random((h, w)) * 0.5
        out.append((score.astype(np.float32), label, f"img{i}"))
    return out


def _equal(got, expected) -> bool:
    return len(got) == len(expected) and all(
        n == en and s.dtype == np.float32 and y.dtype == np.uint8 and np.array_equal(s, es) and np.array_equal(y, ey)
        for (s, y, n), (es, ey, en) in zip(got, expected)
    )


def test_spilled_maps_read_back_as_written_as_often_as_iterated(tmp_path):
    maps = _maps(5)
    store = SpilledMaps(tmp_path)
    for score, label, name in maps[:3]:
        store.append(score, label, name)
    first = list(store)
    for score, label, name in maps[3:]:  # appended after a read: after the others, not over them
        store.append(score, label, name)
    assert len(store) == 5 and list(tmp_path.iterdir()) == []  # unlinked: nothing left behind, even if killed
    assert _equal(first, maps[:3]) and _equal(list(store), maps) and _equal(list(store), maps)
    # the component metrics read from the file equal those of the maps in memory
    assert component_metrics(store, threshold=0.55) == component_metrics(maps, threshold=0.55)
    store.close()


def test_component_metrics_pool_the_ranks_components_in_rank_order():
    """Under DDP each rank scores its own maps; pooled, the figures equal those of all maps on one rank."""
    maps = _maps(6, seed=1)
    other = ComponentMetricsAccumulator(0.55)
    for score, label, name in maps[3:]:
        other.update(score, label, name)
    pooled = component_metrics(maps[:3], threshold=0.55, gather=lambda items: items + [other])
    whole = component_metrics(maps, threshold=0.55)
    assert pooled == whole and whole["num_images"] == 6 and whole["num_gt_components"] == 12


def _stub_features(images, with_outlier=False):
    """Road everywhere, sure of itself, but where channel 0 is lit: two distinct scores only, so that the pixel
    counts stay a few numbers and what grows with the images is what the test epoch keeps of them."""
    hot = images[:, 0] > 0.5
    logits = torch.zeros(images.shape[0], len(SEMANTIC_CLASSES), *images.shape[-2:])
    logits[:, SEMANTIC_ID["road"]] = torch.where(hot, 2.0, 10.0)
    return logits, torch.zeros(images.shape[0], 4, *images.shape[-2:]), None


def _batches(n_batches: int, per_batch: int = 4) -> list[dict]:
    batches = []
    for b in range(n_batches):
        images = torch.zeros(per_batch, 3, H, W)
        labels = torch.zeros(per_batch, H, W, dtype=torch.long)
        images[:, 0, 10:30, 20:50] = 1.0
        labels[:, 10:30, 20:50] = 1
        labels[:, 0] = 255
        batches.append({"image": images, "label": labels, "name": [f"b{b}_{i}" for i in range(per_batch)]})
    return batches


class _TracedMemory(pl.Callback):
    """Python-allocated bytes (numpy arrays included) after each test batch."""

    def __init__(self):
        self.after: list[int] = []

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.after.append(tracemalloc.get_traced_memory()[0])


def test_the_test_epoch_keeps_no_score_map_in_memory(monkeypatch):
    """40 images of 96x128: the maps held in memory grew 1.99 MB from batch 2 to batch 10; spilled to disk,
    12 KB."""
    monkeypatch.setattr(PixelAnomalyAccumulator, "FLUSH_PIXELS", 4096)  # counted per batch, not gathered
    task = anomaly_task(encoder_kwargs={"channels": [4, 8, 16]}, oe_weight=0.0, score="max_logit",
                        test_scores=["max_logit"])  # fmt: skip
    monkeypatch.setattr(task.model, "features", _stub_features)
    traced = _TracedMemory()
    tracemalloc.start()
    try:
        quiet_trainer(callbacks=[traced]).test(task, DataLoader(_batches(10), batch_size=None), verbose=False)
    finally:
        tracemalloc.stop()
    grown = traced.after[-1] - traced.after[1]
    assert grown < 0.25e6, f"{grown / 1e6:.2f} MB kept over 8 batches of 4 images"
    comp = task.test_results["component"]  # the maps were there to score: 40 images, one component each
    assert comp["num_images"] == 40 and comp["num_gt_components"] == 40 and comp["sIoU_gt"] == pytest.approx(1.0)


def test_a_full_disk_names_the_image_the_folder_and_the_way_out(tmp_path, monkeypatch):
    store = SpilledMaps(tmp_path)

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", full)
    with pytest.raises(OSError, match=rf"'img0' \(\(20, 30\)\).*{tmp_path}.*No space.*TMPDIR.*component_metrics false"):
        store.append(*_maps(1)[0])
    assert len(store) == 0


def _rank_component_metrics(rank: int, port: int, out) -> None:
    """One of two gloo ranks: the component metrics of its half of the maps, pooled as ``test`` pools them."""
    import os

    import torch.distributed as dist

    from shared.task import gather_lists

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        out[rank] = component_metrics(_maps(6, seed=1)[3 * rank : 3 * rank + 3], threshold=0.55, gather=gather_lists)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two spawned processes import the suite: 20-40 s
def test_component_metrics_of_two_real_ranks_equal_one_process():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_rank_component_metrics, args=(port, out), nprocs=2, join=True)
        got = dict(out)
    whole = component_metrics(_maps(6, seed=1), threshold=0.55)
    assert got == {0: whole, 1: whole}
