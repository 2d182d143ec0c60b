"""Road anomaly segmentation: closed-set segmenter, per-pixel anomaly scores, outlier exposure, heatmaps.

``python -m domains.driving.anomaly fit|validate|test|predict -c domains/driving/anomaly/configs/full.yaml``
"""

from domains.driving.anomaly.predict import (
    image_anomaly_score,
    overlay_heatmap,
    road_region,
    write_predictions,
)
from domains.driving.anomaly.scores import SCORES, AnomalyScoreError, compute_score
from domains.driving.anomaly.task import AnomalySegmentationTask

__all__ = [
    "SCORES",
    "AnomalyScoreError",
    "AnomalySegmentationTask",
    "compute_score",
    "image_anomaly_score",
    "overlay_heatmap",
    "road_region",
    "write_predictions",
]
