"""A VGG backbone built torchvision's whole VGG and threw its classifier away: about 120M parameters set up
(90 % of the build, about 1 s a core) for nothing. The classifier is now built on the meta device; the features
are torchvision's, initialised as torchvision initialises them, under the names its weights use."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from shared.backbones import create_backbone


def test_no_classifier_weights_are_made_in_memory(monkeypatch):
    made = []
    reset = nn.Linear.reset_parameters

    def record(self):
        made.append(self.weight.device.type)
        reset(self)

    monkeypatch.setattr(nn.Linear, "reset_parameters", record)
    net = create_backbone("vgg11")
    assert made and set(made) == {"meta"}  # torchvision's three classifier layers, none in memory
    assert {p.device.type for p in net.parameters()} == {"cpu"}


@pytest.mark.parametrize("depth", [11, 16])
def test_the_features_are_torchvisions_by_name_shape_and_initialisation(depth):
    net = create_backbone(f"vgg{depth}")
    with torch.device("meta"):  # names and shapes only
        reference = getattr(torchvision.models, f"vgg{depth}")(weights=None).features.state_dict()
    ours = {k.removeprefix("net.features."): v for k, v in net.state_dict().items()}
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in reference.items()}
    for conv in (m for m in net.modules() if isinstance(m, nn.Conv2d)):
        assert torch.count_nonzero(conv.bias) == 0  # torchvision's VGG init: zero biases ...
        fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
        expected = (2 / fan_out) ** 0.5  # ... and kaiming_normal_(mode="fan_out") weights
        assert abs(float(conv.weight.std()) - expected) < 0.15 * expected
