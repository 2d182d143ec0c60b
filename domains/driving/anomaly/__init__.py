"""Road anomaly segmentation: closed-set segmenter, per-pixel anomaly scores, outlier exposure, heatmaps.

``python -m domains.driving.anomaly fit|validate|test|predict -c domains/driving/anomaly/configs/full.yaml``.
Names load on first use (PEP 562), so ``--help`` imports no torch.
"""

from shared.cli_help import lazy_exports

_WHERE = {
    "AnomalySegmenter": "model",
    "AnomalySegmentationTask": "task",
    "SCORES": "scores",
    "AnomalyScoreError": "scores",
    "compute_score": "scores",
    "image_anomaly_score": "predict",
    "overlay_heatmap": "predict",
    "road_region": "predict",
    "write_predictions": "predict",
}
__all__ = list(_WHERE)

__getattr__ = lazy_exports(__name__, _WHERE)
