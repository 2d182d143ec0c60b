"""A small base LightningModule: optimiser and schedule settings, and loss guards shared by every domain."""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import pytorch_lightning as pl
import torch


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite; the message names the step and the term."""


class CheckpointMismatchError(ValueError):
    """A checkpoint holds another task or model than the one asked to load it."""


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


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

    def describe_model(self) -> str:
        """A short name of the network inside (stored in checkpoints so a mismatch can name what a file holds)."""
        return str(getattr(self.hparams, "model", None) or type(getattr(self, "model", self)).__name__)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["suite_task"] = {"task": _qualname(type(self)), "model": self.describe_model()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        _check_task(checkpoint, type(self), source="checkpoint")
        held = (checkpoint.get("suite_task") or {}).get("model")
        if held is not None and held != self.describe_model():
            raise CheckpointMismatchError(
                f"the checkpoint holds model {held!r} but this {type(self).__name__} was built as "
                f"{self.describe_model()!r}"
            )

    @classmethod
    def load_checked(cls, path: str | Path, map_location: str = "cpu", **kwargs) -> BaseTask:
        """``load_from_checkpoint`` with ``weights_only=True`` and a clear error when the file holds another task.

        The file is read once as plain tensors and containers (no code runs), its recorded task is compared
        with ``cls``, and only then is the module built.
        """
        check_checkpoint_file(path, cls)
        return cls.load_from_checkpoint(Path(path), map_location=map_location, weights_only=True, **kwargs)

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
        # The cosine's length is read at every step, so a time-budgeted run can re-fit it while training
        # (``shared.budget.FitScheduleToBudget``); otherwise it is the trainer's planned number of steps.
        self.schedule_steps = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = min(self.warmup_steps, self.schedule_steps - 1)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            progress = (step - warmup) / max(1, self.schedule_steps - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def gather_lists(items: list) -> list:
    """Every DDP rank's ``items`` concatenated in rank order; ``items`` itself outside distributed runs.

    For epoch-end metrics that need every image at once and are not torchmetrics states (which sync
    themselves), e.g. KITTI AP: each rank only sees its shard of the evaluation set.
    """
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return items
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, items)
    return [item for part in parts for item in part]


def check_checkpoint_file(path: str | Path, cls: type) -> dict:
    """Read a checkpoint as plain tensors and containers (``weights_only``: no code runs, memory-mapped) and
    check that it holds a ``cls`` task; returns it. Used by ``load_checked`` and by the CLI for ``--ckpt_path``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:
        raise CheckpointMismatchError(f"{path}: not a weights-only Lightning checkpoint ({err})") from err
    _check_task(checkpoint, cls, source=str(path))
    return checkpoint


def _check_task(checkpoint: dict, cls: type, source: str) -> None:
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointMismatchError(f"{source}: not a Lightning checkpoint (no state_dict)")
    info = checkpoint.get("suite_task")
    if info is None:
        # Written by another tool (or a task whose on_save_checkpoint skips ours): hyperparameters this task
        # does not take still show it holds something else; otherwise the state-dict load reports by key.
        params = inspect.signature(cls.__init__).parameters
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            unknown = sorted(set(checkpoint.get("hyper_parameters") or {}) - set(params) - {"_instantiator"})
            if unknown:
                raise CheckpointMismatchError(
                    f"{source} holds hyperparameters {unknown} that {_qualname(cls)} does not take: "
                    "a checkpoint of another task or model"
                )
        return
    if info.get("task") != _qualname(cls):
        raise CheckpointMismatchError(
            f"{source} holds a {info.get('task')} checkpoint (model {info.get('model')!r}), "
            f"not a {_qualname(cls)} one: pass a checkpoint of this domain and task"
        )
