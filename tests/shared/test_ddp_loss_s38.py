"""Evaluation losses that do not move with the number of processes or the batch size, and accident Monte Carlo
dropout drawn per clip (s38 DDP audit).

Lightning's ``self.log(..., batch_size=B, sync_dist=True)`` averaged the ranks' image counts in an integer
tensor (gloo: (6 + 5) / 2 gave 5), so over 11 images on 2 processes each loss came out 11/10 too large; the
tasks now log :class:`shared.task.EpochMean` metrics (``BaseTask.log_mean``). Values already synced
(torchmetrics results) are logged with ``log_settled``, which keeps Lightning's "It is recommended to use
`self.log(..., sync_dist=True)`" off the console."""

from __future__ import annotations

import os
import socket
import warnings

import pytest
import torch
import torch.multiprocessing as mp
from torch.utils.data import DataLoader

from domains.driving.accident.data import collate_clips
from domains.driving.accident.model import AccidentAnticipator
from domains.driving.accident.task import AccidentTask
from domains.medical.models import MODELS
from domains.medical.task import MedicalSegmentationTask
from shared.task import EpochMean
from tests.helpers import quiet_trainer, stripes_task

pytestmark = pytest.mark.usefixtures("one_thread")

N_ITEMS = 11  # odd: 6 and 5 on two ranks
RECOMMENDS_SYNC = "It is recommended to use `self.log("


# ------------------------------------------------------------------------------------- tasks and data
def _medical() -> tuple[MedicalSegmentationTask, list[dict]]:
    """A tiny Prob. U-Net (loss, rec_per_pixel and kl terms) on 11 noise images with 4 readers' masks each;
    its weights jittered, so that prior and posterior differ (both start as N(0, 1): KL 0)."""
    torch.manual_seed(0)
    network = MODELS["prob_unet"](channels=(8, 16), latent_dim=3)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.add_(0.2 * torch.randn_like(parameter))
    task = MedicalSegmentationTask(network=network, num_samples=2, predict_dir=None)
    g = torch.Generator().manual_seed(1)
    images = torch.rand(N_ITEMS, 1, 16, 16, generator=g)
    masks = (torch.rand(N_ITEMS, 4, 16, 16, generator=g) > 0.7).float()
    return task, [{"image": images[i], "mask": masks[i, :1], "masks": masks[i]} for i in range(N_ITEMS)]


