"""Classic CNN backbones from torchvision (the networks of the transfer-learning story) and a tiny test CNN.

Each wraps the torchvision model as ``self.net`` (its ``torchvision_prefix``), so a torchvision state dict
loads as it is: ``load_backbone_weights(net, path)``, no ``prefix`` (which selects a part of the file, not of
the module); classifier heads are dropped. Any number of input channels: the first convolution is rebuilt with
the same geometry (``shared.backbones.weights`` adapts RGB weights to it when loading).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torchvision
from torch import nn
from torchvision.models import vgg

from .base import Backbone, register_backbone


def _replace_first_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    if conv.in_channels == in_channels:
        return conv
    return nn.Conv2d(
        in_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        bias=conv.bias is not None,
    )


class ResNetBackbone(Backbone):
    """torchvision ResNet; features at strides 2 (stem), 4, 8, 16, 32."""

    torchvision_prefix = "net."

    def __init__(self, depth: int = 18, in_channels: int = 3):
        super().__init__()
        builders = {
            18: torchvision.models.resnet18,
            34: torchvision.models.resnet34,
            50: torchvision.models.resnet50,
        }
        if depth not in builders:
            raise ValueError(f"ResNet depth must be one of {sorted(builders)}, got {depth}")
        net = builders[depth](weights=None)
        net.conv1 = _replace_first_conv(net.conv1, in_channels)
        net.fc = nn.Identity()
        self.net = net
        self.in_channels = in_channels
        expansion = 4 if depth == 50 else 1
        self.feature_channels = [64] + [c * expansion for c in (64, 128, 256, 512)]
        self.feature_strides = [2, 4, 8, 16, 32]

    def _forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        n = self.net
        c1 = n.relu(n.bn1(n.conv1(x)))
        c2 = n.layer1(n.maxpool(c1))
        c3 = n.layer2(c2)
        c4 = n.layer3(c3)
        c5 = n.layer4(c4)
        return [c1, c2, c3, c4, c5]


class VGGBackbone(Backbone):
    """torchvision VGG (no batch norm, as in the paper); features just before each max-pool: strides 1..16.

    The last max-pool is not run (its output is no feature map), so inputs from 16 px work."""

    torchvision_prefix = "net."
    min_input_size = 16  # the four pools before the last feature map

    def __init__(self, depth: int = 16, in_channels: int = 3):
        super().__init__()
        layouts = {11: "A", 16: "D", 19: "E"}  # torchvision's names of the VGG layouts (vgg11, vgg16, vgg19)
        if depth not in layouts:
            raise ValueError(f"VGG depth must be one of {sorted(layouts)}, got {depth}")
        # torchvision's VGG with its own initialisation, the classifier built on the meta device: its 120M
        # parameters (discarded below) took 90 % of the build, about 1 s on a CPU core
        features = vgg.make_layers(vgg.cfgs[layouts[depth]])
        with torch.device("meta"):
            net = vgg.VGG(features, init_weights=True)
        net.features[0] = _replace_first_conv(net.features[0], in_channels)
        net.avgpool = nn.Identity()
        net.classifier = nn.Identity()
        self.net = net
        self.in_channels = in_channels
        self._pool_indices = [i for i, m in enumerate(net.features) if isinstance(m, nn.MaxPool2d)]
        self.feature_channels = [64, 128, 256, 512, 512]
        self.feature_strides = [1, 2, 4, 8, 16]

    def _forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i, layer in enumerate(self.net.features):
            if i in self._pool_indices:
                feats.append(x)
                if i == self._pool_indices[-1]:  # the last pool's output is no feature map: not computed
                    break
            x = layer(x)
        return feats


class AlexNetBackbone(Backbone):
    """torchvision AlexNet; features at strides 4, 8, 16.

    The first conv's padding is 5 (not 2) and the pools pad by 1 so maps are exactly H/stride for sizes
    divisible by 32; weight shapes are unchanged, so torchvision weights still load.
    """

    torchvision_prefix = "net."

    def __init__(self, in_channels: int = 3):
        super().__init__()
        net = torchvision.models.alexnet(weights=None)
        net.features[0] = _replace_first_conv(net.features[0], in_channels)
        net.features[0].padding = (5, 5)
        for i in (2, 5):
            net.features[i].padding = 1
        net.avgpool = nn.Identity()
        net.classifier = nn.Identity()
        self.net = net
        self.in_channels = in_channels
        self.feature_channels = [64, 192, 256]
        self.feature_strides = [4, 8, 16]

    def _forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        f = self.net.features
        c1 = f[1](f[0](x))  # conv + relu, stride 4
        c2 = f[4](f[3](f[2](c1)))  # pool, conv, relu: stride 8
        c3 = f[11](f[10](f[9](f[8](f[7](f[6](f[5](c2)))))))  # pool, 3 x (conv, relu): stride 16
        return [c1, c2, c3]


class GoogLeNetBackbone(Backbone):
    """torchvision GoogLeNet (Inception v1, no aux heads); features at strides 2, 4, 8, 16, 32.

    ``transform_input`` (RGB only): torchvision's own step that maps ImageNet-normalised input to the scale its
    ImageNet GoogLeNet weights were ported with; torchvision turns it on whenever it loads them. Give
    ``backbone_kwargs: {transform_input: true}`` with such a file (without it the transferred features were
    124 % off torchvision's; :func:`~shared.backbones.weights.load_backbone_weights` warns). An option, so a
    checkpoint keeps it; off by default, so networks trained without it keep their outputs."""

    torchvision_prefix = "net."
    min_input_size = 15  # its ceil-mode pools leave no pixel at stride 16 below it

    def __init__(self, in_channels: int = 3, transform_input: bool = False):
        super().__init__()
        net = torchvision.models.googlenet(
            weights=None, aux_logits=False, init_weights=True, transform_input=transform_input and in_channels == 3
        )
        net.conv1.conv = _replace_first_conv(net.conv1.conv, in_channels)
        net.fc = nn.Identity()
        self.net = net
        self.in_channels = in_channels
        self.feature_channels = [64, 192, 480, 832, 1024]
        self.feature_strides = [2, 4, 8, 16, 32]

    def torchvision_weights_loaded(self) -> str | None:
        """Called when a torchvision state dict was loaded: a warning when ``transform_input`` is off."""
        if self.in_channels != 3:  # torchvision's step scales R, G and B apart: no form for other channels
            return (
                f"torchvision's GoogLeNet weights expect transform_input, which works on RGB only: with "
                f"{self.in_channels} input channel(s) it is left out and the transferred features are far off "
                "torchvision's (about 128 % on grey images; resnet18's, about 5 %)"
            )
        if self.net.transform_input:
            return None
        return (
            "torchvision's GoogLeNet weights expect transform_input: give the backbone backbone_kwargs "
            "{transform_input: true} (their features are 124 % off without it)"
        )

    def _forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        n = self.net
        c1 = n.conv1(n._transform_input(x))  # a no-op unless transform_input
        c2 = n.conv3(n.conv2(n.maxpool1(c1)))
        c3 = n.inception3b(n.inception3a(n.maxpool2(c2)))
        x = n.maxpool3(c3)
        c4 = n.inception4e(n.inception4d(n.inception4c(n.inception4b(n.inception4a(x)))))
        c5 = n.inception5b(n.inception5a(n.maxpool4(c4)))
        return [c1, c2, c3, c4, c5]


class MobileNetV3Backbone(Backbone):
    """torchvision MobileNetV3 (``large`` or ``small``); features at strides 2, 4, 8, 16, 32.

    Depthwise-separable blocks make it several times cheaper than ResNet-18 per image, the CPU detector's
    budget choice (torchvision's own ``fasterrcnn_mobilenet_v3_large_fpn`` sits on the same network).
    """

    torchvision_prefix = "net."
    # Index in ``features`` of the last block at each stride (2, 4, 8, 16, 32) and its width.
    _STAGE_ENDS: ClassVar[dict[str, tuple[list[int], list[int]]]] = {
        "large": ([1, 3, 6, 12, 16], [16, 24, 40, 112, 960]),
        "small": ([0, 1, 3, 8, 12], [16, 16, 24, 48, 576]),
    }

    def __init__(self, size: str = "large", in_channels: int = 3):
        super().__init__()
        builders = {
            "large": torchvision.models.mobilenet_v3_large,
            "small": torchvision.models.mobilenet_v3_small,
        }
        if size not in builders:
            raise ValueError(f"MobileNetV3 size must be one of {sorted(builders)}, got {size!r}")
        net = builders[size](weights=None)
        # torchvision builds it with BatchNorm momentum 0.01 (its ImageNet recipe: hundreds of epochs); on the
        # suite's short CPU runs the running statistics then lag the weights, and eval mode drifts from what
        # training learnt (160 steps on 8 own images: Mask R-CNN box AP50 0.0, with PyTorch's 0.1, as every
        # other CNN here: 1.0). Momentum is a training setting only: state dicts are unchanged
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = 0.1
        net.features[0][0] = _replace_first_conv(net.features[0][0], in_channels)
        net.avgpool = nn.Identity()
        net.classifier = nn.Identity()
        self.net = net
        self.in_channels = in_channels
        self._stage_ends, self.feature_channels = (list(v) for v in self._STAGE_ENDS[size])
        self.feature_strides = [2, 4, 8, 16, 32]

    def _forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i, layer in enumerate(self.net.features[: self._stage_ends[-1] + 1]):
            x = layer(x)
            if i in self._stage_ends:
                feats.append(x)
        return feats


class TinyCNN(Backbone):
    """Three strided conv stages (strides 2, 4, 8): a few thousand parameters, for tests and smoke runs."""

    def __init__(self, in_channels: int = 3, width: int = 8):
        super().__init__()
        chans = [width, width * 2, width * 4]
        stages, prev = [], in_channels
        for c in chans:
            stages.append(
                nn.Sequential(
                    nn.Conv2d(prev, c, 3, stride=2, padding=1, bias=False),
                    nn.BatchNorm2d(c),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(c, c, 3, padding=1, bias=False),
                    nn.BatchNorm2d(c),
                    nn.ReLU(inplace=True),
                )
            )
            prev = c
        self.stages = nn.ModuleList(stages)
        self.in_channels = in_channels
        self.feature_channels = chans
        self.feature_strides = [2, 4, 8]

    def _forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.run_stages(self.stages, x)


for _depth in (18, 34, 50):
    register_backbone(f"resnet{_depth}", "cnn")(
        lambda in_channels=3, _d=_depth: ResNetBackbone(depth=_d, in_channels=in_channels)
    )
for _depth in (11, 16, 19):
    register_backbone(f"vgg{_depth}", "cnn")(
        lambda in_channels=3, _d=_depth: VGGBackbone(depth=_d, in_channels=in_channels)
    )
register_backbone("alexnet", "cnn")(AlexNetBackbone)
register_backbone("googlenet", "cnn")(GoogLeNetBackbone)
for _size in ("large", "small"):
    register_backbone(f"mobilenet_v3_{_size}", "cnn")(
        lambda in_channels=3, _s=_size: MobileNetV3Backbone(size=_s, in_channels=in_channels)
    )
register_backbone("tiny_cnn", "cnn")(TinyCNN)
