"""The anomaly segmenter used from Python: uint8 images are refused (they were normalised as if in [0, 1] and gave
score maps without an error), one score name may be a str (it was iterated letter by letter), and
``calibrate`` takes uint8 or (B, 1, H, W) masks (bare ``index_add_`` / ``IndexError`` tracebacks before)."""

from __future__ import annotations

import pytest
import torch

from domains.driving.anomaly.model import AnomalySegmenter

H, W = 32, 48


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return AnomalySegmenter(encoder="tiny_cnn", num_classes=3).eval()


def _images(n: int = 2) -> torch.Tensor:
    return torch.rand(n, 3, H, W, generator=torch.Generator().manual_seed(1))


def _masks(n: int = 2) -> torch.Tensor:
    return torch.randint(0, 3, (n, H, W), generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64])
def test_integer_images_are_refused_naming_the_dtype_and_the_fix(net, dtype):
    images = (_images() * 255).to(dtype)
    with pytest.raises(ValueError, match=rf"expected floating images in \[0, 1\], got dtype {dtype}.*/ 255"):
        net.scores(images, ["energy"])
    with pytest.raises(ValueError, match="expected floating images"):
        net(images)
    with pytest.raises(ValueError, match="expected floating images"):
        net.calibrate([{"image": images, "mask": _masks()}])


def test_images_of_the_wrong_layout_are_refused_with_their_shape(net):
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 3, H, W\), got \(3, 32, 48\)"):
        net.scores(_images()[0], ["energy"])


def test_float_images_are_scored_with_finite_maps_of_their_size(net):
    images = _images()
    maps = net.scores(images, ["energy", "msp"])
    assert maps["energy"].shape == maps["msp"].shape == (2, H, W)
    assert maps["logits"].shape == (2, 3, H, W)
    assert torch.isfinite(maps["energy"]).all()


def test_one_score_name_as_a_str_is_that_score(net):
    images = _images()
    one = net.scores(images, "energy")
    listed = net.scores(images, ["energy"])
    assert sorted(one) == ["energy", "logits"]
    torch.testing.assert_close(one["energy"], listed["energy"])
    _, maps = net.maps_by_size(images, "msp", sizes=[(H, W), (H, W - 8)])
    assert sorted(maps) == ["msp"]


def _calibrated(masks: torch.Tensor) -> dict[str, torch.Tensor]:
    """The statistics ``calibrate`` fills from one batch of these masks, on a fresh copy of the network."""
    torch.manual_seed(0)
    fresh = AnomalySegmenter(encoder="tiny_cnn", num_classes=3).eval()
    info = fresh.calibrate([{"image": _images(), "mask": masks}])
    assert info["pixels"] == int((masks != 255).sum())  # the void rows left out
    return {name: getattr(fresh, name).clone() for name in ("sml_mean", "sml_std", "feat_mean", "feat_precision")}


@pytest.mark.parametrize(
    "convert",
    [
        lambda m: m.to(torch.uint8),
        lambda m: m.to(torch.int32),
        lambda m: m[:, None],  # (B, 1, H, W)
        lambda m: m[:, None].to(torch.uint8),
        lambda m: m.float(),
    ],
    ids=["uint8", "int32", "channel", "uint8_channel", "float"],
)
def test_calibrate_takes_masks_of_any_integer_dtype_and_a_channel_dim(convert):
    masks = _masks()
    masks[0, :4] = 255  # void rows, left out in every form
    expected = _calibrated(masks)
    got = _calibrated(convert(masks))
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, msg=name)


@pytest.mark.parametrize(
    "masks, match",
    [
        (torch.zeros(2, 2, H, W, dtype=torch.long), r"batch 0's mask has shape \(2, 2, 32, 48\), expected \(B, H, W\)"),
        (torch.zeros(2, H, W - 1, dtype=torch.long), r"mask has shape \(2, 32, 47\), expected .* = \(2, 32, 48\)"),
        (torch.full((2, H, W), 0.5), r"batch 0's mask holds non-integer values"),
    ],
    ids=["two_channels", "other_size", "fractional"],
)
def test_calibrate_names_masks_it_cannot_read(net, masks, match):
    with pytest.raises(ValueError, match=match):
        net.calibrate([{"image": _images(), "mask": masks}])
