"""A library user's audit of the shared backbones: a prefix hint that loaded the wrong tensors, a freeze schedule
that ignored lr_factor or died under OneCycleLR, strict loads refusing a correct ViT file, a torchvision file
refused by a U-Net, VGG's unused pool, small inputs failing in torch, and the inputs the loader misread."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torchvision
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from shared.backbones import (
    BackboneFreezeUnfreeze,
    NothingLoadedError,
    PartialLoadWarning,
    WeightLoadingError,
    create_backbone,
    load_backbone_weights,
)
from tests.helpers import quiet_trainer


@pytest.fixture
def resnet18_file(tmp_path):
    """A torchvision ResNet-18 state dict, as torchvision saves it (no prefix)."""
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return path


@pytest.mark.parametrize("prefix", ["net.", "backbone.", "model.backbone.", "layer1."])
def test_a_torchvision_file_given_a_prefix_is_told_to_load_it_without_one(resnet18_file, prefix):
    """The hint read `with prefix='layer1.0.' ... 6 tensors would load`: following it put layer1.0's batch
    norm into the stem's and left 96 tensors random. The empty prefix loads all 120."""
    with pytest.raises(NothingLoadedError) as err:
        load_backbone_weights(create_backbone("resnet18"), resnet18_file, prefix=prefix)
    message = str(err.value)
    assert "the file's keys already fit without a prefix: use prefix='' (120 tensors would load)" in message
    assert "layer1.0." not in message.partition("; ")[2].split("would load")[0]
    assert load_backbone_weights(create_backbone("resnet18"), resnet18_file).loaded  # as advised


def test_a_prefix_that_would_fill_a_sliver_of_the_module_is_not_advised(tmp_path):
    """A file of one ResNet block under a name of its own: the block's first keys fit the stem's names, which
    is no fix (the hint advised such a prefix for a torchvision file given ``prefix="net."``). 5 of its 6 fit
    in shape too (its 3x3 conv1 is no 7x7 stem conv1)."""
    state = torchvision.models.resnet18().state_dict()
    block = {f"x.blk.{k.removeprefix('layer1.0.')}": v for k, v in state.items() if k.startswith("layer1.0.")}
    torch.save(block, tmp_path / "block.pth")
    with pytest.raises(NothingLoadedError) as err:
        load_backbone_weights(create_backbone("resnet18"), tmp_path / "block.pth", prefix="y.")
    assert re.search(
        r"no prefix makes the file fit: the best, prefix='x\.blk\.', would fill only 5 of the module's 120 "
        r"tensors \(another network's file\?\)",
        str(err.value),
    )
    assert "with prefix=" not in str(err.value)


class _Lit(pl.LightningModule):
    """A tiny_cnn backbone under a linear head, with the optimizer on ``all`` parameters (a user's
    ``AdamW(self.parameters())``) or on the trainable ones (the suite's), and optionally OneCycleLR."""

    def __init__(self, all_parameters: bool, one_cycle: bool = False):
        super().__init__()
        self.backbone = create_backbone("tiny_cnn", in_channels=1, width=4)
        self.head = nn.Linear(self.backbone.feature_channels[-1], 2)
        self.all_parameters, self.one_cycle = all_parameters, one_cycle

    def training_step(self, batch, index):
        x, y = batch
        return nn.functional.cross_entropy(self.head(self.backbone(x)[-1].mean(dim=(2, 3))), y)

    def configure_optimizers(self):
        params = self.parameters() if self.all_parameters else [p for p in self.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=1e-3)
        if not self.one_cycle:
            return optimizer
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, 1e-2, total_steps=20)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _data():
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 1, 16, 16, generator=generator), torch.randint(0, 2, (8,), generator=generator)
    return DataLoader(TensorDataset(x, y), batch_size=4)


