"""Driving evaluation metrics on two real gloo processes holding uneven shares of a split (7 images: 4 and 3,
as the no-repeat evaluation sampler of ``shared/data.py`` deals them) equal one process over the whole split.

COCO mAP of the detection and instance tasks aborted there (torchmetrics synced ``MeanAveragePrecision``'s
per-image states one collective per image: "Is there a distributed collective mismatch"); the instance task
logged rank 0's count of detections in DontCare; the anomaly task's ``val/loss`` was rank 0's share.

One 2-process run (module fixture) evaluates all three; each part records its values as soon as it has them,
so a part that aborts the processes fails its own tests (and those of the parts after it), not the others."""

from __future__ import annotations

import os
import socket
import time
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from domains.driving.instances.data import mask_boxes
from tests.helpers import FixedOutputs, anomaly_task, detection_task

pytestmark = pytest.mark.usefixtures("one_thread")

WORLD = 2
IMAGES = 7  # odd: the ranks hold 4 and 3
TIMEOUT_S = 240  # a collective mismatch may hang rather than abort: the processes are stopped after this


def _shard(items: list, rank: int, world: int) -> list:
    """A rank's share, as Lightning's ``UnrepeatedDistributedSampler`` deals it (every ``world``-th item)."""
    return items[rank::world]


def _quiet_logging(task):
    """The task's ``log`` / ``log_dict`` as no-ops: the epoch-end methods return what they log."""
    task.log = lambda *args, **kwargs: None
    task.log_dict = lambda *args, **kwargs: None
    return task


# ------------------------------------------------------------------------------------------------ detection


def _detection_images() -> list[tuple[dict, dict]]:
    """(target, prediction) per image in a 64x128 tensor of a 128x256 original: a car found with an offset
    growing with the image, a false alarm, and on odd images a detection inside a DontCare box. Every score is
    distinct, so the COCO ranking is the same in any image order."""
    images = []
    for i in range(IMAGES):
        car = torch.tensor([[10.0, 10, 40, 40]])
        target = {
            "boxes": car,
            "labels": torch.tensor([0]),
            "ignore_boxes": torch.tensor([[80.0, 10, 120, 50]]),
            "image_id": f"{i:06d}",
            "orig_size": (128, 256),
        }
        in_dontcare = [[85.0, 15, 115, 45]] if i % 2 else []
        boxes = [[10.0 + 2 * i, 10, 40 + 2 * i, 40], [50, 20, 70, 60], *in_dontcare]
        scores = [0.9 - 0.05 * i, 0.5 + 0.03 * i] + ([0.95 - 0.01 * i] if i % 2 else [])
        pred = {
            "boxes": torch.tensor(boxes),
            "scores": torch.tensor(scores),
            "labels": torch.tensor([0, 1] + ([0] if i % 2 else [])),
        }
        images.append((target, pred))
    return images


def _detection_values(rank: int, world: int) -> dict[str, float]:
    """The test metrics of a tiny detection task whose model returns this rank's share of the predictions."""
    task = _quiet_logging(
        detection_task(
            backbone="tiny_cnn",
            backbone_kwargs={"width": 8},
            class_names=["Car", "Pedestrian"],
            input_size=(64, 128),
            fpn_channels=32,
            head_convs=1,
            kitti_difficulties=["moderate"],
        )
    )
    task._annotations = dict  # no data module: KITTI ground truth from the targets
    share = _shard(_detection_images(), rank, world)
    task.model = FixedOutputs([pred for _, pred in share])
    task._evaluation_step(([torch.zeros(3, 64, 128)] * len(share), [t for t, _ in share]), "test")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-set KITTI notes
        return task._log_epoch_metrics("test")


# ------------------------------------------------------------------------------------------------ instances


def _box_mask(y1: int, y2: int, x1: int, x2: int) -> torch.Tensor:
    mask = torch.zeros(40, 40, dtype=torch.bool)
    mask[y1:y2, x1:x2] = True
    return mask