def _classification() -> tuple[torch.nn.Module, list[dict]]:
    """The grey two-class tiny_cnn of the stripes tests on 11 random 16 px images."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(2)
    images = torch.rand(N_ITEMS, 1, 16, 16, generator=g)
    return stripes_task(), [{"image": images[i], "label": i % 2} for i in range(N_ITEMS)]


def _clip(i: int, frames: int, slots: int = 3) -> dict:
    """One boxes-only clip of ``frames`` frames: a box growing towards the camera in crash clips (contact at
    frame ``frames - 2``), one that stays put in the others; 2 of ``slots`` slots hold a box."""
    g = torch.Generator().manual_seed(i)
    kind = ("crash", "near_miss", "normal")[i % 3]
    boxes = torch.zeros(frames, slots, 4)
    for t in range(frames):
        h = 3.0 * (1.2**t if kind == "crash" else 1.0) + float(torch.rand(1, generator=g))
        boxes[t, 0] = torch.tensor([24 - h, 12 - h / 2, 24 + h, 12 + h / 2]).clamp(0, 48)
        boxes[t, 1] = torch.tensor([2.0, 2.0, 8.0, 6.0]) + float(torch.rand(1, generator=g))
    valid = torch.zeros(frames, slots, dtype=torch.bool)
    valid[:, :2] = True
    return {
        "boxes": boxes,
        "box_valid": valid,
        "ttc": torch.full((frames,), float("nan")),
        "track_ids": torch.arange(slots),
        "involved": torch.tensor([kind == "crash", False, False]),
        "toa": frames - 2 if kind == "crash" else -1,
        "fps": 10.0,
        "kind": kind,
        "clip_id": f"clip{i}",
    }


def _accident(clips: int = N_ITEMS) -> tuple[AccidentTask, list[dict]]:
    """A tiny boxes-only anticipator (dropout 0.5 for the Monte Carlo spread) on clips of 4 to 10 frames."""
    torch.manual_seed(0)
    network = AccidentAnticipator(input_kind="boxes", input_size=(24, 48), hidden=8, window=4, dropout=0.5)
    task = AccidentTask(network=network, uncertainty_samples=4, calibrate=False)
    return task, [_clip(i, 4 + (3 * i) % 7) for i in range(clips)]


BUILDERS = {"medical": _medical, "classification": _classification, "accident": _accident}
COLLATE = {"accident": collate_clips}
# what each run logs as a mean over items (images; the accident's frames and object slots); medical's
# validation also decides the posterior collapse warning from val/kl*_nats on every rank
LOSSES = {
    "medical test": ("test/loss", "test/rec_per_pixel", "test/kl", "test/kl_nats"),
    "medical validate": ("val/loss", "val/rec_per_pixel", "val/kl", "val/kl_nats"),
    "classification test": ("test/loss",),
    "accident test": ("test/loss", "test/horizon_loss", "test/object_loss"),
}


def _evaluate(run: str, trainer, batch_size: int = 2, sampler=None) -> dict[str, float]:
    """``run`` ("<task> test" or "<task> validate") of a task and its items; what it logged."""
    name, stage = run.split()
    task, items = BUILDERS[name]()
    loader = DataLoader(items, batch_size=batch_size, sampler=sampler, collate_fn=COLLATE.get(name))
    (logged,) = getattr(trainer, stage)(task, dataloaders=loader, verbose=False)
    return logged


# ---------------------------------------------------------------------------------------- 2 processes
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, port: int, out: dict) -> None:
    """One of two ranks: Lightning's ddp strategy on CPU (gloo) in a process started here (LOCAL_RANK set:
    Lightning launches nothing), testing each task on its share of the 11 items (the data modules' sampler:
    6 and 5, none twice)."""
    from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler

    torch.set_num_threads(1)
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), LOCAL_RANK=str(rank), NODE_RANK="0", WORLD_SIZE="2"
    )
    results = {}
    for run in LOSSES:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            settings = {"use_distributed_sampler": False, "limit_val_batches": 1.0}
            trainer = quiet_trainer(devices=2, strategy="ddp", **settings)
            items = list(range(N_ITEMS))
            sampler = UnrepeatedDistributedSampler(items, num_replicas=2, rank=rank, shuffle=False)
            logged = _evaluate(run, trainer, sampler=sampler)
        results[run] = {
            "logged": logged,
            "items": len(list(sampler)),
            "recommends_sync": [str(w.message) for w in seen if RECOMMENDS_SYNC in str(w.message)],
        }
    # a training epoch: 12 images, 6 a rank in batches of 3 (Lightning's sampler); train/acc logged per epoch
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        task, items = _classification()
        trainer = quiet_trainer(devices=2, strategy="ddp", max_epochs=1)
        trainer.fit(task, train_dataloaders=DataLoader([*items, items[0]], batch_size=3))
    results["classification fit"] = {
        "train/acc": float(trainer.callback_metrics["train/acc"]),
        "recommends_sync": [str(w.message) for w in seen if RECOMMENDS_SYNC in str(w.message)],
    }
    out[rank] = results


@pytest.fixture(scope="module")
def two_ranks() -> dict[int, dict]:
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_ddp_worker, args=(_free_port(), out), nprocs=2, join=True)
        return dict(out)


@pytest.mark.slow  # a two-process run (about 20 s); test_ddp_sync_s38 / test_geco_ddp_s39 keep DDP in make test
@pytest.mark.parametrize("run", sorted(LOSSES))
def test_two_processes_log_the_losses_of_one_over_an_odd_number_of_items(run, two_ranks):
    """11 items, 6 on rank 0 and 5 on rank 1: every loss (and loss term) is the mean over all 11, as on one
    process; Lightning's integer count made it 11/10 of that (medical test/loss 1283.04 against 1166.40)."""
    single = _evaluate(run, quiet_trainer(devices=1, limit_val_batches=1.0))
    ranks = [two_ranks[rank][run] for rank in (0, 1)]
    assert [r["items"] for r in ranks] == [6, 5]
    for key in LOSSES[run]:
        assert single[key] > 0, key  # a term that says something
        for rank, r in enumerate(ranks):
            assert r["logged"][key] == pytest.approx(single[key], rel=1e-5), (key, rank)
    # the torchmetrics results, logged with log_settled, are the same as on one process too
    for key, value in single.items():
        assert ranks[0]["logged"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


@pytest.mark.slow  # a two-process run (about 20 s); test_ddp_sync_s38 / test_geco_ddp_s39 keep DDP in make test
@pytest.mark.parametrize("run", sorted(LOSSES))
def test_two_processes_do_not_recommend_sync_dist_for_synced_values(run, two_ranks):
    """Lightning printed "It is recommended to use `self.log('test/ged', ..., sync_dist=True)`" for each
    torchmetrics result (13 lines per evaluation for medical), already the same on every rank."""
    assert two_ranks[0][run]["recommends_sync"] == []


@pytest.mark.slow  # a two-process run (about 20 s); test_ddp_sync_s38 / test_geco_ddp_s39 keep DDP in make test
def test_two_processes_log_the_training_accuracy_of_both_ranks_images(two_ranks):
    """train/acc (per epoch) was rank 0's share alone, with the same recommendation printed."""
    ranks = [two_ranks[rank]["classification fit"] for rank in (0, 1)]
    assert ranks[0]["recommends_sync"] == []
    assert ranks[0]["train/acc"] == ranks[1]["train/acc"]


# ------------------------------------------------------------------------------------ one process
def test_the_accident_loss_is_the_splits_loss_as_one_batch_whatever_the_batch_size():
    """Clips of 4 to 10 frames: test/loss was a frame mean per batch weighted by its clips (0.693 / 0.625 at
    batch size 1 / 7 on a 4-clip test split), now the horizon term over every clip's frames and the object
    term over every object slot, which is the loss of all clips as one batch."""
    task, clips = _accident()
    task.eval()  # as test runs it: dropout off
    batch = collate_clips(clips)
    with torch.no_grad():
        whole = task.losses(batch, task.forward_batch(batch))
    for batch_size in (1, 3, N_ITEMS):
        logged = _evaluate("accident test", quiet_trainer(devices=1), batch_size=batch_size)
        assert logged["test/loss"] == pytest.approx(float(whole["total"]), rel=1e-5), batch_size
        assert logged["test/horizon_loss"] == pytest.approx(float(whole["horizon"]), rel=1e-5), batch_size
        assert logged["test/object_loss"] == pytest.approx(float(whole["object"]), rel=1e-5), batch_size


def _uncertainty(task: AccidentTask, clips: list[dict]) -> dict[str, torch.Tensor]:
    results = task.predict_step(collate_clips(clips), 0)
    return {r["clip_id"]: r["uncertainty"] for r in results}


def test_accident_dropout_spread_is_the_clips_own_in_any_batch_and_leaves_the_global_stream():
    """Monte Carlo dropout masks came from the global stream in batch order: a clip's uncertainty depended on
    its batch mates and its place (1 and 2 processes wrote other values). Now each clip draws from a seed of
    its own (its id and the run's seed) on its own frames; the global stream is as before."""
    task, clips = _accident(4)
    task.eval()
    task._run_seed = 0
    torch.manual_seed(123)
    state = torch.get_rng_state()
    together = _uncertainty(task, clips)
    assert torch.equal(torch.get_rng_state(), state)  # forked and restored around each clip
    assert all(float(u.max()) > 0 for u in together.values())  # dropout 0.5 does spread the risk
    alone = {}
    for clip in clips[::-1]:
        torch.rand(7)  # elsewhere in the global stream: it does not matter
        alone |= _uncertainty(task, [clip])
    reordered = _uncertainty(task, [clips[2], clips[0], clips[3], clips[1]])
    for clip_id, spread in together.items():  # the recurrent states differ in rounding alone (1e-7)
        torch.testing.assert_close(alone[clip_id], spread, rtol=1e-4, atol=1e-6, msg=clip_id)
        torch.testing.assert_close(reordered[clip_id], spread, rtol=1e-4, atol=1e-6, msg=clip_id)
    task._run_seed = 1  # another run seed: other draws
    other = _uncertainty(task, clips)
    assert not torch.equal(other["clip0"], together["clip0"])


def test_the_epoch_mean_keeps_nan_weights_items_and_is_zero_over_none():
    """A NaN loss stays NaN (torchmetrics' default "warn" dropped it; "disable" dropped the weights too);
    weights count; a term with no item at all (no object slot in the split) is 0, as in each batch."""
    mean = EpochMean()
    mean.update(torch.tensor(1.0), 3)
    mean.update(torch.tensor(2.0), torch.tensor(1))
    assert float(mean.compute()) == pytest.approx(1.25)
    mean.update(torch.tensor(float("nan")), 1)
    assert torch.isnan(mean.compute())
    empty = EpochMean()
    empty.update(torch.tensor(0.0), 0)
    assert float(empty.compute()) == 0.0
