"""The optimiser / schedule callables every task takes (``model.optimizer``, ``model.lr_scheduler``)."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch

from shared.optim import WarmupCosine, adamw, warmup_cosine
from tests.shared.tiny_task import SquaresDataModule, TinySegTask


def _lrs(scheduler: WarmupCosine, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        out.append(scheduler.optimizer.param_groups[0]["lr"])
        scheduler.optimizer.step()
        scheduler.step()
    return out


def test_warmup_then_cosine_by_hand():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    lrs = _lrs(WarmupCosine(optimizer, warmup_steps=2, total_steps=6), 8)
    # warm-up (step + 1) / 3, then 0.5 (1 + cos(pi (step - 2) / 4)), 0 from step 6 on
    expected = [
        1 / 3,
        2 / 3,
        1.0,
        0.5 * (1 + math.cos(math.pi / 4)),
        0.5,
        0.5 * (1 + math.cos(3 * math.pi / 4)),
        0,
        0,
    ]
    assert lrs == pytest.approx(expected)


def test_the_end_can_move_while_training_and_is_saved():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = WarmupCosine(optimizer, total_steps=4)
    _lrs(scheduler, 2)
    scheduler.total_steps = 8  # a budget found more time: at step 2 of 8 the cosine is at 0.5 (1 + cos(pi/4))
    assert scheduler.optimizer.param_groups[0]["lr"] == pytest.approx(0.5)  # set before the move
    scheduler.optimizer.step()
    scheduler.step()
    assert scheduler.optimizer.param_groups[0]["lr"] == pytest.approx(0.5 * (1 + math.cos(3 * math.pi / 8)))
    assert scheduler.state_dict()["total_steps"] == 8


@pytest.mark.parametrize(
    "kwargs, message", [({"warmup_steps": -1}, "warmup_steps"), ({"total_steps": 0}, "total_steps")]
)
def test_bad_schedule_arguments_are_named(kwargs, message):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match=message):
        WarmupCosine(optimizer, **kwargs)


def test_task_runs_the_schedule_over_the_planned_steps_and_saves_no_callables(tmp_path):
    task = TinySegTask(optimizer=adamw(lr=0.01), lr_scheduler=warmup_cosine(warmup_steps=2))
    trainer = pl.Trainer(
        max_steps=6,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(task, SquaresDataModule(n_train=8, batch_size=4))
    assert task.schedule_steps == 6
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert "optimizer" not in task.hparams and "lr_scheduler" not in task.hparams
    trainer.save_checkpoint(tmp_path / "tiny.ckpt")
    TinySegTask.load_checked(tmp_path / "tiny.ckpt")  # weights_only: nothing but tensors and containers

    # resumed with a larger max_steps: the cosine runs on to the new end (the saved length of 6 had kept the
    # LR at 0 for every resumed step); a fixed total_steps in the config stays as given
    class Record(pl.Callback):
        def __init__(self):
            self.lrs, self.last_lrs = [], []

        def on_train_batch_start(self, trainer, *args):
            self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])
            self.last_lrs.append(trainer.lr_scheduler_configs[0].scheduler.get_last_lr()[0])  # what it reports

    import math

    half_way = 0.01 * 0.5 * (1 + math.cos(math.pi * (9 - 2) / (12 - 2)))  # step 9 of 12, after 2 of warm-up
    for schedule, total, lr_at_9 in ((warmup_cosine(warmup_steps=2), 12, half_way), (warmup_cosine(total_steps=6), 6, 0.0)):
        resumed, record = TinySegTask(optimizer=adamw(lr=0.01), lr_scheduler=schedule), Record()
        again = pl.Trainer(max_steps=12, logger=False, enable_progress_bar=False, enable_model_summary=False,
                           default_root_dir=tmp_path, callbacks=[record])  # fmt: skip
        again.fit(resumed, SquaresDataModule(n_train=8, batch_size=4), ckpt_path=tmp_path / "tiny.ckpt")
        assert resumed.schedule_steps == total and len(record.lrs) == 6  # steps 6 .. 11
        assert record.lrs[3] == pytest.approx(lr_at_9, abs=1e-9)
        # the first resumed step too: it ran at the saved schedule's last LR (0), the optimiser's restored value
        lr_at_6 = 0.01 * 0.5 * (1 + math.cos(math.pi * (6 - 2) / (12 - 2))) if total == 12 else 0.0
        assert record.lrs[0] == pytest.approx(lr_at_6, abs=1e-9) and record.last_lrs == pytest.approx(record.lrs)


def test_a_skipped_batch_leaves_no_nan_in_batch_norm_statistics():
    """The skipped batch ran forward first: its NaN reached the running statistics, which are reset (only the
    poisoned ones), so later evaluations are not NaN."""
    task = TinySegTask(nonfinite_loss="skip")
    task.log = task.print = lambda *args, **kwargs: None  # no trainer attached
    task.poisoned, task.clean = torch.nn.BatchNorm2d(2), torch.nn.BatchNorm2d(2)
    task.poisoned(torch.full((2, 2, 3, 3), float("nan")))
    task.clean(torch.ones(2, 2, 3, 3) * 3)
    nan = torch.tensor(float("nan"))
    assert task.guard_loss(nan, {"ce": nan}) is None and task.skipped_batches == 1
    assert torch.equal(task.poisoned.running_mean, torch.zeros(2)) and torch.equal(
        task.poisoned.running_var, torch.ones(2)
    )
    assert torch.allclose(task.clean.running_mean, torch.full((2,), 0.3))  # untouched: momentum 0.1 towards 3


def test_guard_loss_checks_the_loss_and_every_term_in_one_go_and_names_the_bad_one():
    from shared.task import NonFiniteLossError

    task = TinySegTask(nonfinite_loss="raise")
    one, inf = torch.tensor(1.0), torch.tensor(float("inf"))
    assert task.guard_loss(one, {"ce": one, "kl": torch.tensor([0.5, 2.0])}) is one
    with pytest.raises(NonFiniteLossError, match=r"in term\(s\): kl \("):
        task.guard_loss(one, {"ce": one, "kl": inf})  # a term, though the total is finite
    with pytest.raises(NonFiniteLossError, match=r"in term\(s\): total"):
        task.guard_loss(torch.tensor(float("nan")), {"ce": one})  # the total alone
