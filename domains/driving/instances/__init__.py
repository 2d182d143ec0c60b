"""Road-user instance segmentation: Mask R-CNN on the shared backbones (``model``), its Lightning task, data
readers (KITTI layout with instance maps, COCO instance JSON, panoptic PNGs) and outputs.

Names load on first use (PEP 562), so ``python -m domains.driving.instances --help`` imports no torch.
"""

from shared.cli_help import lazy_exports

_WHERE = {
    "RoadInstanceSegmenter": "model",
    "InstanceTask": "task",
    "load_instance_task": "task",
    "InstanceDataModule": "data",
    "InstanceMetrics": "metrics",
}
__all__ = list(_WHERE)

__getattr__ = lazy_exports(__name__, _WHERE)
