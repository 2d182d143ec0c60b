"""``python -m domains.medical fit|validate|test|predict -c domains/medical/configs/<model>.yaml``."""

import sys

from shared.cli_help import answer_top_level_help

PROG = "python -m domains.medical"
DESCRIPTION = (
    "Lesion segmentation that says how sure it is: a U-Net baseline, the Probabilistic U-Net and the "
    "Hierarchical Probabilistic U-Net (GECO), trained on four-reader data (LIDC style) and scored with GED, "
    "Hungarian IoU, Dice and calibration. Trains on a synthetic four-reader set by default (generated on first "
    "use); real data: --data.data_format lidc_png|lidc_pickle|decathlon --data.data_path PATH. "
    "Example: python -m domains.medical fit -c domains/medical/configs/prob_unet.yaml, then "
    "test -c ... --ckpt_path best. Every option: python -m domains.medical fit --help."
)


def main(args=None):
    argv = sys.argv[1:] if args is None else args
    if answer_top_level_help(argv, PROG, DESCRIPTION):  # no torch / Lightning import for this
        raise SystemExit(0)
    from domains.medical.data import MedicalDataModule
    from domains.medical.task import MedicalSegmentationTask
    from shared.cli import run_cli

    return run_cli(
        MedicalSegmentationTask,
        MedicalDataModule,
        domain="medical",
        monitor="val/ged",
        monitor_mode="min",
        args=args,
        description=DESCRIPTION,
        prog=PROG,
    )


if __name__ == "__main__":
    main()
