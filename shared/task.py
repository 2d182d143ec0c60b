"""A small base LightningModule: optimiser and schedule settings, and loss guards shared by every domain."""

from __future__ import annotations

import math

import pytorch_lightning as pl
import torch


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite; the message names the step and the term."""


class BaseTask(pl.LightningModule):
    """Shared training plumbing. Subclasses build their plain ``nn.Module`` as ``self.model``.

    Args:
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        scheduler: ``"cosine"`` (per step, over the whole run) or ``"none"``.
        warmup_steps: linear warm-up steps before the cosine decay.
        nonfinite_loss: ``"raise"`` stops the run naming the step and loss term; ``"skip"`` skips the batch and
            counts it (logged as ``train/skipped_batches``).
    """

    def __init__(
        self,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        scheduler: str = "cosine",
        warmup_steps: int = 0,
        nonfinite_loss: str = "raise",
    ):
        super().__init__()
        if scheduler not in ("cosine", "none"):
            raise ValueError(f"scheduler must be 'cosine' or 'none', got {scheduler!r}")
        if nonfinite_loss not in ("raise", "skip"):
            raise ValueError(f"nonfinite_loss must be 'raise' or 'skip', got {nonfinite_loss!r}")
        self.lr = lr
        self.weight_decay = weight_decay
        self.scheduler_name = scheduler
        self.warmup_steps = warmup_steps
        self.nonfinite_loss = nonfinite_loss
        self.skipped_batches = 0

    def guard_loss(self, loss: torch.Tensor, terms: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """Return ``loss`` if every term is finite; else raise (naming step and term) or return None to skip."""
        bad = [name for name, value in terms.items() if not torch.isfinite(value.detach()).all()]
        if not bad and torch.isfinite(loss.detach()).all():
            return loss
        bad = bad or ["total"]
        message = f"non-finite loss at global step {self.global_step} (epoch {self.current_epoch}) in term(s): {', '.join(bad)}"
        if self.nonfinite_loss == "raise":
            raise NonFiniteLossError(message + " (set nonfinite_loss: skip to skip such batches)")
        self.skipped_batches += 1
        self.print(f"skipping batch: {message} (skipped so far: {self.skipped_batches})")
        self.log("train/skipped_batches", float(self.skipped_batches))
        return None

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        if self.scheduler_name == "none":
            return optimizer
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = min(self.warmup_steps, total - 1)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
