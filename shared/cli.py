"""The one LightningCLI every domain uses: ``python -m domains.<domain> fit|validate|test|predict -c cfg.yaml``."""

from __future__ import annotations

from pathlib import Path

from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
from pytorch_lightning.cli import LightningCLI

from shared.task import check_checkpoint_file


def default_trainer_kwargs(domain: str) -> dict:
    """Trainer defaults: CSV + TensorBoard logs under ``lightning_logs/<domain>``, LR monitor, gradient clipping."""
    return {
        "max_epochs": 10,
        # Keeps config.yaml and other run files out of the working directory even when loggers are off.
        "default_root_dir": f"lightning_logs/{domain}",
        "log_every_n_steps": 10,
        "gradient_clip_val": 1.0,
        "logger": [
            {
                "class_path": "pytorch_lightning.loggers.CSVLogger",
                "init_args": {"save_dir": f"lightning_logs/{domain}", "name": "csv"},
            },
            {
                "class_path": "pytorch_lightning.loggers.TensorBoardLogger",
                "init_args": {"save_dir": f"lightning_logs/{domain}", "name": "tensorboard"},
            },
        ],
        "callbacks": [LearningRateMonitor(logging_interval="step")],
    }


class SuiteCLI(LightningCLI):
    """LightningCLI with the suite's defaults: seeding, overwrite-safe config saving, checkpointing, logging.

    The checkpoint callback is a CLI group (``--checkpoint.monitor``, ``--checkpoint.dirpath``, ...) whose
    defaults come from the domain: it keeps the best model on the domain's validation metric plus ``last.ckpt``
    in ``lightning_logs/<domain>/checkpoints`` so ``fit --ckpt_path last`` resumes an interrupted run.
    """

    def __init__(
        self,
        model_class=None,
        datamodule_class=None,
        *,
        domain: str,
        monitor: str = "val/loss",
        monitor_mode: str = "min",
        args=None,
        run: bool = True,
        **kwargs,
    ):
        self._domain = domain
        self._monitor = monitor
        self._monitor_mode = monitor_mode
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("seed_everything_default", 0)
        kwargs.setdefault("trainer_defaults", default_trainer_kwargs(domain))
        super().__init__(model_class, datamodule_class, args=args, run=run, **kwargs)

    def parse_arguments(self, parser, args) -> None:
        """Parse, then refuse a ``--ckpt_path`` of another task before LightningCLI re-parses the checkpoint's
        hyperparameters as this task's arguments (that fails with "does not accept option ...", which does not
        say what the file holds): :class:`shared.task.CheckpointMismatchError` names the task and model in it."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path and self.model_class is not None and Path(ckpt_path).is_file():  # not "last" / "best"
            check_checkpoint_file(ckpt_path, self.model_class)

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": self._monitor,
                "checkpoint.mode": self._monitor_mode,
                "checkpoint.save_last": True,
                "checkpoint.dirpath": f"lightning_logs/{self._domain}/checkpoints",
                "checkpoint.filename": "best-{epoch:02d}-{step}",
                "checkpoint.auto_insert_metric_name": False,
            }
        )


def run_cli(
    model_class, datamodule_class, domain: str, monitor: str, monitor_mode: str = "min", args=None
) -> SuiteCLI:
    """Entry point used by each domain's ``__main__`` (and by tests, with ``args``)."""
    return SuiteCLI(
        model_class, datamodule_class, domain=domain, monitor=monitor, monitor_mode=monitor_mode, args=args
    )


__all__ = ["SuiteCLI", "default_trainer_kwargs", "run_cli"]
