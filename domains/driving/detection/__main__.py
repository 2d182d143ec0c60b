"""``python -m domains.driving.detection fit|validate|test|predict -c domains/driving/detection/configs/full.yaml``."""

from __future__ import annotations

from shared.cli_help import run_domain

PROG = "python -m domains.driving.detection"
DESCRIPTION = (
    "Road-object detection: FCOS (torchvision) on any registered backbone through an FPN; COCO mAP and KITTI "
    "AP (Easy / Moderate / Hard). Trains on the synthetic KITTI-layout scenes by default (generated on first "
    "use); real data: --data.data_format kitti|coco|yolo --data.data_path PATH. "
    "Example: python -m domains.driving.detection fit -c domains/driving/detection/configs/quick.yaml, then "
    "test -c ... --ckpt_path best. Every option: python -m domains.driving.detection fit --help."
)


def main(args=None):
    """The suite's LightningCLI for this task (``args``: a list, for tests); ``--help`` alone imports nothing heavy."""
    return run_domain(
        args,
        prog=PROG,
        description=DESCRIPTION,
        task="domains.driving.detection.task:DetectionTask",
        data="domains.driving.detection.data:DetectionDataModule",
        domain="driving_detection",
        monitor="val/map50",
        monitor_mode="max",
    )


if __name__ == "__main__":
    main()
