"""The one feature interface every backbone shares, and the one registry that builds them."""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable, Iterable, Sequence
from itertools import pairwise

import torch
from torch import nn

#: the RGB statistics the torchvision weights were trained with; every network that normalises its RGB input
#: uses them (transferred weights expect them, and from-scratch training does not mind)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Backbone(nn.Module):
    """A feature extractor: ``forward_features(x)`` returns feature maps, finest first.

    Subclasses set ``in_channels``, ``feature_channels`` and ``feature_strides`` (one entry per returned map,
    finest first: strides strictly ascending) and implement ``_forward_features``. Decoders, FPNs and heads are
    built from these declarations, so a backbone can be swapped by name without touching the model that sits on
    it. They are checked: :func:`create_backbone` checks the declaration once per construction, and
    ``forward_features`` checks the returned maps against it (their number, channels, and sizes: each within
    one pixel of input size / stride, so floor or ceil rounding at odd sizes passes) whenever the input size
    differs from the last one checked; a mismatch is a ValueError naming the class and its declaration. Nothing
    is checked under ``torch.compile``, ``torch.export`` or tracing (ONNX export).
    """

    in_channels: int
    feature_channels: list[int]
    feature_strides: list[int]
    #: Prefix under which a torchvision state dict's keys live in this module (for transfer learning).
    torchvision_prefix: str = ""
    #: Sub-modules of the suite's own that no file of the source network holds (the ViT's feature pyramid on a
    #: torchvision ViT): a frozen backbone keeps them training, and a file without them leaves no gap.
    adapter_layers: tuple[str, ...] = ()
    #: The smallest input height and width ``forward_features`` takes (pools and strided layers leave no pixel
    #: below it): a smaller input is a ValueError naming it, not torch's bare "Output size is too small".
    min_input_size: int = 1

    def is_adapter_key(self, key: str) -> bool:
        """Whether the state-dict ``key`` belongs to one of ``adapter_layers``."""
        return key.split(".", 1)[0] in self.adapter_layers

    def adapter_modules(self) -> list[nn.Module]:
        return [getattr(self, name) for name in self.adapter_layers]

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
        # checked once per input size (the last one checked is remembered): a few integer comparisons per map,
        # skipped for the following calls of a fixed-size training run; not inside a compiled or traced graph
        size = x.shape[-2:]
        checking = not (torch.compiler.is_compiling() or torch.jit.is_tracing()) and (
            self.__dict__.get("_features_checked_for") != size
        )
        if checking and (problem := self.input_size_problem(int(size[0]), int(size[1]))):
            raise ValueError(
                f"{type(self).__name__} takes {problem}, got an input of {size[0]}x{size[1]} (shape "
                f"{tuple(x.shape)}): resize or pad the input"
            )
        feats = self._forward_features(x)
        if checking:
            check_features(self, feats, size)
            self.__dict__["_features_checked_for"] = size
        return feats

    def input_size_problem(self, height: int, width: int) -> str | None:
        """What inputs this backbone takes, if an input of ``height`` x ``width`` is too small for it (checked
        before it runs, once per input size); None when it is large enough. ``min_input_size`` here."""
        low = self.min_input_size
        return f"inputs of at least {low}x{low} pixels" if min(height, width) < low else None

    def _forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError(_MISSING_FORWARD.format(cls=type(self).__name__))

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


_MISSING_FORWARD = (
    "{cls} does not implement _forward_features(x): a Backbone's _forward_features returns a list of feature "
    "maps, finest first, one per entry of feature_channels / feature_strides, map i of shape (B, "
    "feature_channels[i], about H / feature_strides[i], about W / feature_strides[i])"
)


def _declaration(net: nn.Module) -> str:
    return (
        f"feature_channels={getattr(net, 'feature_channels', '(not set)')}, "
        f"feature_strides={getattr(net, 'feature_strides', '(not set)')}"
    )


def check_declaration(net: nn.Module) -> None:
    """Raise a ValueError naming the backbone's class unless it declares ``in_channels``, ``feature_channels``
    and ``feature_strides`` (positive integers, one channel count and one stride per map, strides strictly
    ascending: finest first)."""
    cls = type(net).__name__
    for attr in ("in_channels", "feature_channels", "feature_strides"):
        if not hasattr(net, attr):
            raise ValueError(
                f"backbone {cls} does not set {attr}: a Backbone sets in_channels, feature_channels and "
                f"feature_strides (one entry per feature map, finest first) in its __init__ ({_declaration(net)})"
            )
    for attr in ("feature_channels", "feature_strides"):
        values = getattr(net, attr)
        if (
            not isinstance(values, Sequence)
            or not values
            or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0 for v in values)
        ):
            raise ValueError(
                f"backbone {cls}: {attr} must be a non-empty list of positive integers, one per feature map, "
                f"got {values!r}"
            )
    channels, strides = net.feature_channels, net.feature_strides
    if len(channels) != len(strides):
        raise ValueError(
            f"backbone {cls} declares {len(channels)} feature_channels but {len(strides)} feature_strides "
            f"({_declaration(net)}): one of each per feature map"
        )
    if any(a >= b for a, b in pairwise(strides)):
        raise ValueError(
            f"backbone {cls} declares feature_strides={list(strides)}: they must be strictly ascending, the "
            f"maps finest first ({_declaration(net)}); return the maps in that order and declare them so"
        )