def _instance_images() -> list[tuple[dict, dict]]:
    """(target, prediction) per 40x40 image: a car found with a growing offset, and on odd images a detection
    wholly inside the DontCare region (so rank 0, holding the even images, counts none of them)."""
    images = []
    for i in range(IMAGES):
        car = _box_mask(0, 10, 0, 10)[None]
        target = {
            "boxes": mask_boxes(car.byte()),
            "labels": torch.tensor([0]),
            "masks": car.byte(),
            "ignore_mask": _box_mask(20, 40, 20, 40),
        }
        found = [_box_mask(0, 10, i, 10 + i)] + ([_box_mask(25, 35, 25, 35)] if i % 2 else [])
        masks = torch.stack(found)
        pred = {
            "boxes": mask_boxes(masks.byte()).float(),
            "scores": torch.tensor([0.9 - 0.05 * i] + ([0.95 - 0.01 * i] if i % 2 else [])),
            "labels": torch.zeros(len(masks), dtype=torch.long),
            "masks": masks.float() * 0.8,  # probabilities above mask_thresh 0.5
        }
        images.append((target, pred))
    return images


def _instance_values(rank: int, world: int) -> dict[str, float]:
    """The test metrics (mask and box AP, ``ignored_detections``) of an instance task on this rank's share."""
    from domains.driving.instances.model import RoadInstanceSegmenter
    from domains.driving.instances.task import InstanceTask
    from tests.driving.layouts import TINY_MASK_RCNN

    task = _quiet_logging(
        InstanceTask(network=RoadInstanceSegmenter(2, **TINY_MASK_RCNN), class_names=["Car", "Pedestrian"])
    )
    share = _shard(_instance_images(), rank, world)
    task.model = FixedOutputs([pred for _, pred in share])
    task._evaluation_step(([torch.zeros(3, 40, 40)] * len(share), [t for t, _ in share]), "test")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return task._log_epoch_metrics("test")


# -------------------------------------------------------------------------------------------------- anomaly


def _anomaly_data() -> tuple[torch.Tensor, torch.Tensor]:
    """Images and class masks whose scored (not ignored) pixel counts differ from image to image."""
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(IMAGES, 3, 32, 64, generator=generator)
    masks = torch.randint(0, 12, (IMAGES, 32, 64), generator=generator)
    for i in range(IMAGES):
        masks[i, : 4 * i] = 255  # IGNORE_INDEX: 4 * i rows left out
    return images, masks


def _anomaly_task():
    torch.manual_seed(0)  # the same weights in every process
    return anomaly_task(encoder_kwargs={"channels": [4, 8, 16]}, oe_weight=0.0, input_size=(32, 64)).eval()


def _anomaly_val_loss(rank: int, world: int) -> float:
    """``val/loss`` of ``validate`` by a Lightning trainer on this process (one of ``world`` DDP processes,
    launched here as torchrun would) over its share of the images, in batches of 2."""
    import pytorch_lightning as pl
    from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
    from torch.utils.data import DataLoader, TensorDataset

    dataset = TensorDataset(*_anomaly_data())
    sampler = UnrepeatedDistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=False)
    trainer = pl.Trainer(
        accelerator="cpu", devices=world, strategy="ddp", use_distributed_sampler=False, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.validate(_anomaly_task(), DataLoader(dataset, batch_size=2, sampler=sampler), verbose=False)
    return float(trainer.callback_metrics["val/loss"])


# ------------------------------------------------------------------------------------------- the two ranks

PARTS = {"anomaly": _anomaly_val_loss, "instances": _instance_values, "detection": _detection_values}


def _worker(rank: int, port: int, out) -> None:
    torch.set_num_threads(1)
    # as torchrun starts them: Lightning takes this process as rank ``rank`` of a group launched outside it
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), LOCAL_RANK=str(rank), NODE_RANK="0")
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(WORLD))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        for name, part in PARTS.items():  # in this order on every rank
            out[(name, rank)] = part(rank, WORLD)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks() -> dict:
    """``{(part, rank): values}`` of the parts the two processes finished; ``"failure"``: why they stopped."""
    with mp.Manager() as manager:
        out = manager.dict()
        context = mp.start_processes(_worker, args=(_free_port(), out), nprocs=WORLD, join=False)
        deadline, failure = time.monotonic() + TIMEOUT_S, None
        try:
            while not context.join(timeout=5):
                if time.monotonic() > deadline:
                    failure = f"no result after {TIMEOUT_S} s (a collective hanging?)"
                    break
        except (mp.ProcessExitedException, mp.ProcessRaisedException) as err:
            failure = str(err)  # e.g. gloo's abort on a collective mismatch
        finally:
            for process in context.processes:
                if process.is_alive():
                    process.terminate()
        results = dict(out)
    results["failure"] = failure
    return results


