"""What every benchmark's training run shares: a quiet, single-device Lightning Trainer."""

from __future__ import annotations

import pytorch_lightning as pl

#: the benchmarks time training: nothing written or printed on the way, no validation (the test split is scored
#: once at the end)
MEASURING_TRAINER = {
    "devices": 1,
    "logger": False,
    "enable_checkpointing": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "limit_val_batches": 0,
    "num_sanity_val_steps": 0,
}


def measuring_trainer(**kwargs) -> pl.Trainer:
    """A ``pl.Trainer`` with :data:`MEASURING_TRAINER`; ``kwargs`` add to or override them."""
    return pl.Trainer(**{**MEASURING_TRAINER, **kwargs})
