"""Road-object classification (Car, Van, Truck, Pedestrian, Cyclist crops): the shared classification task on
KITTI object crops (``data``). Names load on first use (PEP 562), so ``--help`` imports no torch."""

from shared.cli_help import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, data="DrivingClassificationData write_kitti_crops")
