"""The medical models, task and metrics called from Python: predict_step outside a Trainer, empty batches,
the HPU-Net's too-small message, flipped numpy views and numpy reader masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from domains.medical.metrics import (
    SegmentationUncertaintyMetrics,
    generalized_energy_distance,
    hungarian_matched_iou,
    majority_vote,
    pairwise_iou,
    sample_diversity,
)
from domains.medical.models import HierarchicalProbUNet
from domains.medical.task import MedicalSegmentationTask
from tests.medical.test_training_inputs_s41 import NETWORKS


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_predict_step_runs_from_python_without_a_trainer(name):
    """It read the size multiple (and its file bookkeeping) set only by on_predict_start: AttributeError."""
    torch.manual_seed(0)
    task = MedicalSegmentationTask(NETWORKS[name](), num_samples=3, predict_dir=None).eval()
    images = torch.rand(2, 1, 20, 20)  # not a multiple of the networks' strides: padded, then cut back
    with torch.no_grad():
        out = task.predict_step({"image": images, "id": ["a", "b"]}, 0)
    assert out["id"] == ["a", "b"]
    assert out["samples"].shape == (2, 3, 20, 20) and out["samples"].dtype == torch.bool
    assert out["mean"].shape == out["uncertainty"].shape == (2, 20, 20)
    with torch.no_grad():  # an image's outputs are its own: alone, the same
        alone = task.predict_step({"image": images[1:], "id": ["b"]}, 1)
    assert torch.allclose(alone["mean"][0], out["mean"][1], atol=1e-6)
    with pytest.raises(ValueError, match=r"predict_step: expected a batch dict with 'image' .* and 'id'.*\['image'\]"):
        task.predict_step({"image": images}, 0)


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_an_empty_batch_gives_empty_outputs_and_a_clear_loss_error(name):
    """The Prob. U-Net's f_comb and the HPU-Net's sampler divided by the batch size: ZeroDivisionError."""
    net = NETWORKS[name]().eval()
    empty = torch.rand(0, 1, 16, 16)
    with torch.no_grad():
        assert net(empty).shape == (0, 1, 16, 16)
        assert net.sample_logits(empty, 3).shape == (0, 3, 16, 16)
    with pytest.raises(ValueError, match=r"a loss needs at least one image: got an empty batch, masks of shape"):
        net.loss(empty, torch.zeros(0, 1, 16, 16))


def test_the_hpu_net_too_small_message_names_the_image_size_and_the_arguments_for_python_too():
    net = HierarchicalProbUNet(channels=[4, 4, 4, 4, 4], latent_channels=[1, 1, 1, 1], blocks_per_level=1)
    with pytest.raises(ValueError) as err:
        net.sample_logits(torch.zeros(1, 1, 8, 8), 2)
    message = str(err.value)
    assert message.startswith(
        "an image of (8, 8) is too small for 5 levels (needs at least 16 pixels per side): give images of at "
        "least 16x16 pixels (on the command line --data.crop_size 16 or larger), or fewer levels (at most 4 "
        "for 8 pixels), e.g. channels=[4, 4, 4, 4], latent_channels=[1, 1, 1]; on the command line "
    )
    fewer = HierarchicalProbUNet(channels=[4, 4, 4, 4], latent_channels=[1, 1, 1], blocks_per_level=1)
    assert fewer.sample_logits(torch.zeros(1, 1, 8, 8), 2).shape == (1, 2, 8, 8)  # the fix it names works


def _masks(seed: int, *shape: int) -> np.ndarray:
    return (np.random.default_rng(seed).random(shape) > 0.5).astype(np.uint8)


def test_the_metrics_take_flipped_numpy_views():
    """A flipped numpy view (negative strides) met torch's 'At least one stride ... is negative'."""
    samples, readers = _masks(0, 4, 8, 8), _masks(1, 4, 8, 8)
    flipped_s, flipped_r = samples[:, ::-1], readers[:, :, ::-1]
    copy_s, copy_r = flipped_s.copy(), flipped_r.copy()
    np.testing.assert_array_equal(pairwise_iou(flipped_s, flipped_r), pairwise_iou(copy_s, copy_r))
    assert generalized_energy_distance(flipped_s, flipped_r) == generalized_energy_distance(copy_s, copy_r)
    assert hungarian_matched_iou(flipped_s, flipped_r) == hungarian_matched_iou(copy_s, copy_r)
    assert sample_diversity(flipped_s) == sample_diversity(copy_s)

    batch_s, batch_r = _masks(2, 2, 4, 8, 8), _masks(3, 2, 4, 8, 8)
    mean = np.random.default_rng(4).random((2, 1, 8, 8)).astype(np.float32)
    results = []
    for s, p, r in ((batch_s[..., ::-1], mean[..., ::-1], batch_r[:, ::-1]),
                    (batch_s[..., ::-1].copy(), mean[..., ::-1].copy(), batch_r[:, ::-1].copy())):  # fmt: skip
        metrics = SegmentationUncertaintyMetrics()
        metrics.update(s, p, r)
        results.append(metrics.compute())
    assert results[0] == pytest.approx(results[1], nan_ok=True)


def test_majority_vote_takes_numpy_and_gives_numpy():
    readers = _masks(5, 2, 4, 8, 8)
    vote = majority_vote(readers[:, :, ::-1])  # a flipped view too
    assert isinstance(vote, np.ndarray) and vote.dtype == np.float32 and vote.shape == (2, 1, 8, 8)
    np.testing.assert_array_equal(vote, majority_vote(torch.from_numpy(readers[:, :, ::-1].copy())).numpy())
    np.testing.assert_array_equal(vote, (2 * readers[:, :, ::-1].sum(1, keepdims=True) >= 4).astype(np.float32))
    with pytest.raises(ValueError, match=r"reader_masks: expected shape \(B, M, H, W\) with M >= 1"):
        majority_vote(readers[0])
