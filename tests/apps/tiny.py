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


#: a detector small enough to fit in a test (the demo's and the shipped-card tests')
TINY_DETECTOR = {
    "backbone": "unet_encoder",
    "backbone_kwargs": {"channels": [4, 8, 16]},
    "input_size": (64, 128),
    "fpn_levels": 2,
    "fpn_channels": 32,
    "head_convs": 1,
    "kitti_difficulties": [],
}


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
    task = detection_task(**TINY_DETECTOR, lr_scheduler=None)
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


ACCIDENT_INPUT = (24, 48)  # (height, width) of the tiny anticipator's input: the fixture clips' own size
ACCIDENT_ALARM = 0.35  # the tiny model's alarm threshold (where the page's slider must start)


def accident_clips(root: Path) -> Path:
    """Hand-written synthetic-layout clips (3 per kind, so the default split has a test clip of each kind)."""
    from tests.driving.accident.layouts import write_accident_clips

    return write_accident_clips(root, {"crash": 3, "near_miss": 3, "normal": 3}, n_frames=12, toa=7)


def build_accident(folder: Path, clips: Path) -> None:
    """A tiny anticipator fitted one step on the fixture clips; its alarm threshold set to ACCIDENT_ALARM."""
    from domains.driving.accident.data import AccidentDataset, collate_clips
    from domains.driving.accident.model import AccidentAnticipator
    from domains.driving.accident.readers import read_ccd_layout
    from domains.driving.accident.task import AccidentTask

    dataset = AccidentDataset(read_ccd_layout(clips, require_json=True)[:2], image_size=ACCIDENT_INPUT)
    loader = DataLoader(dataset, batch_size=2, collate_fn=collate_clips)
    torch.manual_seed(0)
    network = AccidentAnticipator(backbone="tiny_cnn", input_size=ACCIDENT_INPUT, hidden=8, window=4)
    task = AccidentTask(network=network, uncertainty_samples=2)
    task.model.alarm_threshold.fill_(ACCIDENT_ALARM)
    _fit_and_save(
        task,
        loader,
        folder / "driving_accident.ckpt",
        {"test/video_ap": 0.6, "test/frame_ap": 0.4, "test/mtta": 1.2},
        "tiny",
    )


def instance_kitti(root: Path, n: int = 12) -> Path:
    """Painted 128x64 scenes with instance maps, two frames per sequence (so the default split has validation
    and test frames)."""
    from tests.driving.layouts import write_instance_kitti

    return write_instance_kitti(root, n, size=(SCENE_SIZE[1], SCENE_SIZE[0]), dontcare=False, sequences=True)


def build_instances(folder: Path, data: Path) -> None:
    """A tiny Mask R-CNN fitted one step on the painted scenes through its data module (so the checkpoint
    records the data settings, as a real run's does)."""
    from domains.driving.instances.data import InstanceDataModule
    from domains.driving.instances.model import RoadInstanceSegmenter
    from domains.driving.instances.task import InstanceTask
    from tests.driving.layouts import TINY_MASK_RCNN

    datamodule = InstanceDataModule(
        data_path=str(data), image_size=None, batch_size=2, num_workers=0, augment=False
    )
    torch.manual_seed(0)
    task = InstanceTask(network=RoadInstanceSegmenter(3, **TINY_MASK_RCNN), lr_scheduler=None)
    trainer = quiet_trainer(max_steps=1, limit_val_batches=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(task, datamodule=datamodule)
    path = folder / "driving_instances.ckpt"
    trainer.save_checkpoint(path)
    figures = {"test/mask_map50": 0.3, "test/box_map50": 0.35, "test/mask_ap50/Car": 0.5}
    path.with_suffix(".json").write_text(json.dumps({"key": path.stem, "config": "tiny", "test": figures}))


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
    instances = instance_kitti(root / "instances")
    build_instances(checkpoints, instances)
    build_anomaly(checkpoints)
    accident = accident_clips(root / "accident")
    build_accident(checkpoints, accident)
    medical, anomaly = build_data(root)
    return {
        "checkpoints": checkpoints,
        "medical": medical,
        "anomaly": anomaly,
        "accident": accident,
        "instances": instances,
    }
