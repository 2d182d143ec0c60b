"""``python -m domains.driving.detection fit|validate|test|predict -c domains/driving/detection/configs/full.yaml``."""

from __future__ import annotations

from shared.cli_help import domain_main

DESCRIPTION = (
    "Road-object detection: FCOS (torchvision) on any registered backbone through an FPN; COCO mAP and KITTI "
    "AP (Easy / Moderate / Hard). Trains on the synthetic KITTI-layout scenes by default (generated on first "
    "use); real data: --data.data_format kitti|coco|yolo --data.data_path PATH. "
    "Example: python -m domains.driving.detection fit -c domains/driving/detection/configs/quick.yaml, then "
    "test -c ... --ckpt_path best."
)

main = domain_main(__package__, DESCRIPTION, ".task:DetectionTask", ".data:DetectionDataModule", "val/map50")

if __name__ == "__main__":
    main()
