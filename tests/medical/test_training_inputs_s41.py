"""Medical training inputs: augmentation steps drawn independently (and reproducibly), the documented intensity
step, and masks whose values are not 0/1 refused by the losses."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import albumentations as A
import numpy as np
import pytest
import torch

from domains.medical.data import AUGMENT_INTENSITY, MedicalDataModule, ReaderDataset
from domains.medical.models import HierarchicalProbUNet, ProbabilisticUNet, UNetSegmenter
from domains.medical.synthetic import generate_lidc_png
from domains.medical.task import MedicalSegmentationTask
from shared.data import reseed_pipeline, seed_worker_transforms, segmentation_augmentations

IMAGE = np.random.default_rng(0).random((16, 16)).astype(np.float32)


class _Base:
    """The least a ReaderDataset reads: one 16 x 16 image with two readers."""

    num_readers = 2

    def __len__(self) -> int:
        return 1

    def load(self, i: int) -> dict:
        masks = np.zeros((2, 16, 16), np.float32)
        masks[:, 2:6, 3:9] = 1
        return {"image": IMAGE, "masks": masks, "id": "a", "group": "p"}


class _Recording:
    """An albumentations pipeline that remembers which steps each call applied (and its output)."""

    def __init__(self, pipeline: A.Compose):
        self.pipeline, self.applied, self.images = pipeline, [], []
        pipeline.save_applied_params = True

    def __getattr__(self, name):
        return getattr(self.pipeline, name)

    def __call__(self, **data):
        out = self.pipeline(**data)
        self.applied.append(tuple(name for name, _ in out["applied_transforms"]))
        self.images.append(out["image"].copy())
        return out


def _draws(n: int, torch_seed: int) -> _Recording:
    augment = _Recording(segmentation_augmentations())
    dataset = ReaderDataset(_Base(), "random", augment=augment)
    torch.manual_seed(torch_seed)
    for _ in range(n):
        dataset[0]
    return augment


def test_the_training_flip_and_affine_are_drawn_independently_and_reproducibly():
    """ReaderDataset reseeds its pipeline per item: through Compose.set_random_seed every step got one seed, so
    a flip and an affine of equal p fired together or not at all (only 2 of the 4 combinations)."""
    augment = _draws(400, torch_seed=0)
    counts = Counter(augment.applied)
    combos = [(), ("HorizontalFlip",), ("Affine",), ("HorizontalFlip", "Affine")]
    assert set(counts) == set(combos), counts
    for combo in combos:  # 100 expected each (p = 0.5 x 0.5); sd about 9: a loose bound
        assert 60 <= counts[combo] <= 140, counts
    again = _draws(400, torch_seed=0)  # the same torch seed: the same draws
    assert again.applied == augment.applied
    assert all(np.array_equal(a, b) for a, b in zip(again.images, augment.images))
    other = _draws(400, torch_seed=1)
    assert other.applied != augment.applied


def test_reseed_pipeline_gives_nested_steps_streams_of_their_own():
    """Nested Compose / OneOf each get their own seeds, down to the leaves; ColorJitter's own ``transforms``
    (plain functions) are left alone; the same entropy gives the same seeds."""
    pipeline = A.Compose(
        [
            A.OneOf([A.HorizontalFlip(p=1), A.VerticalFlip(p=1)], p=0.5),
            A.Compose([A.Affine(rotate=(-10, 10), p=0.5), A.ColorJitter(p=0.5)], p=1),
            A.RandomBrightnessContrast(p=0.5),
        ]
    )
    one_of, inner, brightness = pipeline.transforms
    steps = [pipeline, one_of, *one_of.transforms, inner, *inner.transforms, brightness]

    reseed_pipeline(pipeline, (3, 1, 7))
    seeds = [step.seed for step in steps]
    assert len(set(seeds)) == len(steps), seeds  # set_random_seed alone gives all of them one seed
    reseed_pipeline(pipeline, (3, 1, 7))
    assert [step.seed for step in steps] == seeds
    reseed_pipeline(pipeline, (3, 1, 8))
    assert all(step.seed != seed for step, seed in zip(steps, seeds))
    out = pipeline(image=(IMAGE[..., None].repeat(3, -1) * 255).astype(np.uint8))["image"]
    assert out.shape == (16, 16, 3)


def test_a_loader_worker_seeds_each_step_of_its_pipeline_apart(monkeypatch):
    """seed_worker_transforms (each loader worker's init) reseeds the worker's pipeline from torch's worker seed
    with a stream per step; it gave every step that one seed."""
    pipeline = segmentation_augmentations(intensity=0.1)
    info = SimpleNamespace(seed=2**32 + 2**31 + 7, dataset=SimpleNamespace(transform=pipeline))
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: info)
    seed_worker_transforms(0)
    seeds = [step.seed for step in pipeline.transforms]
    assert len(set(seeds)) == len(seeds) == 3, seeds
    info.seed += 1  # another worker: other seeds
    seed_worker_transforms(1)
    assert all(step.seed != seed for step, seed in zip(pipeline.transforms, seeds))
    info.seed -= 1  # the same worker seed: the same ones
    seed_worker_transforms(0)
    assert [step.seed for step in pipeline.transforms] == seeds


def test_the_intensity_step_changes_the_image_alone_within_its_range():
    pipeline = segmentation_augmentations(flip=False, rotate_limit=0, scale_limit=0, intensity=0.1, seed=0)
    mask = (IMAGE > 0.5).astype(np.uint8)
    changed = 0
    for _ in range(40):
        out = pipeline(image=IMAGE, masks=[mask, mask])
        assert all(np.array_equal(m, mask) for m in out["masks"])  # the masks never move nor change
        image = out["image"]
        assert image.dtype == np.float32 and 0 <= image.min() and image.max() <= 1
        # x * (1 + c) + b, |c|, |b| <= 0.1, clipped: at most 0.2 from the input
        assert np.abs(image - IMAGE).max() <= 0.2 + 1e-6
        changed += int(not np.array_equal(image, IMAGE))
    assert 5 <= changed <= 35  # p = 0.5
    with pytest.raises(ValueError, match=r"intensity must be in \[0, 1\).*got 1.5"):
        segmentation_augmentations(intensity=1.5)


def test_the_medical_training_split_augments_intensity_and_evaluation_does_not(tmp_path):
    """The data module's docstring promises an intensity step: its training pipeline has one (image only)."""
    root = generate_lidc_png(tmp_path / "lidc", n_patients=6, images_per_patient=1, size=32)
    dm = MedicalDataModule(data_path=str(root), crop_size=32, num_workers=0, batch_size=2)
    dm.setup("fit")
    steps = dm.split_dataset("train").augment.transforms
    intensity = [s for s in steps if isinstance(s, A.RandomBrightnessContrast)]
    assert len(intensity) == 1 and intensity[0].brightness_limit == (-AUGMENT_INTENSITY, AUGMENT_INTENSITY)
    assert {type(s).__name__ for s in steps} == {"RandomBrightnessContrast", "HorizontalFlip", "Affine"}
    assert dm.split_dataset("val").augment is None


# ------------------------------------------------------------------------------------------- 0/1 masks

NETWORKS = {
    "unet": lambda: UNetSegmenter(channels=(4, 8)),
    "prob_unet": lambda: ProbabilisticUNet(channels=(4, 8), latent_dim=2),
    "hpu_net": lambda: HierarchicalProbUNet(channels=(4, 8, 8), latent_channels=(1,), blocks_per_level=1),
}


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_a_0_255_mask_is_refused_by_every_loss_and_0_1_masks_train(name):
    torch.manual_seed(0)
    net = NETWORKS[name]()
    images = torch.rand(2, 1, 16, 16)
    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, 4:9, 3:8] = 1
    with pytest.raises(ValueError, match=r"found 1 other value\(s\): 255 \(a 0/255 mask: divide it by 255"):
        net.loss(images, mask * 255)
    with pytest.raises(ValueError, match=r"found 2 other value\(s\): 0.25, 0.5$"):
        net.loss(images, torch.where(mask > 0, 0.5, torch.where(images > 0.5, 0.25, 0.0)))
    with pytest.raises(ValueError, match=r"found 1 other value\(s\): nan"):
        net.loss(images, mask.masked_fill(mask > 0, float("nan")))
    for ok in (mask, mask.bool(), mask.to(torch.uint8)):
        loss, _ = net.loss(images, ok)
        assert torch.isfinite(loss)


def test_the_compiled_training_loss_still_refuses_a_0_255_mask(monkeypatch):
    """Under torch.compile the model's check is left out (a data-dependent branch breaks the graph): the task
    checks the masks before the compiled loss. torch.compile is stood in for: only the check is tested."""

    def fake_compile(fn, **kwargs):
        def compiled(*args):
            with monkeypatch.context() as m:
                m.setattr(torch.compiler, "is_compiling", lambda: True)
                return fn(*args)

        return compiled

    monkeypatch.setattr(torch, "compile", fake_compile)
    task = MedicalSegmentationTask(UNetSegmenter(channels=(4, 8)), compile_loss=True, predict_dir=None)
    images, mask = torch.rand(2, 1, 16, 16), (torch.rand(2, 1, 16, 16) > 0.5).float()
    loss, _ = task.training_loss(images, mask)  # builds the stand-in "compiled" loss, runs it
    assert task._compiled_loss is not None and torch.isfinite(loss)
    with pytest.raises(ValueError, match=r"found 1 other value\(s\): 255"):
        task.training_loss(images, mask * 255)
