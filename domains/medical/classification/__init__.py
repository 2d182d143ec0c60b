"""Lesion-present classification: the shared classification task on multi-reader CT patches labelled by the
readers' majority (``data``). Names load on first use (PEP 562), so ``--help`` imports no torch."""

from shared.cli_help import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, data="MedicalClassificationData write_lesion_crops")
