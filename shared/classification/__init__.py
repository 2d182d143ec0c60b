"""Image classification shared by the domains: the plain network (``model``), its Lightning task, data and metrics.

Names load on first use (PEP 562), so a domain's ``python -m ... --help`` imports no torch.
"""

from shared.cli_help import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    model="ImageClassifier",
    task="ClassificationTask",
    data="ClassificationDataModule ClassificationDataError",
    metrics="ClassificationMetrics",
)
