"""A tiny generated segmentation task (bright squares on noise) for CLI and training tests."""

from __future__ import annotations

import functools

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from shared.segmentation import SegmentationNet
from shared.task import BaseTask


def make_squares(n: int, size: int = 32, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, size, size, generator=g) * 0.3
    masks = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        y, x = torch.randint(0, size - 10, (2,), generator=g).tolist()
        images[i, 0, y : y + 10, x : x + 10] += 0.6
        masks[i, y : y + 10, x : x + 10] = 1
    return TensorDataset(images, masks)


class SquaresDataModule(pl.LightningDataModule):
    def __init__(self, n_train: int = 16, n_val: int = 8, size: int = 32, batch_size: int = 4):
        super().__init__()
        self.train_set = make_squares(n_train, size, seed=0)
        self.val_set = make_squares(n_val, size, seed=1)
        self.batch_size = batch_size

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=self.batch_size)


class TinySegTask(BaseTask):
    def __init__(self, encoder: str = "tiny_cnn", **kwargs):
        kwargs.setdefault("optimizer", functools.partial(torch.optim.AdamW, lr=1e-2))
        super().__init__(**kwargs)
        self.save_hyperparameters()
        self.model = SegmentationNet(num_classes=2, in_channels=1, encoder=encoder)

    def training_step(self, batch, batch_idx):
        images, masks = batch
        loss = F.cross_entropy(self.model(images), masks)
        self.log("train/loss", loss)
        return self.guard_loss(loss, {"ce": loss})

    def validation_step(self, batch, batch_idx):
        images, masks = batch
        self.log("val/loss", F.cross_entropy(self.model(images), masks))
