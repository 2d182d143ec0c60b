"""``python -m domains.driving.anomaly fit|validate|test|predict -c domains/driving/anomaly/configs/full.yaml``."""

from __future__ import annotations

import sys

from shared.cli_help import answer_top_level_help

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
    """Run the suite's LightningCLI on the road-anomaly task (``args``: a list, for tests)."""
    argv = sys.argv[1:] if args is None else args
    if answer_top_level_help(argv, PROG, DESCRIPTION):  # no torch / Lightning import for this
        raise SystemExit(0)
    from domains.driving.anomaly.data import SegmentationDataModule
    from domains.driving.anomaly.task import AnomalySegmentationTask
    from shared.cli import run_cli

    return run_cli(
        AnomalySegmentationTask,
        SegmentationDataModule,
        domain="driving_anomaly",
        monitor="val/miou",
        monitor_mode="max",
        args=args,
        description=DESCRIPTION,
        prog=PROG,
    )


if __name__ == "__main__":
    main()
