"""``python -m domains.medical fit|validate|test|predict -c domains/medical/configs/<model>.yaml``."""

from domains.medical.data import MedicalDataModule
from domains.medical.task import MedicalSegmentationTask
from shared.cli import run_cli


def main(args=None):
    return run_cli(
        MedicalSegmentationTask,
        MedicalDataModule,
        domain="medical",
        monitor="val/ged",
        monitor_mode="min",
        args=args,
    )


if __name__ == "__main__":
    main()
