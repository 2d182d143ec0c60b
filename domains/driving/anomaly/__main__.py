"""``python -m domains.driving.anomaly fit|validate|test|predict -c domains/driving/anomaly/configs/full.yaml``."""

from __future__ import annotations

from shared.cli_help import run_domain

PROG = "python -m domains.driving.anomaly"
DESCRIPTION = (
    "Road-anomaly segmentation: a road-scene segmenter (U-Net decoder on any registered encoder) whose "
    "per-pixel scores flag objects of no known class (lost cargo, debris, animals); outlier exposure with "
    "pasted objects, SegmentMeIfYouCan metrics (pixel AP, FPR95, component F1). Trains on the synthetic "
    "KITTI-layout scenes by default (generated on first use); real data: --data.data_path (KITTI layout with "
    "semantic maps), --data.anomaly_path (SegmentMeIfYouCan layout). "
    "Example: python -m domains.driving.anomaly fit -c domains/driving/anomaly/configs/quick.yaml, then "
    "test -c ... --ckpt_path last. Every option: python -m domains.driving.anomaly fit --help."
)


def main(args=None):
    """The suite's LightningCLI for this task (``args``: a list, for tests); ``--help`` alone imports nothing heavy."""
    return run_domain(
        args,
        prog=PROG,
        description=DESCRIPTION,
        task="domains.driving.anomaly.task:AnomalySegmentationTask",
        data="domains.driving.anomaly.data:SegmentationDataModule",
        domain="driving_anomaly",
        monitor="val/miou",
        monitor_mode="max",
    )


if __name__ == "__main__":
    main()
