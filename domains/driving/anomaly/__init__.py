"""Road anomaly segmentation: closed-set segmenter, per-pixel anomaly scores, outlier exposure, heatmaps.

``python -m domains.driving.anomaly fit|validate|test|predict -c domains/driving/anomaly/configs/full.yaml``.
Names load on first use (PEP 562), so ``--help`` imports no torch.
"""

from shared.cli_help import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    model="AnomalySegmenter",
    task="AnomalySegmentationTask",
    scores="SCORES AnomalyScoreError compute_score",
    predict="image_anomaly_score overlay_heatmap road_region write_predictions",
)
