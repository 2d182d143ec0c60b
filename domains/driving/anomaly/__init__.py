"""Road anomaly segmentation: closed-set segmenter, per-pixel anomaly scores, outlier exposure, heatmaps.

``python -m domains.driving.anomaly fit|validate|test|predict -c domains/driving/anomaly/configs/full.yaml``.
Names load on first use (PEP 562), so ``--help`` imports no torch.
"""

from importlib import import_module

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


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(name)
