"""Shipped weights: ``<name>.safetensors`` (the state dict of ``task.model``, fp16) beside ``<name>.json``, its
model card, which names the task class (``"module:Class"``) and the hyper-parameters that build it.

What :meth:`shared.task.BaseTask.load_checked` does with such a file, and what the demo's loader builds on
(``apps.demo_models`` adds only its page settings). Read as data only: tensors through safetensors and a JSON
card, nothing unpickled, no module outside the suite imported."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import torch

# shared.task (Lightning) is imported where it is used: the demo's pages import this module for its error class


class WeightFileError(ValueError):
    """A shipped weight file that does not match its model card (sha256, network, keys)."""


def card_path(path: str | Path) -> Path:
    """Where the model card of the weights at ``path`` is: beside it, ``.json`` for ``.safetensors``."""
    return Path(path).with_suffix(".json")


def has_card(path: str | Path) -> bool:
    """Whether ``path`` is shipped weights with a card (a backbone's bare ``.safetensors`` has none)."""
    path = Path(path)
    return path.suffix.lower() == ".safetensors" and card_path(path).is_file()


def read_card(path: str | Path, read: Callable[[Path], dict] | None = None) -> dict:
    """The model card beside the weights at ``path``, parsed by ``read`` (default: the JSON of the file; the
    demo passes its cached reader)."""
    card = card_path(path)
    try:
        parsed = read(card) if read else json.loads(card.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise WeightFileError(f"{card}: no readable model card for {Path(path).name} ({err})") from err
    if not isinstance(parsed, dict):
        raise WeightFileError(f"{card}: a model card is a JSON object, got {type(parsed).__name__}")
    return parsed


def card_task(card: dict) -> str | None:
    """The task class the card names, dotted as checkpoints record it (``domains.medical.task.X``)."""
    task = card.get("task")
    return str(task).replace(":", ".") if task else None


def check_card_task(card: dict, cls: type, source: str) -> None:
    """Refuse a card of another task than ``cls`` in the words used for a checkpoint of another task."""
    from shared.task import CheckpointMismatchError, _check_task

    task = card_task(card)
    if task is None:
        raise CheckpointMismatchError(
            f"{source}: its model card names no task (a 'task': 'module:Class' entry), so it cannot be "
            f"checked to hold a {cls.__module__}.{cls.__qualname__}"
        )
    network = (card.get("hyper_parameters") or {}).get("network") or {}
    model = str(network.get("class_path", "")).rpartition(".")[2] or None
    _check_task({"state_dict": {}, "suite_task": {"task": task, "model": model}}, cls, source=source)


def check_sha256(path: Path, data: bytes, card: dict, remedy: str | None = None) -> None:
    """The file's bytes ``data`` must be the ones the card describes (a changed or truncated file gives other
    figures); ``remedy``: what the error advises."""
    if "sha256" not in card:
        return
    digest = hashlib.sha256(data).hexdigest()
    if digest != card["sha256"]:
        raise WeightFileError(
            f"{path}: sha256 {digest[:12]}... does not match its model card ({card['sha256'][:12]}...): "
            f"the file was changed or truncated; {remedy or 'restore it (from git, or reinstall the suite)'}"
        )


def card_section(card: dict, section: str) -> dict:
    """The card's ``section`` (``operating_point``: the threshold fitted on the validation split, its rule and
    figures; ``settings``), empty where it has none."""
    part = card.get(section) or {}
    if not isinstance(part, dict):
        raise WeightFileError(f"model card {card.get('key', '')}: {section!r} is a JSON object, got {part!r}")
    return dict(part)


def card_number(card: dict, section: str, name: str) -> float | None:
    """``card[section][name]`` as a float, None where the card has none; a value that is no number is refused
    naming the entry."""
    value = card_section(card, section).get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise WeightFileError(f"model card {card.get('key', '')}: {section}.{name} is a number, got {value!r}")
    return float(value)


def build_from_card(cls: type, hyper_parameters: dict, settings: dict | None, source: str):
    """``cls`` built from a card's hyper-parameters and inference ``settings`` (no weights yet)."""
    try:
        return cls(**hyper_parameters, **(settings or {}))
    except (TypeError, ValueError, KeyError) as err:  # e.g. a backbone or model name the registry lacks
        raise WeightFileError(f"{source}: the model card describes a network this suite cannot build: {err}") from err


def load_into(task, path: Path, data: bytes, card: dict) -> None:
    """The file's tensors (its bytes ``data``) into ``task.model``, strictly; the fp16 values go into its fp32
    parameters (``load_state_dict`` copies across dtypes: no fp32 copy of the whole file first)."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        state = load(data)
    except SafetensorError as err:
        raise WeightFileError(f"{path}: not a readable safetensors file ({err})") from err
    try:
        task.model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise WeightFileError(f"{path} does not fit the {card.get('network', path.stem)} network: {err}") from err


def load_shipped(
    cls: type,
    path: str | Path,
    card: dict | None = None,
    map_location: str | torch.device | None = "cpu",
    remedy: str | None = None,
    **overrides,
):
    """Shipped weights at ``path`` as a ``cls`` task in eval mode: the card must name ``cls`` (read beside the
    file, it must name a task; one the caller gives is checked where it names one), the file must have the
    card's sha256; the task is built from the card's ``hyper_parameters`` (``overrides`` replace some, as
    ``load_from_checkpoint``'s keyword arguments do) and ``settings`` (inference choices a checkpoint does not
    store: the anomaly score and its smoothing), the tensors fill ``task.model`` strictly, and the task takes
    from the card what a checkpoint keeps beside ``task.model`` (``task.on_load_card``: a detector's fitted
    operating point, the smoothing of the anomaly fit's config). ``remedy``: what the sha256 error advises."""
    from shared.task import _check_class_paths, _check_network_layout

    path = Path(path)
    if map_location is not None and not isinstance(map_location, (str, torch.device)):
        raise TypeError(
            f"load_checked({path}): map_location for shipped weights is a device ('cpu', 'cuda:0'), got "
            f"{map_location!r}"
        )
    read_here = card is None
    card = read_card(path) if read_here else card
    if read_here or "task" in card:
        check_card_task(card, cls, source=str(path))
    try:
        data = path.read_bytes()  # read once: hashed, then its tensors loaded
    except OSError as err:
        raise WeightFileError(f"{path}: not a readable safetensors file ({err})") from err
    check_sha256(path, data, card, remedy)
    hyper_parameters = {**(card.get("hyper_parameters") or {}), **overrides}
    # an override of a card setting (score_smoothing=0) replaces it: passed twice, the build raised TypeError
    settings = {k: v for k, v in card_section(card, "settings").items() if k not in overrides}
    # as for a checkpoint: no class outside the suite is imported (building the network would import it)
    _check_class_paths({"hyper_parameters": hyper_parameters}, source=str(card_path(path)))
    _check_network_layout({"hyper_parameters": hyper_parameters}, cls, source=str(card_path(path)))
    task = build_from_card(cls, hyper_parameters, settings, source=str(card_path(path)))
    load_into(task, path, data, card)
    task.on_load_card(card, given=tuple(overrides))  # what a checkpoint keeps beside task.model
    if map_location is not None:
        task.to(map_location)
    return task.eval()


__all__ = [
    "WeightFileError",
    "build_from_card",
    "card_number",
    "card_path",
    "card_section",
    "card_task",
    "check_card_task",
    "check_sha256",
    "has_card",
    "load_into",
    "load_shipped",
    "read_card",
]
