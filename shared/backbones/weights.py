"""Transfer learning from local weight files: load by key prefix, report mismatches by name, freeze (the
Lightning callback that unfreezes on a schedule lives in :mod:`shared.backbones.finetuning`).

Nothing here downloads: ImageNet weights are used only from a path the user gives (e.g. a torchvision
``resnet18-f37072fd.pth`` copied onto the machine).
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from shared.cli_help import SUITE_ROOT, suite_file

from .base import Backbone


class WeightLoadingError(RuntimeError):
    """Raised when a weight file cannot be used for the module it is loaded into."""


class PartialLoadWarning(UserWarning):
    """Part of a weight file was loaded: some of its tensors differ in shape from the module's, or have no place in
    it (another network's file: a ResNet-50 file in a ResNet-18 left 23 convolutions at their initial values)."""


class NothingLoadedError(WeightLoadingError):
    """No tensor of the file fits the module (another network's file, or a checkpoint read without the prefix of
    its backbone's part); ``report`` says what each key met."""

    def __init__(self, message: str, report: LoadReport):
        super().__init__(message)
        self.report = report


@dataclass
class LoadReport:
    """What happened when weights were loaded: every key that did not load cleanly, by name."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatch: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    head: list[str] = field(default_factory=list)  # the file's classifier head: a backbone has none
    #: the module's own layers that no file of the source network holds (:meth:`Backbone.is_adapter_key`: the
    #: ViT's feature pyramid on a torchvision ViT): not missing, they train from scratch
    adapters: list[str] = field(default_factory=list)
    #: of ``missing``, those inside a part of the module the file filled in part (:func:`_missing_in_part`)
    missing_in_part: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the backbone says of the file (GoogLeNet's input)

    @property
    def clean(self) -> bool:
        return not (self.missing or self.unexpected or self.shape_mismatch)

    def summary(self, limit: int = 10) -> str:
        parts = [f"{len(self.loaded)} tensors loaded", *self.notes]
        for label, keys in (
            ("of the file's classifier head left out", self.head),
            ("adapted to this backbone (input channels, position grid)", self.adapted),
            ("adapters, trained from scratch", self.adapters),
            ("missing in the file", self.missing),
            ("unexpected in the file", self.unexpected),
            ("shape mismatch", self.shape_mismatch),
        ):
            if keys:
                shown = ", ".join(keys[:limit]) + (
                    f", ... (+{len(keys) - limit})" if len(keys) > limit else ""
                )
                parts.append(f"{len(keys)} {label}: {shown}")
        return "; ".join(parts)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from a torchvision ``.pth`` or a Lightning ``.ckpt`` with ``weights_only=True``, or from
    a ``.safetensors`` file (the demo's shipped weights: tensors only; fp16 ones come back as float32). A
    relative path not under the working directory is also looked for under the suite's folder
    (:func:`shared.cli_help.suite_file`: ``apps/weights/...`` as the shipped configs name it).
    """
    path = Path(path).expanduser()
    path = suite_file(path, "weight file") or path
    if path.is_dir():
        raise IsADirectoryError(f"weight file {path} is a folder: give the .pth / .ckpt / .safetensors file in it")
    if not path.is_file():
        tried = f"under the working directory {Path.cwd()} and under the suite's folder {SUITE_ROOT}"
        where = "" if path.is_absolute() else f" (looked for {tried})"
        raise FileNotFoundError(f"weight file not found: {path}{where}")
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            obj = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
        except (SafetensorError, OSError) as err:
            if _is_torch_file(path):  # "header too large": a zip's first bytes read as a header length
                raise WeightLoadingError(
                    f"{path}: this is a torch file (written by torch.save) named .safetensors: rename it to "
                    ".pth"
                ) from err
            raise WeightLoadingError(f"{path}: not a readable safetensors file ({err})") from err
    else:
        obj = _torch_load(path)
    state = None
    if isinstance(obj, dict):  # Lightning's "state_dict", a training script's {"model": ..., "optimizer": ...}
        inner = [obj[k] for k in ("state_dict", "model", "model_state_dict") if isinstance(obj.get(k), dict)]
        state = inner[0] if inner else obj
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightLoadingError(
            f"{path}: holds no state dict of tensors (top-level keys: {list(obj)[:8] if isinstance(obj, dict) else type(obj).__name__})"
        )
    return state


def _under_prefix(
    path: Path, prefix: str, module: Backbone
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The file's tensors under ``prefix`` (a checkpoint's sub-module, e.g. ``"model.backbone."``), the prefix
    stripped, and the whole file's; none there is :class:`NothingLoadedError` naming the prefix that would fit
    ``module`` (a checkpoint's ``model.backbone.`` given as ``backbone.``, none for a torchvision file)."""
    whole = read_state_dict(path)
    source = {k[len(prefix) :]: v for k, v in whole.items() if k.startswith(prefix)}
    if not source:
        report = LoadReport()
        target, tv_prefix = module.state_dict(), getattr(module, "torchvision_prefix", "")
        if hint := _prefix_hint(whole, target, tv_prefix, prefix):
            report.notes.append(hint)
        raise NothingLoadedError(f"{path}: no key starts with the prefix {prefix!r}: {report.summary()}", report)
    return source, whole


def _is_torch_file(path: Path) -> bool:
    """Whether ``path`` starts as torch.save's files do: a zip archive, or a pickle (the legacy format)."""
    with path.open("rb") as file:
        head = file.read(9)
    return head.startswith((b"PK", b"\x80")) and not _is_safetensors(head)


def _is_safetensors(head: bytes) -> bool:
    """Whether a file's first bytes start a safetensors file: an 8-byte little-endian header length (under
    100 MB, as safetensors requires), then the header's JSON ``{``."""
    return len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000


def _torch_load(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors, truncated files, non-torch files
        raise WeightLoadingError(f"{path}: {_not_weights(path, err)}") from err


#: the start of files often given by mistake, and what they are
_MAGIC = {
    b"\x89HDF": "an HDF5 file (Keras / TensorFlow .h5 weights?)",
    b"\x93NUMPY": "a NumPy .npy array",
    b"\x1f\x8b": "a gzip archive (unpack it first)",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
}
_READ = "a state dict saved with torch.save (.pth / .pt / .ckpt) or a .safetensors file is read"


def pickled_global(message: str) -> str | None:
    """The Python object a weights-only ``torch.load`` refused to unpickle, from its error message (torch words it
    "GLOBAL x.Y was not an allowed global" or, for a blocked module, "unsupported GLOBAL x.y whose module ...")."""
    found = re.search(r"GLOBAL (\S+) (?:was not an allowed global|whose module)", message)
    return found[1] if found else None


def load_failure_cause(err: Exception) -> str:
    """``Type: first sentence`` of why ``torch.load`` failed, without the advice torch puts first for a
    weights-only refusal (load with ``weights_only=False``, which would run the file's code; file an issue)."""
    message = str(err).partition("WeightsUnpickler error:")[2].strip() or str(err)
    if message.startswith("Weights only load failed"):  # its cause follows the advice, after a blank line
        message = next((part.strip() for part in message.split("\n\n")[1:] if part.strip()), "")
    message = re.sub(r"^\[enforce fail at [^\]]*\][\s.]*", "", message)  # torch's C++ location
    first = re.split(r"\.\s|\n", message)[0]  # the first sentence
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def _not_weights(path: Path, err: Exception) -> str:
    """What ``path`` is, since ``torch.load(weights_only=True)`` refused it, and the cause in short. torch's own
    message says to load again with ``weights_only=False``, which runs any code the file holds, and to file an
    issue: neither helps with a file that is no weights file."""
    if found := pickled_global(str(err)):
        return (
            f"holds pickled Python objects ({found}), not a state dict of tensors: a whole pickled model? Save "
            "model.state_dict() instead (torch.save(model.state_dict(), path)); weights are read without running "
            "a file's code"
        )
    what = describe_file(path, load_failure_cause(err))
    if what.startswith("a safetensors file"):
        named = f"named {path.suffix}" if path.suffix else "without a suffix"
        return f"this is a safetensors file {named}: rename it to .safetensors"
    return f"not a PyTorch weights file: {what}; {_READ}"


def describe_file(path: Path, cause: str | None = None) -> str:
    """What a file that torch could not read is, from its first bytes: ``an empty file``, ``a text file (it
    starts '...')``, ``a zip archive, truncated or not written by torch.save``, ... ``cause`` (torch's error in
    short) is added where the start alone does not tell; without it (a checkpoint, refused before torch reads it
    for not being a zip archive) a pickle is taken for torch.save's legacy format. Shared by the weights' and the
    checkpoints' errors."""
    with path.open("rb") as file:  # one torch could not read for want of permission raises that here
        head = file.read(256)
    because = f" ({cause})" if cause else ""
    if not head:
        return "an empty file"
    if _is_safetensors(head):
        return "a safetensors file (tensors only)"
    if kind := next((kind for magic, kind in _MAGIC.items() if head.startswith(magic)), None):
        return kind
    if (text := _text_start(head)) is not None:
        return f"a text file (it starts {text!r})"
    if head.startswith(b"PK"):
        return f"a zip archive, truncated or not written by torch.save{because}"
    if head.startswith(b"\x80"):  # pickle's PROTO opcode
        if cause:
            return f"a Python pickle, truncated or not written by torch.save{because}"
        return "a Python pickle (torch.save's legacy format before its zip archives, or truncated)"
    return f"in an unknown format{because}"


def _text_start(head: bytes, shown: int = 40) -> str | None:
    """The first line of ``head`` (a file's first bytes) if they are UTF-8 text, else None."""
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as err:  # a character cut at the end of head is still text
        if err.start < len(head) - 3:
            return None
        text = head[: err.start].decode("utf-8")
    if not all(char.isprintable() or char in "\t\r\n" for char in text):
        return None
    line = text.strip().split("\n")[0].strip()
    return line if len(line) <= shown else line[:shown] + "..."


#: key prefixes of the classifier heads of torchvision's ImageNet files (ResNet / GoogLeNet ``fc`` and ``aux1/2``,
#: VGG / AlexNet / MobileNet ``classifier``, ViT ``heads``): left out of a backbone, not a sign of a wrong file
HEAD_PREFIXES = ("fc.", "classifier.", "heads.", "head.", "aux1.", "aux2.")


def _adapt_input_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    # timm's recipe: sum the RGB filters for 1 channel (a grey image's response equals the RGB one's), tile and
    # rescale for more, so activations keep their scale.
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = -(-in_channels // weight.shape[1])
    return weight.repeat(1, repeats, 1, 1)[:, :in_channels] * (weight.shape[1] / in_channels)


def load_backbone_weights(
    module: Backbone, path: str | Path, prefix: str = "", strict: bool = False, warn_partial: bool = True
) -> LoadReport:
    """Load weights from a local file into ``module`` and report every key that did not load, by name.

    Source keys are matched as they are, or under the module's ``torchvision_prefix`` (so a plain torchvision
    state dict loads into the suite's wrappers). An RGB first-conv weight is adapted to a backbone with another
    number of input channels. Shape mismatches are never loaded; with ``strict=True`` any problem is an error.
    Otherwise a file some of whose tensors differ in shape or have no place in the module (another network's
    file) loads the rest with one :class:`PartialLoadWarning` (counts and the first names); ``warn_partial=False``
    loads such a file on purpose without it; so does one that leaves tensors missing inside a part of the module it
    fills (a shallower network's file: :func:`_missing_in_part`). A part the file has nothing for (a decoder a
    torchvision file has no weights for) and the file's classifier head are no reason to warn: the report lists
    them.
    """
    source, whole = _under_prefix(Path(path), prefix, module)
    target = module.state_dict()
    tv_prefix = getattr(module, "torchvision_prefix", "")
    adapt_loaded = getattr(module, "adapt_loaded", lambda name, value: None)  # a plain nn.Module has none
    report, to_load = LoadReport(), {}
    for key, value in source.items():
        name = key if key in target else (tv_prefix + key if tv_prefix + key in target else None)
        if name is None:
            (report.head if key.startswith(HEAD_PREFIXES) else report.unexpected).append(key)
            continue
        expected = target[name].shape
        if value.shape != expected:
            is_input_conv = (
                value.ndim == 4 and value.shape[0] == expected[0] and value.shape[2:] == expected[2:]
            )
            if is_input_conv and value.shape[1] == 3 and expected[1] == _input_channels(module):
                value = _adapt_input_conv(value, expected[1])
                report.adapted.append(name)
            elif (adapted := adapt_loaded(name, value)) is not None and adapted.shape == expected:
                value = adapted
                report.adapted.append(name)
            else:
                report.shape_mismatch.append(f"{name} (file {tuple(value.shape)}, model {tuple(expected)})")
                continue
        to_load[name] = value
    report.missing = [k for k in target if k not in to_load and not k.endswith("num_batches_tracked")]
    report.missing = [
        k for k in report.missing if not any(m.startswith(k + " ") for m in report.shape_mismatch)
    ]
    is_adapter_key = getattr(module, "is_adapter_key", lambda key: False)
    report.adapters = [k for k in report.missing if is_adapter_key(k)]  # in no file: no gap (strict too)
    report.missing = [k for k in report.missing if not is_adapter_key(k)]
    report.loaded = sorted(to_load)  # before the check: its message counts what would have loaded
    report.missing_in_part = _missing_in_part(report.missing, report.loaded, tv_prefix)
    # nothing changes (batch norms' step counters aside): training would start from the random weights the file
    # was to replace
    if all(name.endswith("num_batches_tracked") for name in to_load):
        report.loaded = []  # none is: the module is left as it was
        if hint := _prefix_hint(whole, target, tv_prefix, prefix):
            report.notes.append(hint)
        raise NothingLoadedError(
            f"{path}: no tensor of the file fits {type(module).__name__}: {report.summary(limit=3)}", report
        )
    if strict and not report.clean:
        raise WeightLoadingError(f"{path}: weights do not match {type(module).__name__}: {report.summary()}")
    module.load_state_dict(to_load, strict=False)
    if warn_partial and (report.shape_mismatch or report.unexpected or report.missing_in_part):
        warnings.warn(_partial_message(path, module, report), PartialLoadWarning, stacklevel=2)
    from_torchvision = tv_prefix and any(key not in target for key in source if tv_prefix + key in to_load)
    if from_torchvision and (note := module.torchvision_weights_loaded()):
        report.notes.append(note)
        warnings.warn(f"{path}: {note}", UserWarning, stacklevel=2)
    return report


def _input_channels(module: nn.Module) -> int | None:
    """The input channels of ``module``: a backbone's ``in_channels``, else its first convolution's (a plain
    torchvision network's)."""
    channels = getattr(module, "in_channels", None)
    if isinstance(channels, int):
        return channels
    return next((m.in_channels for m in module.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)


def _missing_in_part(missing: list[str], loaded: list[str], tv_prefix: str = "") -> list[str]:
    """The ``missing`` keys inside a sub-module (any but the whole module, nor the torchvision wrapper's ``net``)
    that the file filled in part: a shallower network of the family's file (a ResNet-18 file in a
    ResNet-34 left the 80 tensors of its extra blocks at their initial values, said by nothing). A part the
    file has nothing for (a U-Net's decoder under a torchvision encoder) is no sign of a wrong file."""

    def parts(key: str) -> list[str]:
        inner = key[len(tv_prefix) :] if tv_prefix and key.startswith(tv_prefix) else key
        names = inner.split(".")[:-1]  # the modules holding the tensor, outermost first
        return [tv_prefix + ".".join(names[: i + 1]) for i in range(len(names))]

    filled = {part for key in loaded for part in parts(key)}
    return [key for key in missing if any(part in filled for part in parts(key))]


def _partial_message(path, module: nn.Module, report: LoadReport, shown: int = 3) -> str:
    parts, name = [], type(module).__name__
    for label, keys in (("differ in shape", report.shape_mismatch), (f"have no place in {name}", report.unexpected)):
        if keys:
            more = f", ... (+{len(keys) - shown})" if len(keys) > shown else ""
            parts.append(f"{len(keys)} of the file's tensors {label} ({', '.join(keys[:shown])}{more})")
    if keys := report.missing_in_part:
        more = f", ... (+{len(keys) - shown})" if len(keys) > shown else ""
        parts.append(f"{len(keys)} of {name}'s tensors are missing among those it filled ({', '.join(keys[:shown])}{more})")
    kept = len(report.missing) + len(report.shape_mismatch)
    if kept:
        parts.append(f"{kept} of {name}'s tensors keep their initial values")
    return (
        f"{path}: loaded in part, as another network's file would be: {len(report.loaded)} tensors loaded; "
        f"{'; '.join(parts)}. Give a file of this backbone (strict=True refuses any other), or pass "
        "warn_partial=False to load the part that fits on purpose"
    )


def _prefix_hint(whole: dict, target: dict, tv_prefix: str, given: str) -> str | None:
    """The ``prefix=...`` other than the ``given`` one under which the most of the file's (``whole``'s) keys
    fit the module's (a Lightning checkpoint's ``model.backbone.``, a prefix given without its final dot, none
    for a torchvision file given one), as a sentence; None when none would fit any. One that would fill under
    half of the module is said as such, not advised: some keys of a block fit those of the stem (a torchvision
    ResNet file given ``prefix="net."`` was advised ``layer1.0.``, which put a block's batch norm in the
    stem's). Only tensors of the module's shapes count: a Prob. U-Net file of other widths, given the U-Net
    encoder's prefix, was advised the prior net's, whose names fit as badly, and back again."""

    def fits(key: str, cut: int) -> bool:
        mine = target.get(key[cut:], target.get(tv_prefix + key[cut:]))
        return mine is not None and tuple(mine.shape) == tuple(whole[key].shape)

    counts = Counter(
        key[:cut]
        for key in whole
        for cut in (0, *(i + 1 for i, char in enumerate(key) if char == "."))  # none, or ending at a dot
        if key[:cut] != given and fits(key, cut)
    )
    if not counts:
        return None
    prefix, n = max(counts.items(), key=lambda item: (item[1], -len(item[0])))
    if 2 * n < len(target):
        return (
            f"no prefix makes the file fit: the best, prefix={prefix!r}, would fill only {n} of the module's "
            f"{len(target)} tensors (another network's file?)"
        )
    if not prefix:
        return f"the file's keys already fit without a prefix: use prefix='' ({n} tensors would load)"
    return (
        f"with prefix={prefix!r} (the part of the file before the backbone's own keys) {n} tensors would load"
    )


class FreezableBackbone:
    """Mixin for a network with a ``backbone`` (before ``nn.Module`` in the bases): :meth:`set_backbone_frozen`
    stops the backbone's training, so only what sits on it (FPN, heads) learns on transferred features.

    Frozen, the backbone's parameters take no gradient (no backward pass through it: the instance benchmark's
    Mask R-CNN at 384x1280 takes as many steps in 15 CPU minutes as one with a trained backbone at 192x640) and
    ``train()`` leaves it in eval mode, so BatchNorm keeps the transferred running statistics. torchvision's
    detection models get the same with ``FrozenBatchNorm2d`` and Lightning's ``BaseFinetuning.freeze`` stops the
    statistics by normalising with each batch's; keeping the BatchNorm modules in eval mode keeps both the
    transferred statistics and the state-dict keys, so frozen and trained checkpoints load into each other.
    """

    backbone_frozen: bool = False

    def set_backbone_frozen(self, frozen: bool = True) -> None:
        self.backbone_frozen = bool(frozen)
        self.backbone.requires_grad_(not frozen)
        self.backbone.train(self.training and not frozen)  # unfrozen, it follows the network's mode again
        for adapter in self.backbone.adapter_modules():  # no pretrained file holds them: they always train
            adapter.requires_grad_(True)
            adapter.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.backbone_frozen:
            self.backbone.eval()
            for adapter in self.backbone.adapter_modules():
                adapter.train(mode)
        return self
