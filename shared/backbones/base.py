"""The one feature interface every backbone shares, and the one registry that builds them."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable

import torch
from torch import nn

#: the RGB statistics the torchvision weights were trained with; every network that normalises its RGB input
#: uses them (transferred weights expect them, and from-scratch training does not mind)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Backbone(nn.Module):
    """A feature extractor: ``forward_features(x)`` returns feature maps, finest first.

    Subclasses set ``in_channels``, ``feature_channels`` and ``feature_strides`` (one entry per returned map)
    and implement ``_forward_features``. Decoders, FPNs and heads are built from these declarations, so a
    backbone can be swapped by name without touching the model that sits on it.
    """

    in_channels: int
    feature_channels: list[int]
    feature_strides: list[int]
    #: Prefix under which a torchvision state dict's keys live in this module (for transfer learning).
    torchvision_prefix: str = ""

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.ndim != 4:
            raise ValueError(
                f"{type(self).__name__} expects a 4D batch (B, C, H, W), got shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"{type(self).__name__} was built for in_channels={self.in_channels} but got an input with "
                f"{x.shape[1]} channels (shape {tuple(x.shape)}); build it with "
                f"create_backbone(..., in_channels={x.shape[1]}) or convert the input"
            )
        return self._forward_features(x)

    def _forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def adapt_loaded(self, name: str, value: torch.Tensor) -> torch.Tensor | None:
        """A weight file's tensor ``name`` of another shape made to fit this backbone (a ViT's position grid),
        or None: it does not fit (:func:`~shared.backbones.weights.load_backbone_weights`)."""
        return None

    def torchvision_weights_loaded(self) -> str | None:
        """What to say once a torchvision state dict is loaded (GoogLeNet's input transform), or None."""
        return None

    @staticmethod
    def run_stages(stages: Iterable[nn.Module], x: torch.Tensor) -> list[torch.Tensor]:
        """``stages`` applied in turn to ``x``, each one's output a feature map: the ``_forward_features`` of
        a plain encoder that is a sequence of stages."""
        feats = []
        for stage in stages:
            x = stage(x)
            feats.append(x)
        return feats

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_features(x)


_REGISTRY: dict[str, tuple[Callable[..., Backbone], str]] = {}


def _qualified(factory: Callable) -> str:
    return f"{factory.__module__}.{factory.__qualname__}"


def register_backbone(name: str, family: str) -> Callable:
    """Decorator adding a backbone factory (a class or function returning a ``Backbone``) to the registry."""

    def wrap(factory: Callable[..., Backbone]) -> Callable[..., Backbone]:
        held = _REGISTRY.get(name, (None,))[0]
        # the same factory again (its module reloaded, a notebook cell run twice) replaces itself
        if held is not None and _qualified(held) != _qualified(factory):
            raise ValueError(f"backbone {name!r} is registered twice: {_qualified(held)} and {_qualified(factory)}")
        _REGISTRY[name] = (factory, family)
        return factory

    return wrap


def list_backbones(family: str | None = None) -> list[str]:
    """Registered backbone names, optionally of one family ("cnn", "transformer", "unet"); a family no backbone
    has is an error naming those there are (``"CNN"`` gave an empty list)."""
    families = sorted({fam for _, fam in _REGISTRY.values()})
    if family is not None and family not in families:
        raise ValueError(f"unknown backbone family {family!r}; the families are {', '.join(families)}")
    return sorted(n for n, (_, fam) in _REGISTRY.items() if family is None or fam == family)


class UnknownBackboneError(ValueError, KeyError):
    """A backbone name the registry does not hold. A ValueError (bad input: the CLI prints it in one line) and,
    as before, a KeyError; its message reads as written (a KeyError's alone is printed quoted)."""

    __str__ = Exception.__str__


def create_backbone(name: str, in_channels: int = 3, **kwargs) -> Backbone:
    """Build a registered backbone by name. Unknown names raise an error listing the available ones."""
    if name not in _REGISTRY:
        raise UnknownBackboneError(
            f"unknown backbone {name!r}; available backbones: {', '.join(list_backbones())}"
        )
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive integer, got {in_channels!r}")
    if kwargs.get("pretrained") or kwargs.get("weights"):  # torchvision's / timm's way: a download
        raise ValueError(
            f"create_backbone({name!r}): weights are not downloaded here; build it, then "
            "load_backbone_weights(net, '/path/to/weights.pth') from a local file"
        )
    factory, _ = _REGISTRY[name]
    parameters = inspect.signature(factory).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        # (a leading underscore: a default bound in a registration lambda, no option)
        accepted = [n for n in parameters if n != "in_channels" and not n.startswith("_")]
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:  # said as bad input (backbone_kwargs in a config), not a TypeError deep in the factory
            raise ValueError(
                f"backbone {name!r} takes no option {', '.join(map(repr, unknown))} (backbone_kwargs); "
                f"its options: {', '.join(accepted) or 'none'}"
            )
    return factory(in_channels=in_channels, **kwargs)
