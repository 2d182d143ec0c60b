"""Long runs through the suite CLI: a time budget (``max_time``) shapes the LR schedule, a metric given as
``--checkpoint.monitor`` keeps its own direction, Ctrl-C saves the fit, a fit that never validates says so,
and schedules other than ``WarmupCosine`` step when they should."""

from __future__ import annotations

import logging
import math
import signal
import warnings

import pytest
import pytorch_lightning as pl
import torch

from shared.budget import FitScheduleToBudget
from shared.cli import run_cli
from shared.optim import warmup_cosine
from tests.shared.test_budget import FakeClock
from tests.shared.tiny_task import SquaresDataModule, TinySegTask

pytestmark = pytest.mark.usefixtures("one_thread")

QUIET = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
         "--trainer.enable_model_summary", "false"]  # fmt: skip


def _fit(tmp_path, monkeypatch, *args: str, **options):
    """A tiny fit through the CLI (16 squares in batches of 4: 4 steps an epoch; 2 validation batches)."""
    monkeypatch.chdir(tmp_path)
    options = {"domain": "tiny", "monitor": "val/loss", **options}
    return run_cli(TinySegTask, SquaresDataModule, args=["fit", *QUIET, *args], **options)


def _lr(trainer) -> float:
    return trainer.optimizers[0].param_groups[0]["lr"]


# ------------------------------------------------------------------- 1, 2: max_time shapes the schedule


def _timed_fit(schedule, clock: FakeClock) -> tuple[pl.Trainer, TinySegTask, FitScheduleToBudget]:
    """5 epochs of 4 steps planned (20), max_time 60 s (Lightning's Timer, real time: not reached), and the
    budget callback as the CLI adds it, measuring step time on ``clock`` every 2 steps."""
    task = TinySegTask(optimizer=torch.optim.AdamW, lr_scheduler=schedule)
    budget = FitScheduleToBudget(seconds=None, every=2, window=2, clock=clock)
    trainer = pl.Trainer(max_epochs=5, max_time={"seconds": 60}, callbacks=[budget], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, num_sanity_val_steps=0)  # fmt: skip
    trainer.fit(task, SquaresDataModule(n_train=16, batch_size=4))
    return trainer, task, budget


def test_max_time_shortens_the_schedule_so_that_it_anneals_before_the_time_runs_out():
    """5 fake s a step: the 60 s max_time left at the first batch hold 11 of the 20 planned steps (at step
    s, (60 - 5 s) / 5 = 12 - s more, less the milliseconds really spent). max_time alone stopped the run there
    with the cosine planned over all the steps, the LR well above 0; now the schedule and the run end
    together."""
    trainer, task, budget = _timed_fit(warmup_cosine(warmup_steps=2), FakeClock([0.0, 10.0]))
    assert budget.active and budget.planned == 20
    assert budget.adjustments[0] == (2, 11) and {end for _, end in budget.adjustments} == {11}
    assert trainer.global_step == 11 and task.schedule_steps == 11
    assert _lr(trainer) == pytest.approx(0.0, abs=1e-12)  # annealed


def test_max_time_never_lengthens_the_planned_run_and_leaves_fixed_schedules_alone():
    """0.01 fake s a step: the time holds thousands of steps, but the run and its schedule keep the 20 planned
    (the schedule still follows the trainer); a WarmupCosine of a fixed length is not the budget's to move."""
    trainer, task, budget = _timed_fit(warmup_cosine(warmup_steps=2), FakeClock([0.0, 0.02]))
    assert budget.active and budget.adjustments == []
    assert trainer.global_step == 20 and task.schedule_steps == 20 and task.lr_schedule.follows_trainer
    trainer, task, budget = _timed_fit(warmup_cosine(total_steps=100), FakeClock([0.0, 10.0]))
    assert not budget.active and budget.adjustments == []
    assert trainer.global_step == 20 and task.schedule_steps == 100


def test_cli_max_time_adds_the_budget_and_says_so(tmp_path, monkeypatch, caplog):
    with caplog.at_level(logging.INFO):
        cli = _fit(tmp_path, monkeypatch, "--trainer.max_epochs", "1", "--trainer.max_time", "00:00:01:00")
    (budget,) = [c for c in cli.trainer.callbacks if isinstance(c, FitScheduleToBudget)]
    assert budget.follows_max_time and budget.active and budget.planned == 4
    assert cli.trainer.global_step == 4 and cli.model.schedule_steps == 4  # the plan held: nothing moved
    assert "--trainer.max_time: the LR schedule follows the time" in caplog.text
    assert "or at the planned 4 steps" in caplog.text
    # a benchmark's own budget callback is the one used (not a second)
    own = ["--trainer.callbacks+=shared.budget.FitScheduleToBudget", "--trainer.callbacks.seconds=30"]
    cli = _fit(tmp_path, monkeypatch, "--trainer.max_epochs", "1", "--trainer.max_time", "00:00:01:00", *own)
    budgets = [c for c in cli.trainer.callbacks if isinstance(c, FitScheduleToBudget)]
    assert len(budgets) == 1 and budgets[0].seconds == 30.0


