"""Driving lines no test pinned (a mutation audit changed each and every test still passed): the outlier
paster's object count range, its perspective scale and its donor image, the detector's training sizes and
centre-sampling radius, and the accident task's accepted zero settings. Values by hand on tiny inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from domains.driving.accident.task import AccidentTask
from domains.driving.anomaly import outliers
from domains.driving.detection.model import RoadDetector
from tests.driving.accident.test_model import tiny

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------- outlier pasting
def _road(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A grey scene whose every pixel is road (id 0)."""
    return np.full((height, width, 3), 0.5, np.float32), np.zeros((height, width), np.int64)


def test_num_objects_is_an_inclusive_range():
    """On a large empty road small objects always fit: (2, 2) pastes exactly 2, and (1, 3) reaches each of 1,
    2 and 3 over 40 seeds (an exclusive upper end would refuse (2, 2) and never paste 3)."""
    image, mask = _road(128, 192)
    small = {"size_range": (0.05, 0.1), "shadow_prob": 0.0, "road_ids": (0,)}
    for seed in range(5):
        _, _, objects = outliers.paste_outliers(image, mask, np.random.default_rng(seed), (2, 2), **small)
        assert len(objects) == 2
    counts = {
        len(outliers.paste_outliers(image, mask, np.random.default_rng(seed), (1, 3), **small)[2])
        for seed in range(40)
    }
    assert counts == {1, 2, 3}


@pytest.mark.parametrize("foot, height", [(99, 20), (33, 11)])
def test_objects_shrink_towards_the_horizon(foot, height):
    """Size 0.2 of a 100-row image at the bottom row: 20 rows; the object's height scales by
    0.35 + 0.65 * row / 99, so one standing on row 33 is round(20 * 0.5667) = 11 rows tall."""
    image, _ = _road(100, 200)
    mask = np.ones((100, 200), np.int64)
    mask[foot] = 0  # the only road row: every object stands on it
    for seed in range(5):
        _, _, objects = outliers.paste_outliers(
            image, mask, np.random.default_rng(seed), (1, 1), (0.2, 0.2), road_prob=1.0, shadow_prob=0.0,
            road_ids=(0,),
        )  # fmt: skip
        (obj,) = objects
        y0, _, y1, _ = obj["box"]
        assert (y1, y1 - y0) == (foot + 1, height)


def test_a_scene_texture_is_cut_from_another_image_of_the_batch(monkeypatch):
    """Three images of distinct constant values, every image pasted with a scene texture: the donor is never
    the image pasted on, and over 30 batches each of the other two serves every image."""
    seen: list[tuple[float, float]] = []
    paste = outliers.paste_outliers

    def spy(image, mask, rng, *args, **kwargs):
        seen.append((float(image[0, 0, 0]), float(args[3][0, 0, 0])))
        return paste(image, mask, rng, *args, **kwargs)

    monkeypatch.setattr(outliers, "paste_outliers", spy)
    images = torch.stack([torch.full((3, 32, 48), v) for v in (0.1, 0.5, 0.9)])
    masks = torch.zeros(3, 32, 48, dtype=torch.long)
    for seed in range(30):
        outliers.paste_outliers_batch(images, masks, np.random.default_rng(seed), prob=1.0, scene_texture_prob=1.0)
    assert len(seen) == 90
    pairs = {(round(a, 1), round(b, 1)) for a, b in seen}
    values = (0.1, 0.5, 0.9)
    assert pairs == {(a, b) for a in values for b in values if a != b}


# ---------------------------------------------------------------------------------------------- detection
def test_detector_training_sizes_and_centre_sampling_radius():
    """Input 64x96, train scales 0.8 / 1.0 / 1.2: short sides round(64 * s) = 51, 64, 77 and the long side at
    most round(96 * 1.2) = 115, which the transform takes in training; FCOS gets the asked radius 2.5."""
    model = RoadDetector(
        num_classes=3, backbone="tiny_cnn", backbone_kwargs={"width": 8}, input_size=(64, 96), head_convs=1,
        center_sampling_radius=2.5, train_scales=(1.2, 0.8, 1.0),
    )  # fmt: skip
    assert model._train_sizes == ((51, 64, 77), 115)
    assert model.detector.center_sampling_radius == 2.5
    target = {"boxes": torch.tensor([[10.0, 10.0, 40.0, 40.0]]), "labels": torch.tensor([0])}
    model.train()([torch.rand(3, 64, 96)], [target])
    transform = model.detector.transform
    assert (tuple(transform.min_size), transform.max_size) == ((51, 64, 77), 115)


# ----------------------------------------------------------------------------------------------- accident
def test_object_loss_weight_0_is_accepted_and_leaves_the_horizon_loss():
    """Weight 0 switches the object loss off (total = the horizon loss); only a negative weight is refused."""
    task = AccidentTask(network=tiny(horizons=(0.1,)), object_loss_weight=0.0)
    batch = {
        "toa": torch.tensor([1]), "fps": torch.tensor([10.0]), "frame_valid": torch.tensor([[True, True]]),
        "box_valid": torch.tensor([[[True], [True]]]), "involved": torch.tensor([[True]]),
    }  # fmt: skip
    out = {"horizon_logits": torch.tensor([[[0.5], [1.0]]]), "object_logits": torch.tensor([[[-2.0], [-1.0]]])}
    terms = task.losses(batch, out)
    assert float(terms["object"]) > 0
    assert float(terms["total"]) == pytest.approx(float(terms["horizon"]), rel=1e-6)
    with pytest.raises(ValueError, match="object_loss_weight must be >= 0"):
        AccidentTask(network=tiny(), object_loss_weight=-0.1)


def test_max_false_alarm_0_is_accepted():
    """0: no negative validation clip may raise an alarm (a valid cap); 1 is refused."""
    assert AccidentTask(network=tiny(), max_false_alarm=0.0).hparams.max_false_alarm == 0.0
    with pytest.raises(ValueError, match=r"max_false_alarm must be in \[0, 1\)"):
        AccidentTask(network=tiny(), max_false_alarm=1.0)
