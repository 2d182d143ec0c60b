"""``python -m domains.driving.anomaly fit|validate|test|predict -c domains/driving/anomaly/configs/full.yaml``."""

from __future__ import annotations

from shared.cli_help import domain_main

DESCRIPTION = (
    "Road-anomaly segmentation: a road-scene segmenter (U-Net decoder on any registered encoder) whose "
    "per-pixel scores flag objects of no known class (lost cargo, debris, animals); outlier exposure with "
    "pasted objects, SegmentMeIfYouCan metrics (pixel AP, FPR95, component F1). Trains on the synthetic "
    "KITTI-layout scenes by default (generated on first use); real data: --data.data_path (KITTI layout with "
    "semantic maps, or a Cityscapes download), --data.anomaly_path (SegmentMeIfYouCan layout). "
    "Example: python -m domains.driving.anomaly fit -c domains/driving/anomaly/configs/quick.yaml, then "
    "test -c ... --ckpt_path last (the last, not the best: the outlier head trains after the segmenter)."
)

main = domain_main(
    __package__, DESCRIPTION, ".task:AnomalySegmentationTask", ".data:SegmentationDataModule", "val/miou"
)

if __name__ == "__main__":
    main()
