"""Road-scene 2D detection: FCOS on the shared backbones (``model``), its Lightning task and outputs.

Names load on first use (PEP 562), so ``python -m domains.driving.detection --help`` imports no torch.
"""

from shared.cli_help import lazy_exports

_WHERE = {
    "BackboneWithFPN": "model",
    "RoadDetector": "model",
    "box_in_ignore_fraction": "model",
    "DetectionTask": "task",
    "load_detection_task": "task",
}
__all__ = list(_WHERE)

__getattr__ = lazy_exports(__name__, _WHERE)
