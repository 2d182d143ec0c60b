"""The suite's checkpoint callback: :class:`LastIsLastCheckpoint`, Lightning's ``ModelCheckpoint`` whose
``last.ckpt`` is the run's last state (the CLI's ``--checkpoint.*`` options, :class:`shared.cli.SuiteCLI`)."""

from __future__ import annotations

import warnings
from pathlib import Path

from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_info
from pytorch_lightning.utilities.exceptions import SIGTERMException

from shared.cli_help import RESUME_HINT


class LastIsLastCheckpoint(ModelCheckpoint):
    """Checkpoints: the best by the monitored metric, and ``last.ckpt`` holding the run's last state.

    Lightning's ``ModelCheckpoint``, whose ``last.ckpt`` is the run's last state again.

    Since Lightning 2.6 ``save_last`` writes ``last.ckpt`` only when a top-k checkpoint is saved at the same step,
    so with the suite's best-on-the-validation-metric a run whose metric stopped improving kept an old
    ``last.ckpt``: ``fit --ckpt_path last`` resumed epochs back, and ``test --ckpt_path last`` scored an old model.
    This saves it after every validation (or epoch) that did not, and when training ends between validations
    (``check_val_every_n_epoch`` > 1, ``max_time``, ``max_steps``); with ``fast_dev_run``, documented as not
    checkpointing, it writes none at the end either (a smoke run became the newest ``last*.ckpt``).
    ``save_last="link"`` keeps Lightning's behaviour (a link to the newest top-k file). Its state key is the
    parent's, so checkpoints stay interchangeable with plain ``ModelCheckpoint`` runs; with step saves
    (:meth:`_steps_for_resume`) it is that of the same run without them."""

    _resumed_at: int | None = None  # the step a resumed fit restored (on_train_start)
    _interrupt_saved_at: int | None = None  # the step whose state a SIGTERM or Ctrl-C saved (on_exception)

    def setup(self, trainer, pl_module, stage: str) -> None:
        # Lightning warns "Checkpoint directory ... exists and is not empty" on every fit after the first into a
        # config's folder, which the suite intends (each config keeps one folder): said as what happens instead
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
            super().setup(trainer, pl_module, stage)

    def on_fit_start(self, trainer, pl_module) -> None:
        # here, not in setup: the checkpoint a resume reads is known only now (a resume writes last.ckpt again)
        super().on_fit_start(trainer, pl_module)
        folder = Path(self.dirpath) if self.dirpath and "://" not in str(self.dirpath) else None
        fresh = not trainer.fast_dev_run and trainer.ckpt_path is None
        if fresh and folder is not None and any(folder.glob("*.ckpt")):
            rank_zero_info(
                f"{folder} holds an earlier run's checkpoints: this run's are saved beside them under new names "
                "(last-v1.ckpt, ...); --ckpt_path last takes the newest"
            )

    def _steps_for_resume(self) -> bool:
        """``every_n_train_steps`` with a monitor and ``save_last``: the step saves write ``last.ckpt`` only (to
        resume a killed run), and the best-k are chosen at validations by their own score. Lightning's own
        rule saved top-k files at those steps instead, each scored with the previous validation's value (and
        none at validations): ``best`` was a model one step after the best validation, never validated itself."""
        return self._every_n_train_steps >= 1 and self.monitor is not None and self.save_last is True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self._steps_for_resume():
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        elif trainer.global_step % self._every_n_train_steps == 0 and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        self._resumed_at = trainer.global_step if trainer.ckpt_path else None

    def _replayed_epoch_end(self, trainer) -> bool:
        """A checkpoint saved at an epoch's end makes a resume run that end again, before any step: nothing new
        to save, and no metric to rank by (Lightning warned "could not find the monitored key", as for a typo)."""
        validated = trainer.fit_loop.epoch_loop.val_loop._has_run
        return self._resumed_at == trainer.global_step and not validated

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self._replayed_epoch_end(trainer):
            return
        if self._steps_for_resume():
            if self._fitting(trainer) and self._should_save_on_train_epoch_end(trainer):
                # at the epoch's end, after its validation, whatever a step save wrote at this step
                self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            return
        if self._should_save_on_train_epoch_end(trainer):
            self._refuse_unlogged_monitor(trainer)
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_missed(trainer)

    @staticmethod
    def _fitting(trainer) -> bool:
        return trainer.state.fn == "fit" and not trainer.sanity_checking and not trainer.fast_dev_run

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._steps_for_resume():
            if self._fitting(trainer):  # a step save at this very step (last only) is no reason to skip
                self._refuse_unlogged_monitor(trainer, at_validation=True)
                candidates = self._monitor_candidates(trainer)
                self._save_topk_checkpoint(trainer, candidates)
                if not self._should_save_on_train_epoch_end(trainer):  # else at the epoch's end, just after
                    self._save_last_checkpoint(trainer, candidates)  # again: it now records the best
            return
        if not self._should_save_on_train_epoch_end(trainer):
            self._refuse_unlogged_monitor(trainer)
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_missed(trainer)

    def _refuse_unlogged_monitor(self, trainer, at_validation: bool = False) -> None:
        """A ``monitor`` no validation logs (a typo: ``val/gde``) stopped the run at its first validation with
        Lightning's error, before any checkpoint: the epoch was lost. ``last.ckpt`` is saved first, and the error
        lists what is logged. ``at_validation``: the best-k are chosen at every validation (steps for resume)."""
        every_epoch = self._every_n_epochs >= 1 and (trainer.current_epoch + 1) % self._every_n_epochs == 0
        saves_top_k = at_validation or every_epoch
        validated = trainer.fit_loop.epoch_loop.val_loop._has_run  # without, Lightning only warns
        skipped = self._should_skip_saving_checkpoint(trainer) and not at_validation
        if self.monitor is None or self.save_top_k == 0 or not (saves_top_k and validated) or skipped:
            return  # where Lightning's own check would not stop the run either
        candidates = self._monitor_candidates(trainer)
        if self.monitor in candidates:
            return
        if self.save_last:
            self._save_last_checkpoint(trainer, candidates)
        logged = ", ".join(sorted(k for k in candidates if "/" in k)) or "none"
        saved = (
            "; last.ckpt is saved: `fit --ckpt_path last --checkpoint.monitor NAME` goes on" if self.save_last else ""
        )
        raise ValueError(
            f"--checkpoint.monitor {self.monitor} is not a metric this run logs (logged: {logged}){saved}"
        )

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """A SIGTERM (a scheduler's preemption, ``docker stop``) stops the fit after the batch in hand, and a
        Ctrl-C (KeyboardInterrupt) within the batch in hand: the state at the last finished step is saved as
        ``last.ckpt``, so ``fit --ckpt_path last`` goes on from it (Ctrl-C saved nothing: with
        ``check_val_every_n_epoch`` 10, 8 epochs were lost). Not from inside a validation: a checkpoint there
        would resume into its middle."""
        if (
            isinstance(exception, (SIGTERMException, KeyboardInterrupt))
            and self._fitting(trainer)
            and trainer.state.stage == "train"
            and self.save_last is True  # "link": Lightning's own, a link to the newest top-k file
            and self._interrupt_saved_at != trainer.global_step  # early by NotifyWhenDone, then by Lightning
        ):
            self._save_last_if_missed(trainer)
            self._interrupt_saved_at = trainer.global_step
            sigterm = isinstance(exception, SIGTERMException)  # the CLI's exit line gives its hint
            what, hint = ("SIGTERM", "") if sigterm else ("Ctrl-C", f" ({RESUME_HINT})")
            step, path = trainer.global_step, self.last_model_path
            rank_zero_info(f"{what}: the fit's state at step {step} is saved in {path}{hint}")

    def on_train_end(self, trainer, pl_module) -> None:
        if not trainer.fast_dev_run:
            super().on_train_end(trainer, pl_module)
            self._save_last_if_missed(trainer)

    def _save_last_if_missed(self, trainer) -> None:
        # skipped when the parent saved at this step already (top-k and last), in sanity checks and fast_dev_run
        if self.save_last is True and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def _generate_state_key(self, **kwargs) -> str:
        if self._steps_for_resume():  # the best-k are kept as without step saves: the same state, found on a
            kwargs.update(every_n_train_steps=0, every_n_epochs=1)  # resume that adds or drops them
        return f"ModelCheckpoint{kwargs!r}"


__all__ = ["LastIsLastCheckpoint"]