def test_a_pure_time_budget_trains_with_the_schedule_fitted_to_it(tmp_path, monkeypatch):
    """max_epochs -1 and max_time: int(inf) had ended the fit in an OverflowError in configure_optimizers."""
    cli = _fit(tmp_path, monkeypatch, "--trainer.max_epochs", "-1", "--trainer.max_time", "00:00:00:02",
               "--trainer.limit_val_batches", "1")  # fmt: skip
    (budget,) = [c for c in cli.trainer.callbacks if isinstance(c, FitScheduleToBudget)]
    assert budget.adjustments, "the budget never set the schedule's length"
    end = budget.adjustments[-1][1]
    assert cli.model.schedule_steps == end < 10**6 and 10 <= cli.trainer.global_step <= end
    peak = cli.trainer.optimizers[0].param_groups[0]["initial_lr"]
    assert _lr(cli.trainer) < peak  # the cosine ran (a placeholder length would have held the peak)


def test_no_length_and_no_time_is_an_error_naming_the_options(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"no end: give --trainer.max_epochs N or --trainer.max_steps N"):
        _fit(tmp_path, monkeypatch, "--trainer.max_epochs", "-1")


# --------------------------------------------------------------------------- 3: the monitor's own mode


@pytest.mark.parametrize(
    ("given", "mode", "warned"),
    [
        ([], "max", False),  # the domain's monitor and mode
        (["--checkpoint.monitor", "val/loss"], "min", False),  # a loss: lower is better
        (["--checkpoint.monitor", "val/loss", "--checkpoint.mode", "max"], "max", False),  # given: wins
        (["--checkpoint.monitor", "val/dice"], "max", True),  # unknown: the domain's, warned
    ],
)
def test_another_monitor_takes_its_own_mode(tmp_path, monkeypatch, given, mode, warned):
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli = run_cli(TinySegTask, SquaresDataModule, domain="tiny", monitor="val/acc", monitor_mode="max",
                      run=False, args=[*QUIET, *given])  # fmt: skip
    assert cli.trainer.checkpoint_callback.mode == mode
    said = [str(w.message) for w in caught if "without --checkpoint.mode" in str(w.message)]
    assert bool(said) == warned
    if warned:
        assert "highest value (--checkpoint.mode max, the domain's for val/acc)" in said[0]


# --------------------------------------------------------------------------- 4: Ctrl-C saves the fit


class CtrlCAt(pl.Callback):
    """A Ctrl-C (KeyboardInterrupt) in the training batch that ends at global step ``step``."""

    def __init__(self, step: int = 6):
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            raise KeyboardInterrupt


def test_ctrl_c_saves_the_fit_and_says_how_to_resume(tmp_path, monkeypatch, caplog):
    """With validation every 10 epochs (detection's gpu.yaml) a Ctrl-C after 8 epochs had saved nothing."""
    ckpt = tmp_path / "ckpt"
    args = ["--trainer.max_epochs", "3", "--trainer.check_val_every_n_epoch", "10", "--checkpoint.dirpath",
            str(ckpt)]  # fmt: skip
    sigint = signal.getsignal(signal.SIGINT)  # Lightning ignores SIGINT from its Ctrl-C handling on
    try:
        with caplog.at_level(logging.INFO), pytest.raises(SystemExit) as stopped:
            _fit(tmp_path, monkeypatch, *args, "--trainer.callbacks+=tests.shared.test_long_runs_s36.CtrlCAt")
    finally:
        signal.signal(signal.SIGINT, sigint)
    assert stopped.value.code == 1
    assert torch.load(ckpt / "last.ckpt", weights_only=True)["global_step"] == 6
    assert f"Ctrl-C: the fit's state at step 6 is saved in {ckpt / 'last.ckpt'}" in caplog.text
    assert "(a fit resumes with `fit --ckpt_path last`)" in caplog.text
    resumed = _fit(tmp_path, monkeypatch, *args, "--ckpt_path", "last")
    assert resumed.trainer.global_step == 12  # from step 6 to the end of epoch 3


# --------------------------------------------------------------------------- 5: a fit that never validates


