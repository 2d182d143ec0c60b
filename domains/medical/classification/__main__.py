"""``python -m domains.medical.classification fit|validate|test|predict -c domains/medical/classification/configs/quick.yaml``."""

from __future__ import annotations

from shared.cli_help import run_domain

PROG = "python -m domains.medical.classification"
DESCRIPTION = (
    "Lesion-present classification of CT patches (present when a majority of readers marked a lesion) on any "
    "registered backbone; accuracy, macro F1, per-class recall, confusion matrix and calibration error; predict "
    "writes class probabilities and a Grad-CAM per image. Trains on the synthetic four-reader set by default; "
    "real data: --data.data_format lidc_png|imagefolder|csv --data.data_path PATH. "
    "Example: python -m domains.medical.classification fit -c domains/medical/classification/configs/quick.yaml, "
    "then test -c ... --ckpt_path best. Every option: python -m domains.medical.classification fit --help."
)


def main(args=None):
    """The suite's LightningCLI for this task (``args``: a list, for tests); ``--help`` alone imports nothing heavy."""
    return run_domain(
        args,
        prog=PROG,
        description=DESCRIPTION,
        task="shared.classification.task:ClassificationTask",
        data="domains.medical.classification.data:MedicalClassificationData",
        domain="medical_classification",
        monitor="val/f1_macro",
        monitor_mode="max",
    )


if __name__ == "__main__":
    main()
