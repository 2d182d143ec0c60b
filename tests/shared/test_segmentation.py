"""The shared segmentation module's helpers (class frequencies against hand-computed values, edge padding), and
``make clean``."""

from __future__ import annotations

import math

import pytest
import torch

from shared.segmentation import class_pixel_frequencies, enet_class_weights, pad_to_multiple


def test_class_pixel_frequencies_skip_void_and_out_of_range_labels():
    masks = [torch.tensor([[0, 0, 1], [255, 1, 1]]), torch.tensor([[254, 1]])]  # 254: a pasted-outlier label
    freq = class_pixel_frequencies(masks, num_classes=3)
    # class 0: 2 pixels, class 1: 4, class 2: 0 -> 6 labelled pixels
    assert freq.tolist() == pytest.approx([2 / 6, 4 / 6, 0.0])
    # label 3 == num_classes is the first value out of range: left out like 255 (0 and 1: one pixel each)
    freq = class_pixel_frequencies([torch.tensor([[0, 1], [3, 255]])], num_classes=3)
    assert freq.tolist() == pytest.approx([0.5, 0.5, 0.0])
    with pytest.raises(ValueError, match="no labelled pixels"):
        class_pixel_frequencies([torch.full((2, 2), 255)], num_classes=3)


def test_enet_weights_hand_values_and_bound():
    w = enet_class_weights(torch.tensor([0.4, 0.6, 0.0]))
    assert w.tolist() == pytest.approx([1 / math.log(1.42), 1 / math.log(1.62), 1 / math.log(1.02)], rel=1e-6)
    assert w[2].item() == pytest.approx(50.498, abs=1e-3)  # an unseen class gets the 1 / ln(1.02) bound
    with pytest.raises(ValueError, match="c must be > 1"):
        enet_class_weights(torch.tensor([0.5, 0.5]), c=1.0)


def test_pad_to_multiple_replicates_the_bottom_and_right_edges():
    """A zero border would be an edge the network never saw in training; the image stays at the top left."""
    x = torch.arange(2 * 3 * 5, dtype=torch.float32).reshape(1, 2, 3, 5)
    padded = pad_to_multiple(x, 4)
    assert padded.shape == (1, 2, 4, 8)
    assert torch.equal(padded[..., :3, :5], x)
    assert torch.equal(padded[..., 3:, :5], x[..., -1:, :])  # the last row again
    assert torch.equal(padded[..., :3, 5:], x[..., -1:].expand(-1, -1, -1, 3))  # the last column again
    assert pad_to_multiple(padded, 4) is padded  # already a multiple: untouched


def test_make_clean_keeps_the_trained_checkpoints():
    """``make clean`` removed lightning_logs/: every trained checkpoint, the demo pages' own models included."""
    from pathlib import Path

    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    recipe = makefile.split("\nclean:", 1)[1].split("\n\n", 1)[0]
    assert "rm -rf" in recipe and "lightning_logs" not in recipe and "data" not in recipe.split()