@pytest.mark.parametrize(
    ("given", "said"),
    [
        (["--trainer.check_val_every_n_epoch", "2"], "every_n_epoch 2 is more than --trainer.max_epochs 1"),
        (["--trainer.limit_val_batches", "0"], "--trainer.limit_val_batches is 0"),
        ([], None),
    ],
)
def test_a_fit_that_never_validates_is_warned_at_its_start(tmp_path, monkeypatch, given, said):
    args = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1", *given]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _fit(tmp_path, monkeypatch, *args)
    found = [str(w.message) for w in caught if "runs no validation" in str(w.message)]
    if said is None:
        assert found == []
        return
    assert len(found) == 1 and said in found[0]
    assert "no best checkpoint on val/loss is kept" in found[0] and "--trainer.max_epochs" in found[0]


# --------------------------------------------------------------------------- 6: when other schedules step


def test_another_schedule_steps_per_epoch_when_asked(tmp_path, monkeypatch):
    """CosineAnnealingLR with T_max 3 (epochs) cycled every 3 steps: always stepped per batch."""
    schedule = ["--model.lr_scheduler", "torch.optim.lr_scheduler.CosineAnnealingLR",
                "--model.lr_scheduler.init_args.T_max", "3", "--trainer.max_epochs", "2",
                "--model.optimizer", "torch.optim.SGD", "--model.optimizer.init_args.lr", "0.1"]  # fmt: skip
    cli = _fit(tmp_path, monkeypatch, *schedule, "--model.lr_scheduler_interval", "epoch")
    assert cli.trainer.lr_scheduler_configs[0].interval == "epoch"
    assert _lr(cli.trainer) == pytest.approx(0.1 * 0.5 * (1 + math.cos(2 * math.pi / 3)))  # 2 of 3 epochs
    per_step = _fit(tmp_path, monkeypatch, *schedule)  # the default: per step, as before
    assert per_step.trainer.lr_scheduler_configs[0].interval == "step"


def test_reduce_on_plateau_steps_after_each_validation_on_the_checkpoint_metric(tmp_path, monkeypatch):
    """threshold 10 (abs): only the first validation counts as better, so with patience 0 each later one
    halves the LR. Validated at epochs 2 and 4 of 4: one halving (stepped each epoch it failed at the first,
    having no val/loss yet; stepped per batch, Lightning refused it: "must include a monitor")."""
    cli = _fit(
        tmp_path, monkeypatch,
        "--model.lr_scheduler", "torch.optim.lr_scheduler.ReduceLROnPlateau",
        "--model.lr_scheduler.init_args.patience", "0", "--model.lr_scheduler.init_args.factor", "0.5",
        "--model.lr_scheduler.init_args.threshold", "10",
        "--model.lr_scheduler.init_args.threshold_mode", "abs",
        "--model.optimizer", "torch.optim.SGD", "--model.optimizer.init_args.lr", "0.1",
        "--trainer.max_epochs", "4", "--trainer.check_val_every_n_epoch", "2",
        "--trainer.limit_val_batches", "1",
    )  # fmt: skip
    config = cli.trainer.lr_scheduler_configs[0]
    assert (config.interval, config.frequency, config.monitor) == ("epoch", 2, "val/loss")
    assert _lr(cli.trainer) == pytest.approx(0.05)


def test_bad_intervals_are_named():
    with pytest.raises(ValueError, match="lr_scheduler_interval must be 'step' or 'epoch', got 'batch'"):
        TinySegTask(lr_scheduler_interval="batch")
    task = TinySegTask(lr_scheduler=warmup_cosine(), lr_scheduler_interval="epoch")
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)  # fmt: skip
    with pytest.raises(ValueError, match="WarmupCosine without total_steps runs over the planned"):
        trainer.fit(task, SquaresDataModule(n_train=4, batch_size=4))


def test_reduce_on_plateau_against_the_checkpoints_direction_is_refused(tmp_path, monkeypatch):
    """ReduceLROnPlateau's default mode "min" on a metric the checkpoint ranks "max" would cut the LR each
    time the metric improved."""
    plateau = ["--model.lr_scheduler", "torch.optim.lr_scheduler.ReduceLROnPlateau", "--trainer.max_epochs", "1",
               "--checkpoint.mode", "max"]  # fmt: skip
    with pytest.raises(ValueError, match=r"has mode 'min', but the checkpoint ranks val/loss by 'max': give "
                       r"--model.lr_scheduler.init_args.mode max"):  # fmt: skip
        _fit(tmp_path, monkeypatch, *plateau)
    cli = _fit(tmp_path, monkeypatch, *plateau, "--model.lr_scheduler.init_args.mode", "max")
    assert cli.trainer.lr_scheduler_configs[0].scheduler.mode == "max"
