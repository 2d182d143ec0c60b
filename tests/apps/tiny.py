"""Tiny demo checkpoints and data roots for the page tests (seconds on 2 CPU cores, all under one folder).

The checkpoints come from the real tasks with tiny widths, fitted one step with ``pl.Trainer(max_steps=1)``
on a few generated items and saved with ``trainer.save_checkpoint``; the JSON beside each holds made-up test
figures in the layout ``apps/prepare_demo.py`` writes.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from tests.helpers import anomaly_task, detection_task, medical_task, quiet_trainer

MEDICAL_BUILT = ("medical_unet", "medical_prob_unet")  # hpu_net left out on purpose: the "missing" path
SCENE_SIZE = (128, 64)  # (width, height) of the tiny synthetic road scenes


class _ListDataset(Dataset):
    def __init__(self, items: list):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def _trainer() -> pl.Trainer:
    return quiet_trainer(max_steps=1)


def _fit_and_save(
    task: pl.LightningModule, loader: DataLoader, path: Path, figures: dict, config: str
) -> None:
    torch.manual_seed(0)
    trainer = _trainer()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(task, train_dataloaders=loader)
    trainer.save_checkpoint(path)
    info = {"key": path.stem, "config": config, "trained": True, "test": figures}
    path.with_suffix(".json").write_text(json.dumps(info))


def medical_items(n: int = 4, size: int = 128) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    items = []
    for _ in range(n):
        image = torch.rand(1, size, size, generator=g) * 0.3
        mask = torch.zeros(1, size, size)
        image[:, 50:70, 50:70] += 0.6
        mask[:, 50:70, 50:70] = 1
        items.append({"image": image, "mask": mask})
    return items


def build_medical(folder: Path) -> None:

    loader = DataLoader(_ListDataset(medical_items()), batch_size=2)
    settings = {
        "medical_unet": {"model": "unet", "model_kwargs": {"channels": [4, 8]}},
        "medical_prob_unet": {"model": "prob_unet", "model_kwargs": {"channels": [4, 8], "latent_dim": 2}},
    }
    for key in MEDICAL_BUILT:
        torch.manual_seed(0)
        task = medical_task(**settings[key], num_samples=4, predict_dir=None, lr_scheduler=None)
        _fit_and_save(task, loader, folder / f"{key}.ckpt", {"test/ged": 0.5, "test/dice": 0.25}, "tiny")


def build_detection(folder: Path) -> None:
    from domains.driving.detection.data import detection_collate

    g = torch.Generator().manual_seed(0)
    items = []
    for _ in range(2):
        image = torch.rand(3, 64, 128, generator=g)
        target = {"boxes": torch.tensor([[10.0, 10.0, 40.0, 50.0]]), "labels": torch.tensor([0])}
        items.append((image, target))
    loader = DataLoader(_ListDataset(items), batch_size=2, collate_fn=detection_collate)
    torch.manual_seed(0)
    task = detection_task(
        backbone="unet_encoder",
        backbone_kwargs={"channels": [4, 8, 16]},
        input_size=(64, 128),
        fpn_levels=2,
        fpn_channels=32,
        head_convs=1,
        kitti_difficulties=[],
        lr_scheduler=None,
    )
    _fit_and_save(
        task, loader, folder / "driving_detection.ckpt", {"test/map": 0.1, "test/map50": 0.2}, "tiny"
    )


def build_anomaly(folder: Path) -> None:

    g = torch.Generator().manual_seed(0)
    items = []
    for _ in range(2):
        image = torch.rand(3, 64, 128, generator=g)
        mask = torch.randint(0, 3, (64, 128), generator=g)
        items.append({"image": image, "mask": mask})
    loader = DataLoader(_ListDataset(items), batch_size=2)
    torch.manual_seed(0)
    task = anomaly_task(
        encoder="unet_encoder",
        encoder_kwargs={"channels": [4, 8]},
        decoder_channels=[4],
        score="msp",
        oe_weight=0.0,
        lr_scheduler=None,
        calibration_batches=1,
    )
    _fit_and_save(
        task,
        loader,
        folder / "driving_anomaly.ckpt",
        {"test/ap": 0.3, "test/auroc": 0.7, "test/msp/ap": 0.1},
        "tiny",
    )


def build_data(root: Path) -> tuple[Path, Path]:
    """A tiny LIDC-layout set (128 px, a few patients) and a tiny SegmentMeIfYouCan-layout set."""
    from domains.driving.synthetic import generate_anomaly
    from domains.medical.synthetic import generate_lidc_png

    medical = generate_lidc_png(root / "lidc", n_patients=7, images_per_patient=1, size=128, seed=0)
    anomaly = generate_anomaly(
        root / "anomaly", n_images=2, size=SCENE_SIZE, anomaly_free_fraction=0.0, verbose=False
    )
    return Path(medical), Path(anomaly)


def build_all(root: Path) -> dict[str, Path]:
    checkpoints = root / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    build_medical(checkpoints)
    build_detection(checkpoints)
    build_anomaly(checkpoints)
    medical, anomaly = build_data(root)
    return {"checkpoints": checkpoints, "medical": medical, "anomaly": anomaly}
