"""Road-user instance segmentation: Mask R-CNN on the shared backbones (``model``), its Lightning task, data
readers (KITTI layout with instance maps, COCO instance JSON, panoptic PNGs) and outputs.

Names load on first use (PEP 562), so ``python -m domains.driving.instances --help`` imports no torch.
"""

from shared.cli_help import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    model="RoadInstanceSegmenter",
    task="InstanceTask load_instance_task",
    data="InstanceDataModule",
    metrics="InstanceMetrics",
)
