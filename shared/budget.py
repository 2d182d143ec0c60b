"""Fit a training run's length to a wall-time budget while it trains (for fixed-budget benchmarks).

A probe of a few steps before training guesses the seconds per step, but on a shared CPU the speed drifts by
30 % over minutes, so a schedule planned from the probe ends minutes early or late. This callback measures
the real step time as training goes and moves both the trainer's ``max_steps`` and the task's cosine length
(``BaseTask.schedule_steps``) so that the schedule ends when the budget does. Written by hand: Lightning's
``max_time`` only stops a run, it does not shape its schedule (the CLI adds this callback to a ``fit`` given
``--trainer.max_time``, see ``seconds=None``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Timer
from pytorch_lightning.utilities import rank_zero_info


class FitScheduleToBudget(pl.Callback):
    """Every ``every`` steps, set the run's end to ``step + remaining time / recent seconds per step``.

    ``seconds``: the training budget, counted from the first training batch. The estimate uses the last
    ``window`` steps. Once the budget is spent the run stops at the step it has reached.

    ``seconds`` None: the budget is what the trainer's ``max_time`` leaves at the first training batch
    (Lightning's ``Timer``, which counts from the start of training, a resumed run's earlier time included, so
    the sanity check is not counted), and the run is only ever shortened: the schedule ends at the earlier of
    the time and the planned ``max_steps`` / ``max_epochs`` (``max_time`` alone stopped a run mid-schedule,
    its LR still warming up). It then acts only on a ``WarmupCosine`` that follows the trainer's plan (a fixed
    ``total_steps`` or another schedule is left as configured).

    Either way a ``max_time`` bounds the budget: ``seconds`` longer than what it leaves are cut to that, said
    in one info line (a 60 s budget under a 4 s ``max_time`` planned 1547 steps and stopped at step 115, its
    LR at 99 % of the peak); and where its time will run out before the next check (slow steps: ``max_time``
    leaving fewer than ``every`` of them), the check comes at once (such a run stopped at step 7 of its
    40-step cosine, never fitted).

    Where the budget ends the run it says so at the end, at which step of those first planned, and the
    checkpoint keeps that end (:meth:`on_save_checkpoint`): Lightning says only "`max_steps=41` reached", a
    limit the user never set.

    Under DDP every decision is rank 0's, broadcast (:func:`_rank_zeros`): each process reads its own clock,
    and ranks that decided apart trained apart (schedule 332 steps on one, 333 on the other: other LRs, other
    weights) or stopped apart (one waited in the next gradient all-reduce for ever).
    """

    def __init__(
        self,
        seconds: float | None,
        every: int = 10,
        window: int = 30,
        clock: Callable[[], float] = time.perf_counter,
    ):
        if (seconds is not None and seconds <= 0) or every < 1 or window < every:
            raise ValueError(
                f"need seconds > 0 (or None: max_time), every >= 1, window >= every; got {seconds}, {every}, "
                f"{window}"
            )
        self.follows_max_time = seconds is None
        self.budget = None if seconds is None else float(seconds)  # as given; ``seconds``: this run's
        self.seconds = self.budget
        self.every, self.window, self.clock = every, window, clock
        self.planned = math.inf  # the trainer's planned steps (follows_max_time: never lengthened past them)
        self.first_planned = math.inf  # the trainer's planned steps at the start, in either mode
        self.active = True
        self.start: float | None = None
        self.timer_start: tuple[int, float] | None = None  # (step, max_time's Timer) at the first batch
        self.marks: list[tuple[int, float]] = []  # (global step, time) at each check
        self.adjustments: list[tuple[int, int]] = []  # (at step, new end step)

    def on_train_start(self, trainer, pl_module) -> None:
        self.start, self.marks, self.adjustments = None, [], []  # a reused callback starts afresh
        self.first_planned = trainer.estimated_stepping_batches
        if not self.follows_max_time:
            return
        timer = self._timer(trainer)
        left = _rank_zeros(trainer, timer.time_remaining()) if timer is not None else None
        follows = getattr(getattr(pl_module, "lr_schedule", None), "follows_trainer", False)
        self.active = bool(follows) and left is not None and left > 0
        self.planned = self.first_planned
        if self.active:
            finite = math.isfinite(self.planned)
            plan = f" or at the planned {int(self.planned)} steps, whichever comes first" if finite else ""
            rank_zero_info(
                f"--trainer.max_time: the LR schedule follows the time: it ends when the {left:.0f} s left "
                f"for training run out{plan} (shared.budget.FitScheduleToBudget)"
            )

    @staticmethod
    def _timer(trainer) -> Timer | None:
        """Lightning's ``Timer`` callback, which ``max_time`` adds (None without it)."""
        timers = (c for c in trainer.callbacks if isinstance(c, Timer) and c.time_remaining() is not None)
        return next(timers, None)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.start is None:
            self.start = self.clock()
            self.marks = [(trainer.global_step, self.start)]
            timer = self._timer(trainer)
            self.timer_start = None if timer is None else (trainer.global_step, timer.time_elapsed())
            left = None if timer is None else _rank_zeros(trainer, timer.time_remaining())
            if self.follows_max_time and self.active:
                self.seconds = left
            elif not self.follows_max_time:
                self.seconds = self._bounded_by_max_time(left)

    def _bounded_by_max_time(self, left: float | None) -> float:
        """The budget, or what ``max_time`` leaves for training (``left``, None without it) where that is
        less (said): the trainer stops there, and a schedule fitted to the longer budget stopped in its
        middle, at a high LR."""
        if left is None or left >= self.budget:
            return self.budget
        if left < 0.99 * self.budget:  # a max_time of the budget itself is short by the start-up alone
            rank_zero_info(
                f"--trainer.max_time leaves {max(left, 0):.0f} s for training, less than the "
                f"{self.budget:.0f} s time budget: the LR schedule is fitted to those "
                "(shared.budget.FitScheduleToBudget)"
            )
        return max(left, 0.0)

    def _time_runs_out_before_the_next_check(self, trainer, step: int) -> bool:
        """Whether ``max_time`` (Lightning's ``Timer``, real time) runs out before step ``step``'s next check
        at the pace so far: with slow steps the run stopped before the first check, its schedule never
        fitted."""
        timer = self._timer(trainer)
        if timer is None or self.timer_start is None or step <= self.timer_start[0]:
            return False
        first_step, first_elapsed = self.timer_start
        pace = (timer.time_elapsed() - first_elapsed) / (step - first_step)
        return _rank_zeros(trainer, timer.time_remaining() < (self.every - step % self.every) * pace)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if not self.active or step == 0 or step == self.marks[-1][0]:
            return
        # between checks only before the first one (then the schedule is fitted to the time left): the question
        # costs a broadcast under DDP, not to be paid every step
        early = step < self.every and self._time_runs_out_before_the_next_check(trainer, step)
        if step % self.every and not early:
            return
        now = self.clock()
        # keep the marks of the last window (and the one just before it, the window's start)
        while len(self.marks) > 1 and self.marks[1][0] <= step - self.window:
            self.marks.pop(0)
        old_step, old_time = self.marks[0]
        self.marks.append((step, now))
        per_step = (now - old_time) / (step - old_step)
        remaining = self.seconds - (now - self.start)
        end = max(step, step + int(remaining / max(per_step, 1e-9)))  # step: the budget is spent, stop
        end = _rank_zeros(trainer, end)
        if end >= self.planned and not self.adjustments:
            return  # the time holds the plan: the trainer's length (and the schedule following it) stands
        end = min(end, self.planned)
        trainer.fit_loop.epoch_loop.max_steps = end
        if hasattr(pl_module, "schedule_steps"):
            pl_module.schedule_steps = end
        self.adjustments.append((step, end))

    def _end_step(self) -> int | None:
        """The step the budget ended (ends) the run at; None where the trainer's plan stands."""
        end = self.adjustments[-1][1] if self.adjustments else None
        return None if end is None or end == self.planned else int(end)

    def on_train_end(self, trainer, pl_module) -> None:
        end = self._end_step()
        if end is None or trainer.global_step < end:  # the plan, max_time's Timer or a callback stopped it
            return
        who = (
            "--trainer.max_time: the time budget" if self.follows_max_time else f"the {self.budget:g} s budget"
        )
        planned = math.isfinite(self.first_planned)
        of = f" of the {int(self.first_planned)} first planned" if planned else " (no end was planned)"
        rank_zero_info(
            f"{who} ended the run at step {trainer.global_step}{of} (Lightning's "
            f"`max_steps={end}` is this end, no setting; shared.budget.FitScheduleToBudget)"
        )

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        """The checkpoint's ``suite_time_budget``: the step the budget ended the run at (``end_step``, None
        where the plan stood; saved before the end, the end planned then) and the steps planned at the start
        (``planned_steps``, None: no planned end). A record only, not the callback's ``state_dict``: with one,
        every later ``--ckpt_path`` run without this callback (test, predict) warned "Please add the following
        callbacks: ['FitScheduleToBudget']"."""
        planned = int(self.first_planned) if math.isfinite(self.first_planned) else None
        checkpoint["suite_time_budget"] = {"end_step": self._end_step(), "planned_steps": planned}


def _rank_zeros(trainer, value):
    """Rank 0's ``value`` on every process (``trainer.strategy.broadcast``; ``value`` itself in one process,
    and for a stand-in trainer without a strategy)."""
    strategy = getattr(trainer, "strategy", None)
    return value if strategy is None else strategy.broadcast(value, src=0)
