"""FitScheduleToBudget: the run's end and the cosine's length follow the measured step time (fake clock)."""

import pytest
import pytorch_lightning as pl

from shared.budget import FitScheduleToBudget
from tests.helpers import quiet_trainer
from tests.shared.tiny_task import SquaresDataModule, TinySegTask


class FakeClock:
    """Seconds that advance by ``per_call[i]`` on the i-th call (the last value repeats)."""

    def __init__(self, per_call):
        self.per_call, self.calls, self.now = list(per_call), 0, 0.0

    def __call__(self) -> float:
        self.now += self.per_call[min(self.calls, len(self.per_call) - 1)]
        self.calls += 1
        return self.now


def _fit(callback: FitScheduleToBudget, planned_steps: int) -> tuple[pl.Trainer, TinySegTask]:
    task = TinySegTask()
    trainer = quiet_trainer(max_steps=planned_steps, callbacks=[callback])
    trainer.fit(task, SquaresDataModule(n_train=16, batch_size=4))
    return trainer, task


def test_run_is_stretched_when_steps_are_faster_than_planned():
    # The clock is read once at the start and once per check (every 5 steps): 5 fake seconds per check is
    # 1 s per step, so a 30 s budget holds 30 steps although the probe planned 12.
    callback = FitScheduleToBudget(seconds=30, every=5, window=10, clock=FakeClock([0.0, 5.0]))
    trainer, task = _fit(callback, planned_steps=12)
    assert callback.adjustments[0] == (5, 30)
    assert trainer.global_step == 30
    assert task.schedule_steps == 30
    # the cosine ends with the run: the last LR is near zero, not restarted
    assert (
        task.trainer.optimizers[0].param_groups[0]["lr"]
        < 0.02 * task.trainer.optimizers[0].param_groups[0]["initial_lr"]
    )


def test_run_is_shortened_when_steps_are_slower_than_planned():
    callback = FitScheduleToBudget(seconds=30, every=5, window=10, clock=FakeClock([0.0, 10.0]))
    trainer, task = _fit(callback, planned_steps=100)
    # 2 s per step: after 5 steps (10 s) 20 s remain for 10 more steps
    assert callback.adjustments[0] == (5, 15)
    assert trainer.global_step == 15 and task.schedule_steps == 15


def test_bad_arguments():
    with pytest.raises(ValueError, match="seconds > 0"):
        FitScheduleToBudget(seconds=0)
    with pytest.raises(ValueError, match="window >= every"):
        FitScheduleToBudget(seconds=10, every=10, window=5)
