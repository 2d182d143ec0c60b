"""A :class:`BaseTask` whose network predicts a list of named classes (classifier, detector, instance segmenter).

What such tasks share, written once: ``class_names`` and the network's ``num_classes`` both come from
``data.class_names`` (CLI links), a network built with another count or a data module with other names is
refused with the option to fix, and a pretrained backbone is loaded from a local file with its report printed.
"""

from __future__ import annotations

import warnings

from torch import nn

from shared.task import BaseTask


class LabelledTask(BaseTask):
    """Base of the tasks with ``class_names`` (the labels index it) and a network with ``num_classes``."""

    #: set by the CLI from the data module (one source): the labels index class_names
    CLI_LINKS = (
        ("data.class_names", "model.class_names"),
        ("data.class_names", "model.network.init_args.num_classes", len),
    )

    def build_labelled_network(self, network: nn.Module | dict, base: type, class_names) -> nn.Module:
        """Set ``self.class_names`` and build ``network`` (see :meth:`BaseTask.build_network`), checking that it
        has one output class per name."""
        self.class_names = list(class_names)
        model = self.build_network(network, base)
        if model.num_classes != len(self.class_names):
            raise ValueError(
                f"model.network has {model.num_classes} classes but class_names lists {len(self.class_names)} "
                f"({self.class_names}); the CLI sets num_classes from data.class_names, leave it out of configs"
            )
        return model

    # validation and test: each task updates its metrics per batch and logs them once per epoch
    def _evaluation_step(self, batch, stage: str) -> None:
        raise NotImplementedError

    def _log_epoch_metrics(self, stage: str):
        raise NotImplementedError

    def validation_step(self, batch, batch_idx):
        self._evaluation_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_metrics("val")

    def test_step(self, batch, batch_idx):
        self._evaluation_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_metrics("test")

    def warn_undefined_map(self, stage: str, value: float, what: str = "COCO mAP / mAR") -> None:
        """Say why a mAP is torchmetrics' -1 (``value`` < 0): ``stage``'s split holds no ground-truth object of
        the classes, so a run logged -1 and said nothing. Not during Lightning's sanity check (two batches)."""
        if value < 0 and not getattr(self._trainer, "sanity_checking", False):
            warnings.warn(
                f"{stage}: the split holds no ground-truth object of the classes {list(self.class_names)}, so "
                f"{what} are undefined (logged as -1)",
                stacklevel=3,
            )

    def attached_datamodule(self):
        """The trainer's data module, or None (no trainer, or none given)."""
        return getattr(self.trainer, "datamodule", None) if self._trainer is not None else None

    def setup(self, stage: str) -> None:
        dm_classes = getattr(self.attached_datamodule(), "class_names", None)
        if dm_classes is not None and list(dm_classes) != self.class_names:
            raise ValueError(
                f"model.class_names {self.class_names} differ from data.class_names {list(dm_classes)}: "
                "set both to the same list (the labels are indices into it)"
            )


def check_distinct_class_names(class_names) -> None:
    """Refuse an empty ``class_names`` or one naming a class twice."""
    if not class_names or len(set(class_names)) != len(class_names):
        raise ValueError(f"class_names must be a non-empty list of distinct names, got {class_names}")
