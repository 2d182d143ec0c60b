"""How a task is given its network: ``model.network`` as ``class_path`` + ``init_args`` (LightningCLI's form).

Why that form (and not a registry name + a ``kwargs`` dict): jsonargparse checks ``init_args`` against the
network class's own signature and types, ``--help`` lists them (``--model.network.help RoadDetector``), and
one syntax serves every task, the optimiser and the schedule alike. The backbones inside a network stay
registry names (``shared.backbones``), because they are swapped by name far more often than configured.

A checkpoint must rebuild the network without running code (``weights_only``), so the task saves it as that
same ``class_path`` + ``init_args`` dictionary. Torch modules do not keep their constructor arguments, hence the
hand-written :class:`RemembersInitArgs`.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import sys

from torch import nn

# Modules a checkpoint's class_path may name (nothing else is imported from a checkpoint).
TRUSTED_PACKAGES = ("domains.", "shared.")


class RemembersInitArgs:
    """Mixin for plain networks: the arguments their outermost ``__init__`` was called with, defaults filled
    in, as ``self.init_args`` (a subclass that defines its own ``__init__`` records its own)."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        original = cls.__dict__.get("__init__")
        if original is None:
            return
        signature = inspect.signature(original)

        @functools.wraps(original)
        def init(self, *args, **kw):
            original(self, *args, **kw)
            if type(self).__init__ is init:
                bound = signature.bind(self, *args, **kw)
                bound.apply_defaults()
                values = dict(bound.arguments)
                values.pop(next(iter(signature.parameters)))  # self
                for name, param in signature.parameters.items():
                    if param.kind is param.VAR_KEYWORD:
                        values.update(values.pop(name, {}))
                self.init_args = values

        cls.__init__ = init


def network_spec(network: nn.Module) -> dict:
    """``{"class_path", "init_args"}`` that rebuilds ``network``'s architecture (not its weights)."""
    init_args = getattr(network, "init_args", None)
    if init_args is None:
        raise TypeError(
            f"{type(network).__qualname__} does not remember its arguments: derive it from "
            "shared.networks.RemembersInitArgs so a checkpoint can rebuild it"
        )
    return {
        "class_path": f"{type(network).__module__}.{type(network).__qualname__}",
        "init_args": dict(init_args),
    }


def is_trusted(class_path: str) -> bool:
    """Whether a checkpoint's ``class_path`` may be imported: its module is in :data:`TRUSTED_PACKAGES` or
    already imported (a model of one's own, imported by the user's code); importing anything else runs its code."""
    module_name = class_path.rpartition(".")[0]
    return bool(module_name) and (module_name.startswith(TRUSTED_PACKAGES) or module_name in sys.modules)


def build_network(network: nn.Module | dict, base: type | tuple[type, ...]):
    """``network`` itself, or the network a ``class_path`` + ``init_args`` dictionary (a checkpoint's) names.

    The class must live in the suite's own packages and be a ``base``; anything else is refused, naming
    ``model.network``, so a checkpoint cannot make us import arbitrary code.
    """
    bases = base if isinstance(base, tuple) else (base,)
    names = " | ".join(b.__qualname__ for b in bases)
    if isinstance(network, nn.Module):
        if not isinstance(network, bases):
            raise TypeError(f"model.network: expected a {names}, got {type(network).__qualname__}")
        return network
    if not isinstance(network, dict) or "class_path" not in network:
        raise TypeError(
            f"model.network: expected a {names} or a class_path / init_args mapping, got {network!r}"
        )
    class_path = str(network["class_path"])
    if not is_trusted(class_path):
        raise TypeError(f"model.network: class_path {class_path!r} is outside {', '.join(TRUSTED_PACKAGES)}")
    module_name, _, class_name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, bases)):
        raise TypeError(f"model.network: class_path {class_path!r} is not a {names}")
    return cls(**dict(network.get("init_args") or {}))
