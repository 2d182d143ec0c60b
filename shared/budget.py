"""Fit a training run's length to a wall-time budget while it trains (for fixed-budget benchmarks).

A probe of a few steps before training guesses the seconds per step, but on a shared CPU the speed drifts by
30 % over minutes, so a schedule planned from the probe ends minutes early or late. This callback measures
the real step time as training goes and moves both the trainer's ``max_steps`` and the task's cosine length
(``BaseTask.schedule_steps``) so that the schedule ends when the budget does. Written by hand: Lightning's
``max_time`` only stops a run, it does not shape its schedule.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytorch_lightning as pl


class FitScheduleToBudget(pl.Callback):
    """Every ``every`` steps, set the run's end to ``step + remaining time / recent seconds per step``.

    ``seconds``: the training budget, counted from the first training batch. The estimate uses the last
    ``window`` steps. Once the budget is spent the run stops at the step it has reached.
    """

    def __init__(
        self,
        seconds: float,
        every: int = 10,
        window: int = 30,
        clock: Callable[[], float] = time.perf_counter,
    ):
        if seconds <= 0 or every < 1 or window < every:
            raise ValueError(
                f"need seconds > 0, every >= 1, window >= every; got {seconds}, {every}, {window}"
            )
        self.seconds, self.every, self.window, self.clock = float(seconds), every, window, clock
        self.start: float | None = None
        self.marks: list[tuple[int, float]] = []  # (global step, time) at each check
        self.adjustments: list[tuple[int, int]] = []  # (at step, new end step)

    def on_train_start(self, trainer, pl_module) -> None:
        self.start, self.marks, self.adjustments = None, [], []  # a reused callback starts afresh

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.start is None:
            self.start = self.clock()
            self.marks = [(trainer.global_step, self.start)]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if step == 0 or step % self.every or step == self.marks[-1][0]:
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
        trainer.fit_loop.epoch_loop.max_steps = end
        if hasattr(pl_module, "schedule_steps"):
            pl_module.schedule_steps = end
        self.adjustments.append((step, end))
