"""``python -m domains.driving.anomaly fit|validate|test|predict -c domains/driving/configs/anomaly.yaml``."""

from __future__ import annotations

from domains.driving.anomaly.task import AnomalySegmentationTask
from domains.driving.data import SegmentationDataModule
from shared.cli import run_cli


def main(args=None):
    """Run the suite's LightningCLI on the road-anomaly task (``args``: a list, for tests)."""
    return run_cli(
        AnomalySegmentationTask,
        SegmentationDataModule,
        domain="driving_anomaly",
        monitor="val/miou",
        monitor_mode="max",
        args=args,
    )


if __name__ == "__main__":
    main()
