"""``python -m domains.medical fit|validate|test|predict -c domains/medical/configs/<model>.yaml``."""

from shared.cli_help import domain_main

DESCRIPTION = (
    "Lesion segmentation that says how sure it is: a U-Net baseline, the Probabilistic U-Net and the "
    "Hierarchical Probabilistic U-Net (the paper's GECO objective, or the beta-2 ELBO hpu_net.yaml ships), trained on four-reader data (LIDC style) and scored with GED, "
    "Hungarian IoU, Dice and calibration. Trains on a synthetic four-reader set by default (generated on first "
    "use); real data: --data.data_format lidc_png|lidc_pickle|decathlon --data.data_path PATH. "
    "Example: python -m domains.medical fit -c domains/medical/configs/prob_unet.yaml, then "
    "test -c ... --ckpt_path best."
)

main = domain_main(
    __package__, DESCRIPTION, ".task:MedicalSegmentationTask", ".data:MedicalDataModule", "val/ged", "min"
)

if __name__ == "__main__":
    main()
