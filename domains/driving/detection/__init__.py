"""Road-scene 2D detection: FCOS on the shared backbones (``model``), its Lightning task and outputs.

Names load on first use (PEP 562), so ``python -m domains.driving.detection --help`` imports no torch.
"""

from shared.cli_help import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    model="BackboneWithFPN RoadDetector box_in_ignore_fraction",
    task="DetectionTask load_detection_task",
)
