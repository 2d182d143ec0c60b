"""The suite's learning-rate schedule, given to tasks through LightningCLI's ``lr_scheduler`` callable.

Written by hand because torch has no warm-up + cosine scheduler whose length can move while training:
``SequentialLR(LinearLR, CosineAnnealingLR)`` fixes both lengths when it is built, but a time-budgeted run
(:class:`shared.budget.FitScheduleToBudget`) learns how many steps it will get only while it trains.
"""

from __future__ import annotations

import functools
import math
import signal
import threading

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info


class WarmupCosine(torch.optim.lr_scheduler.LambdaLR):
    """Linear warm-up for ``warmup_steps`` optimiser steps, then a cosine from the base LR down to 0 at
    ``total_steps`` (and 0 after it).

    ``total_steps`` None: the task sets it to the trainer's planned number of steps when training starts.
    It is read at every step (and saved in the scheduler's state), so it can be moved while training.
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, warmup_steps: int = 0, total_steps: int | None = None
    ):
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        if total_steps is not None and total_steps < 1:
            raise ValueError(
                f"total_steps must be >= 1 or null (the trainer's planned steps), got {total_steps}"
            )
        self.warmup_steps = int(warmup_steps)
        self.total_steps = total_steps
        self.follows_trainer = False  # total_steps set from the trainer's plan (BaseTask.configure_optimizers)
        super().__init__(optimizer, self.factor)

    def load_state_dict(self, state_dict: dict) -> None:
        """A resumed run keeps the length its trainer plans now, where that set it: resumed with a larger
        ``max_steps`` or ``max_epochs``, the saved length had ended the cosine and trained on at LR 0."""
        planned, follows = self.total_steps, self.follows_trainer
        super().load_state_dict(state_dict)
        if follows:
            if planned != self.total_steps:
                rank_zero_info(f"LR schedule: resumed, it now ends at step {planned} (it ended at {self.total_steps})")
            self.total_steps, self.follows_trainer = planned, True
            # the optimiser came back with the LR of the saved schedule (0 where it had ended): the first resumed
            # step runs at this one's, not at that
            self.apply_lr()

    def apply_lr(self) -> None:
        """Set the optimiser's LR to this schedule's at its current step. The scheduler sets it only after
        each step, so a length set since (a new fit's ``total_steps`` from the trainer's plan, a resumed
        one's) would reach only the step after the next: a new fit's first step ran at the full LR, skipping
        the warm-up."""
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * self.factor(self.last_epoch)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def factor(self, step: int) -> float:
        """The LR multiplier at optimiser step ``step``."""
        total = max(1, int(self.total_steps or 1))
        warmup = min(self.warmup_steps, total - 1)
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class CtrlCBetweenSteps(pl.Callback):
    """A Ctrl-C lands between optimiser steps, never inside one.

    Python raises ``KeyboardInterrupt`` wherever the main thread is when SIGINT comes: inside
    ``optimizer.step`` it left part of the weights (and of the optimiser's moments) one step on, and the
    suite's Ctrl-C save (``shared.checkpointing.LastIsLastCheckpoint.on_exception``) wrote that half-step as a
    resumable ``last.ckpt`` labelled with the step before. So from just before the update
    (``on_before_optimizer_step``: forward and backward done, nothing changed yet) to the end of its batch
    (the step counted, the LR schedule stepped) a SIGINT is held, and given to the handler it was meant for
    then: the saved state is one whole step. Written by hand: Lightning stops at a batch's end on SIGTERM
    only, and leaves SIGINT to Python.

    Main thread only (where Python runs signal handlers); a SIGINT that is ignored, or not handled from
    Python, is left as it is. The CLI adds this to every fit (:meth:`shared.cli.SuiteCLI.before_fit`).
    """

    def __init__(self):
        self._previous = None  # the SIGINT handler held back during the step in hand (None: none)
        self._held: tuple | None = None  # (signum, frame) of a SIGINT that came during it

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if self._previous is not None or threading.current_thread() is not threading.main_thread():
            return  # already holding (a second optimiser, manual optimisation), or no signals here
        previous = signal.getsignal(signal.SIGINT)
        if previous in (signal.SIG_IGN, None):
            return
        self._previous, self._held = previous, None
        signal.signal(signal.SIGINT, self._hold)

    def _hold(self, signum, frame) -> None:
        self._held = (signum, frame)

    def _let_go(self) -> tuple:
        """Put the handler held back in place again; ``(that handler, the SIGINT held or None)``."""
        previous, held = self._previous, self._held
        self._previous = self._held = None
        if previous is not None and signal.getsignal(signal.SIGINT) == self._hold:
            signal.signal(signal.SIGINT, previous)
        return previous, held

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        previous, held = self._let_go()
        if held is None:
            return
        if callable(previous):
            previous(*held)  # Python's own raises KeyboardInterrupt here, between steps
        else:  # SIG_DFL: the process ends by the signal, as it would have
            signal.raise_signal(signal.SIGINT)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._let_go()  # the run stops anyway: only the handler goes back


def adamw(lr: float = 1e-3, weight_decay: float = 1e-4):
    """The ``optimizer`` callable a config's ``torch.optim.AdamW`` block gives, for code that builds a task."""
    return functools.partial(torch.optim.AdamW, lr=lr, weight_decay=weight_decay)


def warmup_cosine(warmup_steps: int = 0, total_steps: int | None = None):
    """The ``lr_scheduler`` callable a config's ``shared.optim.WarmupCosine`` block gives."""
    return functools.partial(WarmupCosine, warmup_steps=warmup_steps, total_steps=total_steps)
