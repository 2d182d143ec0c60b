"""FitScheduleToBudget: the run's end and the cosine's length follow the measured step time (fake clock)."""

import pytest
import pytorch_lightning as pl

from shared.budget import FitScheduleToBudget
from tests.helpers import quiet_trainer
from tests.shared.tiny_task import SquaresDataModule, TinySegTask

pytestmark = pytest.mark.usefixtures("one_thread")


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


def test_estimate_uses_only_the_last_window_of_steps():
    # every=5, window=5: each estimate is the last 5 steps' time. The clock advances 0, 5, 5, 20 s per read, so
    # it reads 0 (start, step 0), 5 (step 5), 10 (step 10), 30 (step 15): 1 s per step, then 4 s per step.
    #   step  5: (5 - 0) / 5 = 1 s/step, 40 - 5 = 35 s left   -> end 5 + 35 = 40
    #   step 10: (10 - 5) / 5 = 1 s/step, 30 s left           -> end 10 + 30 = 40
    #   step 15: (30 - 10) / 5 = 4 s/step, 40 - 30 = 10 s left -> end 15 + int(10 / 4) = 17
    # (averaged since step 0 instead, (30 - 0) / 15 = 2 s/step would give 15 + 5 = 20: the slow-down unseen)
    callback = FitScheduleToBudget(seconds=40, every=5, window=5, clock=FakeClock([0.0, 5.0, 5.0, 20.0]))
    trainer, task = _fit(callback, planned_steps=12)
    assert callback.adjustments == [(5, 40), (10, 40), (15, 17)]
    assert trainer.global_step == 17 and task.schedule_steps == 17


def test_spent_budget_ends_the_run_at_the_step_reached_not_before():
    # seconds=12, every=5, window=5; the clock reads 0 (start), 5 (step 5), 25 (step 10).
    #   step  5: 1 s/step, 12 - 5 = 7 s left                       -> end 5 + 7 = 12
    #   step 10: (25 - 5) / 5 = 4 s/step, 12 - 25 = -13 s left     -> 10 + int(-13 / 4) = 7 < 10: end 10
    callback = FitScheduleToBudget(seconds=12, every=5, window=5, clock=FakeClock([0.0, 5.0, 20.0]))
    trainer, task = _fit(callback, planned_steps=100)
    assert callback.adjustments == [(5, 12), (10, 10)]
    assert trainer.global_step == 10 and task.schedule_steps == 10


def test_bad_arguments():
    with pytest.raises(ValueError, match="seconds > 0"):
        FitScheduleToBudget(seconds=0)
    with pytest.raises(ValueError, match="window >= every"):
        FitScheduleToBudget(seconds=10, every=10, window=5)
