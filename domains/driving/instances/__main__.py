"""``python -m domains.driving.instances fit|validate|test|predict -c domains/driving/instances/configs/full.yaml``."""

from __future__ import annotations

from shared.cli_help import domain_main

DESCRIPTION = (
    "Road-user instance segmentation: Mask R-CNN (torchvision) on any registered backbone through the "
    "detector's FPN; COCO mask AP and box AP. Trains on the synthetic KITTI-layout scenes and their instance "
    "maps by default; real data: --data.data_format kitti|coco|png --data.data_path PATH. A detector's "
    "backbone transfers with --model.pretrained_backbone CKPT --model.pretrained_prefix "
    "model.detector.backbone.body. (the final dot included). Example: python -m domains.driving.instances fit -c "
    "domains/driving/instances/configs/quick.yaml."
)

main = domain_main(
    __package__, DESCRIPTION, ".task:InstanceTask", ".data:InstanceDataModule", "val/mask_map50"
)

if __name__ == "__main__":
    main()
