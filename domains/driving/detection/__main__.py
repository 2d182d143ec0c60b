"""``python -m domains.driving.detection fit|validate|test|predict -c domains/driving/detection/configs/full.yaml``."""

from __future__ import annotations

import sys

from shared.cli_help import answer_top_level_help

PROG = "python -m domains.driving.detection"
DESCRIPTION = (
    "Road-object detection: FCOS (torchvision) on any registered backbone through an FPN; COCO mAP and KITTI "
    "AP (Easy / Moderate / Hard). Trains on the synthetic KITTI-layout scenes by default (generated on first "
    "use); real data: --data.data_format kitti|coco|yolo --data.data_path PATH. "
    "Example: python -m domains.driving.detection fit -c domains/driving/detection/configs/quick.yaml, then "
    "test -c ... --ckpt_path best. Every option: python -m domains.driving.detection fit --help."
)


def main(args=None):
    """The suite's LightningCLI for the detector; the best checkpoint is kept on ``val/map50``."""
    argv = sys.argv[1:] if args is None else args
    if answer_top_level_help(argv, PROG, DESCRIPTION):  # no torch / Lightning import for this
        raise SystemExit(0)
    from domains.driving.detection.data import DetectionDataModule
    from domains.driving.detection.task import DetectionTask
    from shared.cli import run_cli

    return run_cli(
        DetectionTask,
        DetectionDataModule,
        domain="driving_detection",
        monitor="val/map50",
        monitor_mode="max",
        args=args,
        description=DESCRIPTION,
        prog=PROG,
        links=(("data.class_names", "model.class_names"),),  # the labels index this list: one source
    )


if __name__ == "__main__":
    main()
