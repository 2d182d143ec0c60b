"""``python -m domains.medical.classification fit|validate|test|predict -c domains/medical/classification/configs/quick.yaml``."""

from __future__ import annotations

from shared.cli_help import domain_main

DESCRIPTION = (
    "Lesion-present classification of CT patches (present when a majority of readers marked a lesion) on any "
    "registered backbone; accuracy, macro F1, sensitivity / specificity, AUROC, confusion matrix and calibration "
    "error (--model.class_weights for imbalanced classes); predict "
    "writes class probabilities and a Grad-CAM per image. Trains on the synthetic four-reader set by default; "
    "real data: --data.data_format lidc_png|imagefolder|csv --data.data_path PATH. "
    "Example: python -m domains.medical.classification fit -c domains/medical/classification/configs/quick.yaml, "
    "then test -c ... --ckpt_path best."
)

main = domain_main(
    __package__,
    DESCRIPTION,
    "shared.classification.task:ClassificationTask",
    ".data:MedicalClassificationData",
    "val/f1_macro",
)

if __name__ == "__main__":
    main()
