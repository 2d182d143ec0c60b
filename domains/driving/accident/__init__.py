"""Accident anticipation from dashcam clips: per-frame risk of contact within a few seconds, and which object.

Names load on first use (PEP 562), so ``python -m domains.driving.accident --help`` imports no torch.
"""

from shared.cli_help import lazy_exports

__getattr__, __all__ = lazy_exports(
    __name__,
    model="AccidentAnticipator ttc_from_horizons",
    task="AccidentTask load_accident_task",
)