def _both_ranks(ranks: dict, part: str) -> tuple:
    missing = [r for r in range(WORLD) if (part, r) not in ranks]
    assert not missing, f"{part}: ranks {missing} gave no result: {ranks['failure']}"
    return tuple(ranks[(part, r)] for r in range(WORLD))


def _assert_same_values(got: dict, expected: dict) -> None:
    assert sorted(got) == sorted(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key


@pytest.mark.slow  # a two-process run (about 20 s); test_ddp_sync_s38 / test_geco_ddp_s39 keep DDP in make test
def test_detection_coco_and_kitti_metrics_of_uneven_shares_equal_one_process(ranks):
    expected = _detection_values(0, 1)
    assert 0 < expected["test/map50"] < 1 and expected["test/ignored_detections"] == 3
    for got in _both_ranks(ranks, "detection"):
        _assert_same_values(got, expected)


@pytest.mark.slow  # a two-process run (about 20 s); test_ddp_sync_s38 / test_geco_ddp_s39 keep DDP in make test
def test_instance_mask_and_box_ap_of_uneven_shares_equal_one_process(ranks):
    expected = _instance_values(0, 1)
    assert 0 < expected["test/mask_map"] < 1
    for got in _both_ranks(ranks, "instances"):
        _assert_same_values({k: v for k, v in got.items() if "ignored" not in k},
                            {k: v for k, v in expected.items() if "ignored" not in k})  # fmt: skip


@pytest.mark.slow  # a two-process run (about 20 s); test_ddp_sync_s38 / test_geco_ddp_s39 keep DDP in make test
def test_instance_ignored_detections_count_every_rank(ranks):
    """The odd images (rank 1's share) hold the detections in DontCare: rank 0 alone counted none."""
    assert _instance_values(0, 1)["test/ignored_detections"] == 3
    assert [got["test/ignored_detections"] for got in _both_ranks(ranks, "instances")] == [3, 3]


@pytest.mark.slow  # a two-process run (about 20 s); test_ddp_sync_s38 / test_geco_ddp_s39 keep DDP in make test
def test_anomaly_val_loss_is_the_cross_entropy_of_every_rank_and_pixel(ranks):
    """Every scored pixel of the split weighs the same, whichever rank and batch it fell in: not rank 0's
    share (no sync), nor the mean of the ranks' means (``sync_dist``)."""
    images, masks = _anomaly_data()
    with torch.no_grad():
        logits, _, _ = _anomaly_task().model.features(images)
    expected = float(F.cross_entropy(logits, masks, ignore_index=255))
    assert _both_ranks(ranks, "anomaly") == pytest.approx((expected, expected), abs=1e-5)


def test_anomaly_val_loss_skips_unscored_batches_and_keeps_a_diverged_models_nan():
    """A batch with no scored pixel weighs nothing (every rank still logs, so every rank syncs); a NaN loss
    stays NaN rather than being dropped from the mean."""
    task = _quiet_logging(_anomaly_task())
    images, masks = _anomaly_data()
    with torch.no_grad():
        task.validation_step((images[:2], torch.full_like(masks[:2], 255)), 0)
        task.validation_step((images[2:4], masks[2:4]), 1)
        logits, _, _ = task.model.features(images[2:4])
    expected = F.cross_entropy(logits, masks[2:4], ignore_index=255)
    val_loss = task.logged_means["val/loss"]  # BaseTask.log_mean's
    assert float(val_loss.compute()) == pytest.approx(float(expected))
    with torch.no_grad():
        for parameter in task.model.parameters():
            parameter.fill_(float("nan"))
        task.validation_step((images[4:], masks[4:]), 2)
    assert torch.isnan(val_loss.compute())
