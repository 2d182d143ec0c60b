"""Long runs: a Ctrl-C inside the optimiser step saves a whole step, and ``max_time`` bounds the time budget
that fits the LR schedule (an explicit budget longer than it, and steps too slow for the budget's first
check)."""

from __future__ import annotations

import logging
import signal

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Timer

from shared.budget import FitScheduleToBudget
from shared.cli import run_cli
from shared.optim import CtrlCBetweenSteps, warmup_cosine
from tests.shared.tiny_task import SquaresDataModule, TinySegTask

pytestmark = pytest.mark.usefixtures("one_thread")

QUIET = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
         "--trainer.enable_model_summary", "false"]  # fmt: skip


# --------------------------------------------------------------- 1: Ctrl-C inside the optimiser step


class PlusOneCtrlCHalfway(torch.optim.Optimizer):
    """Adds 1 to every parameter each step (its state keeps each one's start and step count); at step ``at``
    a SIGINT (a Ctrl-C) comes after half of them."""

    def __init__(self, params, at: int = 3):
        super().__init__(params, {})
        self.at, self.count = at, 0
        for p in self._params():
            self.state[p] = {"initial": p.detach().clone(), "steps": torch.tensor(0)}

    def _params(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            with torch.enable_grad():
                closure()
        self.count += 1
        params = self._params()
        for index, p in enumerate(params):
            p.add_(1.0)
            self.state[p]["steps"] += 1
            if self.count == self.at and index == len(params) // 2:
                signal.raise_signal(signal.SIGINT)  # Python raises KeyboardInterrupt at once, without the fix


def test_ctrl_c_inside_the_optimiser_step_saves_a_whole_step(tmp_path, monkeypatch, caplog):
    """A SIGINT after half the parameters of step 3 were updated: last.ckpt held them at 3 steps, the rest at
    2, labelled step 2 (and resumed from there, the first half stepped twice). Now the step finishes first."""
    monkeypatch.chdir(tmp_path)
    ckpt = tmp_path / "ckpt"
    args = ["fit", *QUIET, "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "1",
            "--checkpoint.dirpath", str(ckpt), "--model.lr_scheduler", "null",
            "--model.optimizer", f"{__name__}.PlusOneCtrlCHalfway"]  # fmt: skip
    sigint = signal.getsignal(signal.SIGINT)
    try:  # Lightning ignores SIGINT from its Ctrl-C handling on
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a command's start, whatever ran before here
        with caplog.at_level(logging.INFO), pytest.raises(SystemExit) as stopped:
            run_cli(TinySegTask, SquaresDataModule, args=args, domain="tiny", monitor="val/loss")
    finally:
        signal.signal(signal.SIGINT, sigint)
    assert stopped.value.code == 1
    saved = torch.load(ckpt / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 3
    assert f"Ctrl-C: the fit's state at step 3 is saved in {ckpt / 'last.ckpt'}" in caplog.text
    names = [name for name, _ in TinySegTask().named_parameters()]  # the optimiser's order of parameters
    states = saved["optimizer_states"][0]["state"]
    assert len(states) == len(names) > 2
    for index, name in enumerate(names):
        state = states[index]
        assert int(state["steps"]) == 3, f"{name}: the optimiser state of step {int(state['steps'])}"
        torch.testing.assert_close(saved["state_dict"][name], state["initial"] + 3, msg=name)


def test_a_sigint_is_held_to_the_end_of_the_batch_and_a_failed_step_lets_the_handler_go():
    """Held during the step, raised at the batch's end; a step that fails puts the handler back and leaves the
    callback free to hold again (it stayed "holding", and a reused trainer's next fit held nothing)."""
    restore = signal.getsignal(signal.SIGINT)
    # Python's own handler, as a command starts with (an earlier test of this worker may have left another)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    before = signal.getsignal(signal.SIGINT)
    hold = CtrlCBetweenSteps()
    try:
        hold.on_before_optimizer_step(None, None, None)
        signal.raise_signal(signal.SIGINT)  # held: nothing raised here
        with pytest.raises(KeyboardInterrupt):
            hold.on_train_batch_end(None, None, None, None, 0)
        assert signal.getsignal(signal.SIGINT) is before
        hold.on_before_optimizer_step(None, None, None)
        hold.on_exception(None, None, RuntimeError("the step failed"))
        assert signal.getsignal(signal.SIGINT) is before
        hold.on_before_optimizer_step(None, None, None)  # the next fit's step
        assert signal.getsignal(signal.SIGINT) == hold._hold
    finally:
        signal.signal(signal.SIGINT, restore)


# ------------------------------------------------------------------------- 2: max_time bounds the budget


class StepTimer(Timer):
    """Lightning's ``max_time`` Timer on a fake clock (``now``): every training step takes ``per_step`` s."""

    def __init__(self, seconds: float, per_step: float):
        super().__init__(duration={"seconds": seconds}, interval="step")
        self.per_step, self.now = per_step, 0.0

    def time_elapsed(self, stage: str = "train") -> float:
        return self.now

    def on_train_batch_end(self, trainer, *args, **kwargs) -> None:
        self.now += self.per_step
        super().on_train_batch_end(trainer, *args, **kwargs)  # stops the trainer once the time is spent


def _timed_fit(max_time: float, budget_seconds: float | None, every: int) -> tuple:
    """40 steps planned (10 epochs of 4), 5 fake s a step on both the Timer and the budget's clock."""
    timer = StepTimer(max_time, per_step=5.0)
    budget = FitScheduleToBudget(seconds=budget_seconds, every=every, window=every, clock=lambda: timer.now)
    task = TinySegTask(lr_scheduler=warmup_cosine(warmup_steps=1))
    trainer = pl.Trainer(max_epochs=10, callbacks=[timer, budget], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         num_sanity_val_steps=0)  # fmt: skip
    trainer.fit(task, SquaresDataModule(n_train=16, batch_size=4))
    return trainer, task, budget.adjustments


def _lr(trainer) -> float:
    return trainer.optimizers[0].param_groups[0]["lr"]


def test_max_time_shorter_than_an_explicit_budget_bounds_the_schedule(caplog):
    """A 600 s budget (a benchmark's, or --trainer.callbacks+=...FitScheduleToBudget) under a 60 s max_time:
    the schedule was fitted to 120 steps and the Timer stopped the run at step 12, LR near its peak."""
    with caplog.at_level(logging.INFO):
        trainer, task, adjustments = _timed_fit(max_time=60, budget_seconds=600, every=2)
    assert "--trainer.max_time leaves 60 s for training, less than the 600 s time budget" in caplog.text
    assert adjustments[0] == (2, 12)  # (60 - 10 s) / 5 s = 10 more steps
    assert trainer.global_step == 12 and task.schedule_steps == 12
    assert _lr(trainer) == pytest.approx(0.0, abs=1e-12)  # annealed when the time ran out


def test_max_time_for_fewer_steps_than_the_first_check_fits_the_schedule_at_once():
    """30 s of max_time at 5 s a step is 6 steps; the budget checks every 10: it never checked, and the run
    stopped at step 6 of a 40-step cosine. Now it checks as soon as the time will not reach the next check."""
    trainer, task, adjustments = _timed_fit(max_time=30, budget_seconds=None, every=10)
    assert adjustments[0] == (1, 6)
    assert trainer.global_step == 6 and task.schedule_steps == 6
    assert _lr(trainer) == pytest.approx(0.0, abs=1e-12)