def check_features(net: nn.Module, feats, size: Sequence[int]) -> None:
    """Raise a ValueError naming the backbone's class and its declaration unless ``feats``, its
    ``forward_features`` output for an input of spatial ``size``, is one map per declared entry with the
    declared channels, each map's side within one pixel of the input's side / the declared stride (floor or
    ceil rounding at odd sizes)."""
    check_declaration(net)
    h, w = int(size[0]), int(size[1])
    cls = type(net).__name__

    def fail(problem: str) -> ValueError:
        shapes = (
            [tuple(f.shape[1:]) if isinstance(f, torch.Tensor) else type(f).__name__ for f in feats]
            if isinstance(feats, (list, tuple))
            else type(feats).__name__
        )
        return ValueError(
            f"backbone {cls} declares {_declaration(net)} (finest first), but for a {h}x{w} input its "
            f"forward_features returned {shapes} ((C, H, W) per map): {problem}"
        )

    if not isinstance(feats, (list, tuple)):
        raise fail("it must return a list of feature maps")
    channels, strides = net.feature_channels, net.feature_strides
    if len(feats) != len(channels):
        raise fail(f"{len(feats)} maps, {len(channels)} declared")
    for i, (f, c, s) in enumerate(zip(feats, channels, strides)):
        if not isinstance(f, torch.Tensor) or f.ndim != 4:
            raise fail(f"map {i} is not a (B, C, H, W) tensor")
        if f.shape[1] != c:
            raise fail(f"map {i} has {f.shape[1]} channels, declared {c}")
        fh, fw = f.shape[-2], f.shape[-1]
        if abs(fh * s - h) > s or abs(fw * s - w) > s:  # |map side - input side / stride| > 1
            raise fail(
                f"map {i} is {fh}x{fw}, which is not a {h}x{w} input at the declared stride {s} (its stride is "
                f"about {h / max(fh, 1):.3g}; {_expected_side(h, s)}x{_expected_side(w, s)} expected)"
            )


def _expected_side(side: int, stride: int) -> str:
    """A map side at ``stride``: ``"9"``, or ``"8 or 9"`` where floor and ceil rounding differ."""
    low, high = side // stride, -(-side // stride)
    return str(low) if low == high else f"({low} or {high})"


_REGISTRY: dict[str, tuple[Callable[..., Backbone], str]] = {}


def _qualified(factory: Callable) -> str:
    return f"{getattr(factory, '__module__', '?')}.{getattr(factory, '__qualname__', type(factory).__name__)}"


def _takes_in_channels(factory: Callable) -> bool:
    """Whether ``factory(in_channels=...)`` binds (an ``in_channels`` argument or ``**kwargs``); True when its
    signature cannot be read."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(
        p.kind is p.VAR_KEYWORD or (p.name == "in_channels" and p.kind is not p.POSITIONAL_ONLY)
        for p in parameters
    )


def register_backbone(name: str, family: str) -> Callable:
    """Decorator adding a backbone factory (a class or function returning a ``Backbone``) to the registry.

    The factory is called as ``factory(in_channels=..., **backbone_kwargs)``, so it must take ``in_channels``.
    ``family`` groups backbones for :func:`list_backbones` (the suite's: "cnn", "transformer", "unet")."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"register_backbone: the name must be a non-empty string, got {name!r}")
    if not isinstance(family, str) or not family:
        raise ValueError(f"register_backbone({name!r}): family must be a non-empty string, got {family!r}")

    def wrap(factory: Callable[..., Backbone]) -> Callable[..., Backbone]:
        if not callable(factory):
            raise TypeError(
                f"register_backbone({name!r}) decorates a class or function that builds the backbone, got "
                f"{factory!r}"
            )
        if not _takes_in_channels(factory):
            raise TypeError(
                f"register_backbone({name!r}): {_qualified(factory)} must accept in_channels: create_backbone "
                f"calls it as factory(in_channels=..., **backbone_kwargs); add an argument in_channels: int = 3 "
                "(and set self.in_channels = in_channels)"
            )
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
            f"unknown backbone {name!r}; available backbones: {', '.join(list_backbones())}. A backbone of your "
            "own is registered when its module is imported: define there a subclass of the task's network and "
            "name it in the config's class_path (--model.network mybb.MyClassifier, a subclass of the "
            "classifier's ImageClassifier, registers the backbones of mybb.py), or import the module first"
        )
    # NumPy's integers are integers (a count read from an array); a bool is not a channel count
    if not isinstance(in_channels, numbers.Integral) or isinstance(in_channels, bool) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive integer, got {in_channels!r}")
    in_channels = int(in_channels)
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
    net = factory(in_channels=in_channels, **kwargs)
    _check_built(name, net, in_channels)
    return net


def _check_built(name: str, net, in_channels: int) -> None:
    """What ``create_backbone`` checks once per construction: a module with ``forward_features``, its
    declaration (:func:`check_declaration`) and the input channels it was asked for."""
    if not isinstance(net, nn.Module) or not callable(getattr(net, "forward_features", None)):
        raise TypeError(
            f"backbone {name!r}: its factory returned {type(net).__name__}, not a Backbone (an nn.Module with "
            "forward_features)"
        )
    cls = type(net)
    if (
        isinstance(net, Backbone)
        and cls._forward_features is Backbone._forward_features
        and cls.forward_features is Backbone.forward_features
    ):
        raise NotImplementedError(_MISSING_FORWARD.format(cls=cls.__name__))
    check_declaration(net)
    if net.in_channels != in_channels:
        raise ValueError(
            f"backbone {name!r} ({cls.__name__}) was asked for in_channels={in_channels} but sets "
            f"in_channels={net.in_channels}: its factory must build the first layer for in_channels and set "
            "self.in_channels = in_channels"
        )