def _fit(module, epochs: int, callbacks=(), ckpt_path=None, **trainer_args) -> pl.Trainer:
    """``module`` fitted for ``epochs``, its backbone frozen for the first, then trained at a tenth of the rate."""
    trainer = quiet_trainer(
        max_epochs=epochs, callbacks=[BackboneFreezeUnfreeze("backbone", 1, 0.1), *callbacks], **trainer_args
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's few-batches and num_workers advice
        trainer.fit(module, _data(), ckpt_path=ckpt_path)
    return trainer


def _backbone_group(trainer, module):
    head, backbone = trainer.optimizers[0].param_groups
    assert {id(p) for p in backbone["params"]} == {id(p) for p in module.backbone.parameters()}
    assert not {id(p) for p in head["params"]} & {id(p) for p in module.backbone.parameters()}
    return head, backbone


def test_an_optimizer_on_all_parameters_trains_the_unfrozen_backbone_at_lr_factor():
    """With AdamW(self.parameters()) the frozen backbone sat in the head's group: at the unfreeze it trained at
    the full rate, lr_factor unsaid and unused."""
    module = _Lit(all_parameters=True)
    trainer = _fit(module, epochs=2)
    head, backbone = _backbone_group(trainer, module)
    assert head["lr"] == pytest.approx(1e-3) and backbone["lr"] == pytest.approx(1e-4)
    assert backbone["weight_decay"] == head["weight_decay"]


def test_resuming_an_all_parameters_run_past_the_unfreeze_keeps_the_backbone_group(tmp_path):
    """Lightning's record of the groups, which a resumed run restores, must not hold the backbone twice."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    def run(epochs, ckpt_path=None):
        module = _Lit(all_parameters=True)
        save = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
        return module, _fit(module, epochs, [save], ckpt_path, enable_checkpointing=True)

    run(2)
    module, trainer = run(3, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    head, backbone = _backbone_group(trainer, module)
    assert backbone["lr"] == pytest.approx(0.1 * head["lr"])
    assert all(p.requires_grad for p in module.backbone.parameters())


@pytest.mark.parametrize("all_parameters", [False, True], ids=["trainable parameters", "all parameters"])
def test_unfreezing_under_one_cycle_lr_gives_the_backbone_the_schedule_at_lr_factor(all_parameters):
    """At the unfreeze epoch Lightning's scheduler step died with a bare KeyError: 'max_lr': OneCycleLR reads
    max_lr, min_lr and initial_lr from every group, and the new one had none."""
    module = _Lit(all_parameters=all_parameters, one_cycle=True)
    trainer = _fit(module, epochs=2)
    head, backbone = _backbone_group(trainer, module)
    for key in ("lr", "initial_lr", "max_lr", "min_lr"):
        assert backbone[key] == pytest.approx(0.1 * head[key]), key
    scheduler = trainer.lr_scheduler_configs[0].scheduler
    assert scheduler.base_lrs == pytest.approx([head["initial_lr"], 0.1 * head["initial_lr"]])


def test_a_torchvision_vit_file_loads_strictly_its_feature_pyramid_listed_as_adapters(tmp_path):
    """strict=True refused a correct torchvision ViT file: the suite's own pyramid, in no such file, counted as
    missing."""
    vit = {"image_size": 32, "patch_size": 16, "num_layers": 1, "num_heads": 2, "hidden_dim": 32, "mlp_dim": 64}
    torch.save(torchvision.models.VisionTransformer(**vit).state_dict(), tmp_path / "vit.pth")
    net = create_backbone("vit", **vit, pyramid_channels=8)
    report = load_backbone_weights(net, tmp_path / "vit.pth", strict=True)
    assert report.clean and report.missing == []
    assert report.adapters and all(net.is_adapter_key(k) for k in report.adapters)
    assert {k.split(".")[0] for k in report.adapters} == {"up4", "up2", "same", "down2"}
    assert f"{len(report.adapters)} adapters, trained from scratch: up4." in report.summary()


def test_a_torchvision_file_loads_into_a_unet_with_that_encoder(resnet18_file):
    """NothingLoadedError with no hint: the U-Net's keys are its encoder's under ``encoder.``."""
    unet = create_backbone("unet", encoder="resnet18", in_channels=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PartialLoadWarning)  # the decoder, in no such file, is no partial load
        report = load_backbone_weights(unet, resnet18_file)
    assert len(report.loaded) == 120 and report.adapted == ["encoder.net.conv1.weight"]
    assert report.missing and all(k.startswith("decoder.") for k in report.missing)
    state = torch.load(resnet18_file)
    assert torch.equal(unet.encoder.net.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])


def test_a_torchvision_googlenet_file_in_a_unet_is_told_of_transform_input(tmp_path):
    torch.save(torchvision.models.googlenet(weights=None, init_weights=False).state_dict(), tmp_path / "g.pth")
    with pytest.warns(UserWarning, match="torchvision's GoogLeNet weights expect transform_input"):
        load_backbone_weights(create_backbone("unet", encoder="googlenet"), tmp_path / "g.pth")


def test_vgg_does_not_run_its_last_pool_and_takes_16_px():
    """The last max-pool ran and its output was dropped: wasted, and inputs under 32 px failed in it."""
    net = create_backbone("vgg11").eval()
    calls = []
    net.net.features[-1].register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        feats = net.forward_features(torch.zeros(1, 3, 16, 16))
    assert calls == [] and [f.shape[-1] for f in feats] == [16, 8, 4, 2, 1]
    with pytest.raises(ValueError, match=r"VGGBackbone takes inputs of at least 16x16 pixels, got an input of 15x16"):
        net.forward_features(torch.zeros(1, 3, 15, 16))


@pytest.mark.parametrize(
    ("name", "kwargs", "small", "fits", "message"),
    [
        ("googlenet", {}, (14, 64), (15, 64), r"GoogLeNetBackbone takes inputs of at least 15x15 pixels"),
        ("vit", {"image_size": 32, "num_layers": 1, "hidden_dim": 32, "num_heads": 2, "mlp_dim": 64},
         (16, 64), (32, 64), r"ViTBackbone takes inputs of at least 32x32 pixels"),
        ("unet_encoder", {"channels": (4, 4, 4, 4, 4)}, (16, 16), (16, 32),
         r"UNetEncoder takes an input over 16 pixels high or wide \(its instance norms"),
        ("unet", {"encoder": "resnet18", "decoder_channels": (4, 4, 4, 4)}, (16, 16), (16, 17),
         r"UNet with encoder ResNetBackbone takes a larger input than 16x16: its decoder's instance norms"),
    ],
)  # fmt: skip
def test_an_input_below_a_backbones_minimum_size_is_an_error_naming_both(name, kwargs, small, fits, message):
    """torch's "Output size is too small" / "Expected more than 1 spatial element" named neither."""
    net = create_backbone(name, **kwargs).eval()
    with pytest.raises(ValueError, match=message):
        net.forward_features(torch.zeros(1, 3, *small))
    with torch.no_grad():
        assert len(net.forward_features(torch.zeros(1, 3, *fits))) == len(net.feature_strides)


def test_in_channels_takes_numpy_integers_and_refuses_bools():
    net = create_backbone("tiny_cnn", in_channels=np.int64(1))
    assert net.in_channels == 1 and type(net.in_channels) is int
    with pytest.raises(ValueError, match=r"in_channels must be a positive integer, got True"):
        create_backbone("tiny_cnn", in_channels=True)


def test_a_plain_torchvision_network_with_one_input_channel_gets_the_rgb_file_adapted(resnet18_file):
    """A bare AttributeError: 'ResNet' object has no attribute 'in_channels'."""
    net = torchvision.models.resnet18(weights=None)
    net.conv1 = nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    report = load_backbone_weights(net, resnet18_file)
    assert report.adapted == ["conv1.weight"]
    assert torch.allclose(net.conv1.weight, torch.load(resnet18_file)["conv1.weight"].sum(dim=1, keepdim=True))


def test_a_file_of_one_format_named_as_the_other_says_so(tmp_path):
    from safetensors.torch import save_file

    state = create_backbone("tiny_cnn", width=4).state_dict()
    torch.save(state, tmp_path / "torch.safetensors")
    with pytest.raises(WeightLoadingError, match=r"this is a torch file \(written by torch.save\) named .safetensors"):
        load_backbone_weights(create_backbone("tiny_cnn", width=4), tmp_path / "torch.safetensors")
    save_file(state, str(tmp_path / "tensors.pth"))
    with pytest.raises(WeightLoadingError, match=r"this is a safetensors file named \.pth: rename it to .safetensors"):
        load_backbone_weights(create_backbone("tiny_cnn", width=4), tmp_path / "tensors.pth")


def test_a_path_under_the_home_folder_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    torch.save(create_backbone("tiny_cnn", width=4).state_dict(), tmp_path / "w.pth")
    assert load_backbone_weights(create_backbone("tiny_cnn", width=4), "~/w.pth").clean
