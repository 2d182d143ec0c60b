"""Shared code written once (s44): a ``SegmentationNet`` lets its ``UNet`` build the named encoder (it built
the encoder itself, then handed it over), and the freeze callback finds its backbone with torch's
``get_submodule`` (a hand-written walk of the dotted path before)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from shared.backbones import UNet, create_backbone
from shared.backbones.finetuning import BackboneFreezeUnfreeze
from shared.segmentation import SegmentationNet

ENCODER = {"channels": [4, 8]}


def test_a_segmentation_net_is_the_unet_on_its_named_encoder_weight_for_weight():
    torch.manual_seed(0)
    net = SegmentationNet(num_classes=3, in_channels=1, encoder="unet_encoder", encoder_kwargs=ENCODER)
    torch.manual_seed(0)
    encoder = create_backbone("unet_encoder", in_channels=1, **ENCODER)
    unet = UNet(in_channels=1, encoder=encoder)
    ours, theirs = net.backbone.state_dict(), unet.state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert net(torch.rand(1, 1, 8, 8)).shape == (1, 3, 8, 8)


class _Holder(nn.Module):
    def __init__(self):
        super().__init__()
        self.model = nn.Module()
        self.model.backbone = create_backbone("tiny_cnn", in_channels=1)
        self.model.head = nn.Linear(2, 2)  # not the backbone: stays trainable


def test_the_freeze_callback_freezes_the_backbone_its_dotted_path_names():
    holder = _Holder()
    BackboneFreezeUnfreeze("model.backbone").freeze_before_training(holder)
    assert not any(p.requires_grad for p in holder.model.backbone.parameters())
    assert all(p.requires_grad for p in holder.model.head.parameters())


def test_a_dotted_path_to_no_module_is_an_attribute_error_naming_the_missing_part():
    with pytest.raises(AttributeError, match="backbon"):
        BackboneFreezeUnfreeze("model.backbon").freeze_before_training(_Holder())
