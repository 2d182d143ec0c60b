"""The medical task's validation / test loop logs the set metrics of what its network samples, against every
reader: a stub network returns known samples for the hand-computed toy batch of ``test_metrics``."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from domains.medical.models import UNetSegmenter
from domains.medical.task import MedicalSegmentationTask
from shared.cli import quiet_trainer
from tests.medical.test_metrics import EXPECTED, _toy_batch
from tests.medical.test_models import TINY

pytestmark = pytest.mark.usefixtures("one_thread")

# metric key -> logged name (``MedicalSegmentationTask._log_metrics``)
LOGGED = {
    "ged": "ged",
    "hungarian_iou": "hungarian_iou",
    "diversity": "diversity",
    "dice_readers": "dice",
    "dice_majority": "dice_majority",
    "ece": "ece",
    "ece_majority": "ece_majority",
    "num_samples": "num_samples",
    "num_images": "num_images",
    "num_empty_images": "num_empty_images",
    "ged_lesion": "ged_lesion",
    "hungarian_iou_lesion": "hungarian_iou_lesion",
    "dice_readers_lesion": "dice_lesion",
}


class _Oracle(torch.nn.Module):
    """Samples the given binary masks (B, N, H, W): logits of +-100 give sigmoid probabilities 1 and ~0."""

    def __init__(self, samples: torch.Tensor):
        super().__init__()
        self.register_buffer("logits", samples * 200.0 - 100.0)
        self.calls: list[int] = []

    def loss_and_sample_logits(self, images, masks, num_samples):
        """The task's evaluation entry point (the three networks compute both in one pass)."""
        self.calls.append(num_samples)
        assert images.shape[0] == self.logits.shape[0] and num_samples == self.logits.shape[1]
        return images.new_tensor(0.25), {}, self.logits


@pytest.mark.parametrize("stage", ["val", "test"])
def test_task_logs_hand_computed_metrics_of_its_samples_against_all_readers(stage):
    """Image 0: samples A, A; readers A, B. Image 1: all empty. By hand (``test_metrics.EXPECTED``):
    GED (1/3 + 0) / 2 = 1/6, Hungarian IoU 5/6, diversity 0, Dice vs each reader (0.75 + 1) / 2 = 0.875,
    Dice vs the majority (0.8 + 1) / 2 = 0.9, ECE (0.25 + 0) / 2 = 0.125 against the readers' mean and against
    the majority, 2 samples per image; 2 images, 1 with no reader's lesion, so GED 1/3, Hungarian IoU 2/3 and
    Dice 0.75 over the images with a lesion.
    Scoring against the first reader only would give GED 0 and Dice 1; swapped names swap 0.875 / 0.9."""
    samples, _, readers = _toy_batch()
    task = MedicalSegmentationTask(network=UNetSegmenter(**TINY["unet"]), num_samples=2, predict_dir=None)
    task.model = _Oracle(samples)
    items = [
        {"image": torch.zeros(1, 2, 2), "mask": readers[i, :1], "masks": readers[i]} for i in range(2)
    ]
    loader = DataLoader(items, batch_size=2)
    trainer = quiet_trainer(accelerator="cpu", devices=1, limit_val_batches=1.0, limit_test_batches=1.0)
    run = trainer.validate if stage == "val" else trainer.test
    (logged,) = run(task, dataloaders=loader, verbose=False)
    assert task.model.calls == [2]  # one batch, num_samples samples per image
    for key, name in LOGGED.items():
        assert logged[f"{stage}/{name}"] == pytest.approx(EXPECTED[key], abs=1e-6), name
    assert logged[f"{stage}/loss"] == pytest.approx(0.25)
