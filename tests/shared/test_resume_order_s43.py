"""Every domain's training order follows (seed, epoch) (``SplitLoaders.train_sampler``): a shuffling loader
drew each epoch's order from the global RNG, which ``seed_everything`` sets as it was at epoch 0, so a fit
resumed at epoch k (``fit --ckpt_path last``) replayed epoch 0's order, and a pass read besides (class counts,
calibration) moved every later epoch's. Checked on the shared classification data module (the others reach
the same ``train_sampler``)."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.data import _set_sampler_epoch
from pytorch_lightning.callbacks import ModelCheckpoint

from tests.helpers import quiet_trainer, stripes_data, stripes_folder

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def stripes(tmp_path_factory):
    """12 training images (6 per class): enough orders to tell epochs apart."""
    return stripes_folder(tmp_path_factory.mktemp("resume_order"), {"train": 6, "val": 1})


def _train_loader(root):
    """The training loader a fit builds (one per fit: a resumed fit builds a new one), after the CLI's
    ``seed_everything`` (the global RNG is all it reset)."""
    torch.manual_seed(7)
    dm = stripes_data(root, seed=5)
    dm.setup("fit")
    return dm.train_dataloader()


def _epoch(loader, epoch: int) -> list[int]:
    _set_sampler_epoch(loader, epoch)  # what Lightning's fit loop calls at each training epoch's start
    return list(loader.sampler)


def test_resumed_fit_draws_the_order_of_its_epoch(stripes, monkeypatch):
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)  # no seed_everything: the data seed's order
    uninterrupted = _train_loader(stripes)
    orders = [_epoch(uninterrupted, epoch) for epoch in range(3)]
    assert sorted(orders[0]) == list(range(12))
    assert len({tuple(order) for order in orders}) == 3, "the order must change per epoch"
    # a fit resumed at epoch 2 builds its loader afresh: told the epoch, it draws the uninterrupted order
    assert _epoch(_train_loader(stripes), 2) == orders[2]
    # a pass read besides in epoch 1 (another loader over the split: class counts, calibration) moves nothing
    again = _train_loader(stripes)
    _epoch(again, 0), _epoch(again, 1)
    extra = stripes_data(stripes, seed=5)
    extra.setup("fit")
    list(extra.train_dataloader().sampler)
    assert _epoch(again, 2) == orders[2]
    # the order is the data seed's ...
    other = stripes_data(stripes, seed=6)
    other.setup("fit")
    assert _epoch(other.train_dataloader(), 2) != orders[2]
    # ... or seed_everything's, when the run set one (--seed_everything; Lightning's DDP sampler takes it too)
    monkeypatch.setenv("PL_GLOBAL_SEED", "11")
    seeded = [_epoch(_train_loader(stripes), 2)]
    monkeypatch.setenv("PL_GLOBAL_SEED", "12")
    seeded.append(_epoch(_train_loader(stripes), 2))
    assert seeded[0] != seeded[1] and sorted(seeded[0]) == list(range(12))


class _Recorder(pl.LightningModule):
    """Records the images each training epoch reads, in order; learns nothing."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen: dict[int, list[str]] = {}

    def training_step(self, batch, batch_idx):
        self.seen.setdefault(self.current_epoch, []).extend(map(str, batch["path"]))
        return self.weight * batch["image"].mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _fit(stripes, folder, max_epochs: int, ckpt_path=None) -> dict[int, list[str]]:
    pl.seed_everything(7, verbose=False)
    model = _Recorder()
    last = ModelCheckpoint(dirpath=folder, save_last=True, save_top_k=0)
    trainer = quiet_trainer(max_epochs=max_epochs, enable_checkpointing=True, callbacks=[last])
    trainer.fit(model, stripes_data(stripes, seed=5, batch_size=4), ckpt_path=ckpt_path)
    return model.seen


def test_a_real_resumed_fit_goes_on_with_the_uninterrupted_order(stripes, tmp_path):
    uninterrupted = _fit(stripes, tmp_path / "a", 3)
    assert len(uninterrupted[2]) == 12 and uninterrupted[2] != uninterrupted[1]
    _fit(stripes, tmp_path / "b", 2)
    resumed = _fit(stripes, tmp_path / "b", 3, ckpt_path=tmp_path / "b" / "last.ckpt")
    assert list(resumed) == [2] and resumed[2] == uninterrupted[2]
