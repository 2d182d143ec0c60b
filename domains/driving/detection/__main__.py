"""``python -m domains.driving.detection fit|validate|test|predict -c domains/driving/configs/detection.yaml``."""

from __future__ import annotations

from domains.driving.data import DetectionDataModule
from domains.driving.detection.task import DetectionTask
from shared.cli import run_cli


def main(args=None):
    """The suite's LightningCLI for the detector; the best checkpoint is kept on ``val/map50``."""
    return run_cli(
        DetectionTask,
        DetectionDataModule,
        domain="driving_detection",
        monitor="val/map50",
        monitor_mode="max",
        args=args,
    )


if __name__ == "__main__":
    main()
