"""``python -m domains.driving.classification fit|validate|test|predict -c domains/driving/classification/configs/quick.yaml``."""

from __future__ import annotations

from shared.cli_help import domain_main

DESCRIPTION = (
    "Road-object classification (Car, Van, Truck, Pedestrian, Cyclist) on any registered backbone; accuracy, "
    "macro F1, per-class recall, confusion matrix and calibration error; predict writes class probabilities and "
    "a Grad-CAM per image. Trains on object crops cut once from the synthetic KITTI set by default; real data: "
    "--data.data_format kitti|imagefolder|csv --data.data_path PATH. "
    "Example: python -m domains.driving.classification fit -c domains/driving/classification/configs/quick.yaml, "
    "then test -c ... --ckpt_path best."
)

main = domain_main(
    __package__,
    DESCRIPTION,
    "shared.classification.task:ClassificationTask",
    ".data:DrivingClassificationData",
    "val/f1_macro",
)

if __name__ == "__main__":
    main()
