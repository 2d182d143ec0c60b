"""Road-scene 2D detection: FCOS on the shared backbones (``model``), its Lightning task and outputs."""

from domains.driving.detection.model import BackboneWithFPN, RoadDetector, box_in_ignore_fraction

__all__ = [
    "BackboneWithFPN",
    "DetectionTask",
    "RoadDetector",
    "box_in_ignore_fraction",
    "load_detection_task",
]


def __getattr__(name: str):
    # the Lightning task imports metrics and torchmetrics: load it only when asked for
    if name in ("DetectionTask", "load_detection_task"):
        from domains.driving.detection import task

        return getattr(task, name)
    raise AttributeError(name)
