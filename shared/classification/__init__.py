"""Image classification shared by the domains: the plain network (``model``), its Lightning task, data and metrics.

Names load on first use (PEP 562), so a domain's ``python -m ... --help`` imports no torch.
"""

from shared.cli_help import lazy_exports

_WHERE = {
    "ImageClassifier": "model",
    "ClassificationTask": "task",
    "ClassificationDataModule": "data",
    "ClassificationDataError": "data",
    "ClassificationMetrics": "metrics",
}
__all__ = list(_WHERE)

__getattr__ = lazy_exports(__name__, _WHERE)
