"""A small base LightningModule: optimiser and schedule settings, and loss guards shared by every domain."""

from __future__ import annotations

import inspect
import math
import pydoc
import sys
import warnings
import zipfile
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from torchmetrics import MeanMetric

from shared.backbones import NothingLoadedError, load_backbone_weights
from shared.backbones.weights import describe_file, load_failure_cause, pickled_global
from shared.budget import FitScheduleToBudget
from shared.networks import TRUSTED_PACKAGES, build_network, network_spec
from shared.optim import WarmupCosine


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite; the message names the step and the term."""


class CheckpointMismatchError(ValueError):
    """A checkpoint holds another task or model than the one asked to load it."""


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def same_class(path: str, other: str) -> bool:
    """Whether two class paths name one class: a checkpoint records where it is defined
    (``domains.medical.models.unet.UNetSegmenter``), a config where it is exported (``domains.medical.models.
    UNetSegmenter``). Only the suite's own packages are imported to find out."""
    if path == other:
        return True
    if not all(p.startswith(("domains.", "shared.")) for p in (path, other)):
        return False
    try:
        found = [pydoc.locate(p) for p in (path, other)]
    except pydoc.ErrorDuringImport:
        return False
    return found[0] is not None and found[0] is found[1]


def plain_values(value):
    """Namespaces as dicts and tuples as lists, all the way down: a config and a checkpoint compare equal."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, dict):
        return {key: plain_values(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_values(item) for item in value]
    return value


def network_differences(saved, built) -> list[tuple[str, object, object]]:
    """``(option, saved value, built value)`` for each setting in which two networks (``class_path`` +
    ``init_args``, as :func:`shared.networks.network_spec` records them and a config gives them) differ: the
    class alone when it differs, else each init argument both name with another value. Empty when either is
    not such a mapping."""
    saved, built = plain_values(saved), plain_values(built)
    if not all(isinstance(spec, dict) and "class_path" in spec for spec in (saved, built)):
        return []
    if not same_class(str(saved["class_path"]), str(built["class_path"])):
        return [("model.network.class_path", saved["class_path"], built["class_path"])]
    old, new = saved.get("init_args") or {}, built.get("init_args") or {}
    shared = sorted(set(old) & set(new))
    return [(f"model.network.init_args.{k}", old[k], new[k]) for k in shared if old[k] != new[k]]


class FrozenBackboneCheck:
    """Task mixin (before :class:`BaseTask` in the bases) for networks with :class:`~shared.backbones.FreezableBackbone`:
    a new fit of a frozen backbone needs all of it from ``pretrained_backbone``, or the layers on it train on
    random features that never learn. :meth:`load_pretrained_backbone` keeps what a file left unloaded; a
    restored checkpoint counts as whole. ``FROZEN_OPTION``, ``FROZEN_VALUES``, ``TRAINED_PART`` and ``WEIGHTS_EXAMPLE``
    word the fit-start error; :meth:`backbone_starts_frozen` says whether the fit starts frozen."""

    FROZEN_OPTION = "--model.freeze_backbone"
    FROZEN_VALUES = ("true", "false")  # how the option reads when it freezes, and the value that does not
    TRAINED_PART = "the layers on it"
    WEIGHTS_EXAMPLE = "apps/weights/driving_detection.safetensors with --model.pretrained_prefix detector.backbone.body."
    _backbone_missing: list[str] | None = None  # None: no file given; [] whole

    def load_pretrained_backbone(self, path: str, prefix: str):
        report = super().load_pretrained_backbone(path, prefix)
        backbone = self.model.backbone
        self._backbone_missing = [key for key in report.missing if not backbone.is_adapter_key(key)]
        return report

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        self._backbone_missing = []  # the checkpoint holds the whole backbone (restored before on_fit_start)

    def _frozen_backbone_gap(self) -> str | None:
        """Why the frozen backbone would train as (partly) random weights, or None when it is whole."""
        missing = self._backbone_missing
        if missing is None:
            return "no --model.pretrained_backbone was given"
        if missing:
            return (
                f"--model.pretrained_backbone left {len(missing)} backbone tensors unloaded (e.g. {missing[0]}: a "
                "wrong --model.pretrained_prefix or another network's file?)"
            )
        return None

    _quiet_eval_mode = None  # warnings.catch_warnings held from on_fit_start to on_train_start

    def on_train_start(self) -> None:
        super().on_train_start()
        quiet = self._quiet_eval_mode
        if quiet is not None:  # the filters as before on_fit_start
            self._quiet_eval_mode = None
            quiet.__exit__(None, None, None)

    def backbone_starts_frozen(self) -> bool:
        return getattr(self.model, "backbone_frozen", False)

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if not self.backbone_starts_frozen():
            return
        what = self._frozen_backbone_gap()
        if what:
            raise ValueError(
                f"{self.FROZEN_OPTION} is {self.FROZEN_VALUES[0]} but {what}: {self.TRAINED_PART} would train on "
                "a backbone that is partly or wholly random. Give trained weights (e.g. "
                f"{self.WEIGHTS_EXAMPLE}) or set {self.FROZEN_OPTION} {self.FROZEN_VALUES[1]}."
            )
        # its modules are in eval mode on purpose (BatchNorm keeps the loaded statistics): Lightning's "Found N
        # module(s) in eval mode ... may lead to unexpected behavior", which comes before on_train_start, would
        # alarm for nothing. Silenced until then only: a later fit in the process keeps the real alarm
        self._quiet_eval_mode = warnings.catch_warnings()
        self._quiet_eval_mode.__enter__()
        warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
        if getattr(self.model, "backbone_frozen", False):  # frozen for the whole fit (not for a few epochs)
            rank_zero_info(
                f"{self.FROZEN_OPTION}: only {self.TRAINED_PART} train; the backbone's weights and BatchNorm "
                "statistics stay as loaded (its modules stay in eval mode)"
            )


class EpochMean(MeanMetric):
    """torchmetrics' weighted ``MeanMetric`` as :meth:`BaseTask.log_mean` keeps it: a NaN value stays NaN
    (a NaN loss shows, as in Lightning's own mean; the default ``nan_strategy`` "warn" dropped it, and
    "disable" drops the weights as well, torchmetrics issue #3434), and the mean of no item is 0 (a loss term
    with nothing to score, as the object term of clips without tracks, is 0 in each batch too)."""

    def __init__(self):
        super().__init__(nan_strategy=float("nan"))

    def compute(self) -> torch.Tensor:
        return torch.where(self.weight > 0, self.mean_value / self.weight, torch.zeros_like(self.mean_value))


class BaseTask(pl.LightningModule):
    """Shared training plumbing. Subclasses build their plain ``nn.Module`` as ``self.model``.

    The optimiser and the learning-rate schedule are LightningCLI callables, chosen in a config the same way
    in every task (``model.optimizer`` / ``model.lr_scheduler`` as ``class_path`` + ``init_args``)::

        optimizer:
          class_path: torch.optim.AdamW
          init_args: {lr: 0.001, weight_decay: 0.0001}
        lr_scheduler:
          class_path: shared.optim.WarmupCosine   # null: a constant LR
          init_args: {warmup_steps: 100}

    Args:
        optimizer: builds the optimiser from the trainable parameters (any ``torch.optim`` class).
        lr_scheduler: builds the LR schedule from the optimiser; ``WarmupCosine`` without ``total_steps`` runs
            over the trainer's planned steps (a time budget, ``--trainer.max_time`` included, may move its end
            while training, see ``schedule_steps``); ``ReduceLROnPlateau`` is stepped after each validation,
            watching the checkpoint's ``monitor``; null: constant LR.
        lr_scheduler_interval: when any other schedule steps: ``"step"`` (every optimiser step) or ``"epoch"``
            (e.g. ``CosineAnnealingLR`` with ``T_max`` in epochs).
        nonfinite_loss: ``"raise"`` stops the run naming the step and loss term; ``"skip"`` skips the batch and
            counts it (logged as ``train/skipped_batches``).
    """

    # never saved as hyper-parameters as given: callables and modules are code, and a checkpoint must load with
    # weights_only (the network is saved as its class_path + init_args by ``build_network``)
    NOT_SAVED = ("optimizer", "lr_scheduler", "network")

    def load_pretrained_backbone(self, path: str, prefix: str):
        """Load ``self.model.backbone`` from the local file ``path`` (keys under ``prefix``), print and return the
        :func:`shared.backbones.load_backbone_weights` report.

        A file of another network is an error: none of its tensors fits (the run would train the random backbone
        it was meant to replace), some differ in shape (a ResNet-50 file in a ResNet-18 left 23 convolutions
        random, under a frozen backbone too), or it holds backbone tensors with no place here (a ResNet-34 file
        filled a ResNet-18 with its first blocks, 98 tensors unused). A file that fills parts of the backbone in
        part (a ResNet-18 file in a ResNet-34 left the 80 tensors of its extra blocks random) is warned of: a
        file of the first layers alone may be meant (a frozen start refuses it at fit start). A classifier head
        is left out quietly."""
        try:
            # a partial file is refused below, naming the options: not warned about first
            report = load_backbone_weights(self.model.backbone, path, prefix=prefix, warn_partial=False)
        except NothingLoadedError as err:  # said below with the options to change
            report = err.report
        init_args = getattr(self.model, "init_args", None) or {}  # the registry name, as configured
        name = init_args.get("backbone") or init_args.get("encoder") or type(self.model.backbone).__name__
        if not report.loaded or report.shape_mismatch or report.unexpected:
            what = "no tensor matched" if not report.loaded else "it is another network's file for"
            raise ValueError(  # the report once, here: not printed first as well
                f"pretrained_backbone {path}: {what} backbone {name!r} (prefix {prefix!r}): {report.summary()}. "
                "Give a file of this backbone, or --model.pretrained_prefix naming its part of the file"
            )
        rank_zero_info(f"pretrained backbone {path}: {report.summary()}")
        if missing := report.missing_in_part:
            rank_zero_warn(
                f"pretrained_backbone {path}: {len(missing)} tensors of backbone {name!r} keep their initial values "
                f"inside the parts the file filled (e.g. {missing[0]}): a shallower network's file? They train "
                "from scratch"
            )
        return report

    def __init__(
        self,
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = WarmupCosine,
        lr_scheduler_interval: Literal["step", "epoch"] = "step",
        nonfinite_loss: str = "raise",
    ):
        super().__init__()
        if nonfinite_loss not in ("raise", "skip"):
            raise ValueError(f"nonfinite_loss must be 'raise' or 'skip', got {nonfinite_loss!r}")
        if lr_scheduler_interval not in ("step", "epoch"):
            raise ValueError(
                f"lr_scheduler_interval must be 'step' or 'epoch', got {lr_scheduler_interval!r}"
            )
        for name, value in (("optimizer", optimizer), ("lr_scheduler", lr_scheduler)):
            if value is not None and not callable(value):
                raise TypeError(f"{name} must be a class or callable (class_path / init_args), got {value!r}")
        if optimizer is None:
            raise TypeError("optimizer must be given (class_path / init_args), got None")
        self.make_optimizer = optimizer
        self.make_lr_scheduler = lr_scheduler
        self.lr_scheduler_interval = lr_scheduler_interval
        self.lr_schedule: torch.optim.lr_scheduler.LRScheduler | None = None
        self.nonfinite_loss = nonfinite_loss
        self.skipped_batches = 0
        self.logged_means = nn.ModuleDict()  # name -> EpochMean, made by log_mean on a name's first use

    def save_hyperparameters(self, *args, ignore=None, frame=None, logger: bool = True) -> None:
        """Lightning's, never saving the optimiser / schedule callables (``NOT_SAVED``), and keeping the network
        :meth:`build_network` stored when it ran first (Lightning's replaced it: the checkpoint could not be
        rebuilt, and said it was written before the network moved to ``model.network``)."""
        ignore = [ignore] if isinstance(ignore, str) else list(ignore or [])
        frame = frame or inspect.currentframe().f_back
        network = self.hparams.get("network")
        super().save_hyperparameters(*args, ignore=[*ignore, *self.NOT_SAVED], frame=frame, logger=logger)
        if network is not None:
            self.hparams["network"] = network

    def build_network(self, network: nn.Module | dict, base: type | tuple[type, ...]) -> nn.Module:
        """The task's network from ``model.network`` (a built ``base`` or a checkpoint's class_path + init_args),
        saved in the hyper-parameters as class_path + init_args so that a checkpoint rebuilds it (before or after
        ``save_hyperparameters``)."""
        model = build_network(network, base)
        self.hparams["network"] = network_spec(model)
        return model

    @property
    def schedule_steps(self) -> int | None:
        """The step at which a ``WarmupCosine`` schedule reaches 0 (None before training or for other
        schedules); setting it moves the end of the running schedule (``shared.budget.FitScheduleToBudget``)."""
        return getattr(self.lr_schedule, "total_steps", None)

    @schedule_steps.setter
    def schedule_steps(self, steps: int) -> None:
        if isinstance(self.lr_schedule, WarmupCosine):
            self.lr_schedule.total_steps = max(1, int(steps))
            self.lr_schedule.follows_trainer = False  # a budget owns the length now, also across a resume

    def describe_model(self) -> str:
        """A short name of the network inside (stored in checkpoints so a mismatch can name what a file holds)."""
        return type(getattr(self, "model", self)).__name__

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["suite_task"] = {"task": _qualname(type(self)), "model": self.describe_model()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        path = getattr(self._trainer, "ckpt_path", None) if self._trainer is not None else None
        source = f"the checkpoint {path}" if path else "the checkpoint"
        _check_task(checkpoint, type(self), source=source)
        held = (checkpoint.get("suite_task") or {}).get("model")
        if held is not None and held != self.describe_model():
            raise CheckpointMismatchError(
                f"{source} holds model {held!r} but this {type(self).__name__} was built as "
                f"{self.describe_model()!r}"
            )
        # Lightning loads the weights next: a network built otherwise than the saved one (a wider one, given
        # to Trainer.fit or resumed from a URL) ended in a 50-line size-mismatch traceback
        built = self.state_dict()
        saved = checkpoint.get("state_dict") or {}
        other = [
            f"{key} {tuple(value.shape)} (built: {tuple(built[key].shape)})"
            for key, value in saved.items()
            if key in built and hasattr(value, "shape") and tuple(value.shape) != tuple(built[key].shape)
        ]
        network = (checkpoint.get("hyper_parameters") or {}).get("network")  # the network it records
        if other:
            what = f"{len(other)} weights differ in shape, e.g. {'; '.join(other[:3])}"
            raise self._other_network(source, network, what)
        # keys missing or with no place here are told once the subclasses' hooks have filled in what older
        # checkpoints lack (fitted thresholds, moved keys), in load_state_dict, which Lightning calls next
        self._loading_checkpoint = (source, network)

    _loading_checkpoint: tuple[str, dict | None] | None = None  # on_load_checkpoint's (source, its network)

    def _other_network(self, source: str, network: dict | None, what: str) -> CheckpointMismatchError:
        """The error for a checkpoint of another network than the one built: ``what`` differs, and the
        settings that make it differ (``network``, the one the checkpoint records, against this one's), where
        known."""
        differs = network_differences(network, self.hparams.get("network"))
        settings = "; ".join(f"{key} {old!r} in the checkpoint, {new!r} here" for key, old, new in differs)
        because = f" (it was trained with {settings})" if settings else ""
        return CheckpointMismatchError(
            f"{source} holds another network than the one built here{because}: {what}. Build it with the "
            "model settings it was trained with (a fit --ckpt_path resume through the CLI takes them from "
            "the checkpoint)"
        )

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """torch's; where :meth:`on_load_checkpoint` has just read a checkpoint, a strict load whose keys do
        not match (a deeper backbone, more head convolutions) is a :class:`CheckpointMismatchError` naming the
        counts, examples and the network settings that differ, not torch's 40-line "Missing key(s)"
        RuntimeError. Checked after the subclasses' ``on_load_checkpoint`` (they fill in keys older
        checkpoints lack)."""
        loading, self._loading_checkpoint = self._loading_checkpoint, None
        if loading is None or not strict:
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        missing, unexpected = result.missing_keys, result.unexpected_keys
        if missing or unexpected:
            kinds = (
                (missing, "weights of this network are not in it"),
                (unexpected, "of its weights fit nowhere"),
            )
            what = [f"{len(keys)} {label}, e.g. {', '.join(keys[:3])}" for keys, label in kinds if keys]
            raise self._other_network(loading[0], loading[1], "; ".join(what))
        return result

    @classmethod
    def load_checked(cls, path: str | Path, map_location: str = "cpu", **kwargs) -> BaseTask:
        """``load_from_checkpoint`` with ``weights_only=True`` and a clear error when the file holds another task;
        returned in eval mode, ready to predict (Lightning returns it training: dropout on, BatchNorm updating its
        statistics from each batch, the accident model's fitted temperature unused).

        The file is read once as plain tensors and containers (no code runs), its recorded task is compared
        with ``cls``, and only then is the module built.

        Shipped weights (``apps/weights/<key>.safetensors`` with the model card ``<key>.json`` beside it) load
        too, as the demo loads them: the card names the task and the hyper-parameters that build it
        (:func:`shared.shipped.load_shipped`), and the fields a checkpoint restores beside the network's weights
        (a detector's fitted operating point, the anomaly score's smoothing) come from the card
        (:meth:`on_load_card`). A ``.safetensors`` without a card (a backbone's weights) is refused: nothing says
        which task or network it fills.
        """
        from shared.shipped import has_card, load_shipped  # shipped.py imports this module

        if has_card(path) and Path(path).is_file():
            return load_shipped(cls, path, map_location=map_location, **kwargs)
        check_checkpoint_file(path, cls)
        task = cls.load_from_checkpoint(Path(path), map_location=map_location, weights_only=True, **kwargs)
        return task.eval()

    def on_load_card(self, card: dict, given: Collection[str] = ()) -> None:
        """Shipped weights hold ``task.model`` alone: restore from their model card ``card`` what a checkpoint
        restores beside it (what :meth:`on_load_checkpoint` reads, fitted fields of the task). ``given``: the
        arguments the caller of :meth:`load_checked` set, which the card must not override. Nothing here."""

    def guard_loss(self, loss: torch.Tensor, terms: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """Return ``loss`` if every term is finite; else raise (naming step and term) or return None to skip.
        One check of all terms together (one wait for a GPU per step, not one per term); the terms are named
        only when it fails."""
        values = [loss.detach().reshape(-1), *(value.detach().reshape(-1) for value in terms.values())]
        if bool(torch.isfinite(torch.cat([v.float() for v in values])).all()):
            return loss
        bad = [name for name, value in terms.items() if not torch.isfinite(value.detach()).all()] or ["total"]
        message = f"non-finite loss at global step {self.global_step} (epoch {self.current_epoch}) in term(s): {', '.join(bad)}"
        if self.nonfinite_loss == "raise":
            raise NonFiniteLossError(message + " (set nonfinite_loss: skip to skip such batches)")
        self.skipped_batches += 1
        self._reset_poisoned_norm_statistics()
        self.print(f"skipping batch: {message} (skipped so far: {self.skipped_batches})")
        self.log("train/skipped_batches", float(self.skipped_batches))
        return None

    def log_mean(self, name: str, value: torch.Tensor, count: int | torch.Tensor, **log_args) -> EpochMean:
        """Log ``value``, a mean over ``count`` items (a batch's images, a batch's frames), so that the
        epoch's value is the mean over every item the epoch saw on all processes: on one process the same as
        Lightning's ``batch_size``-weighted mean. Returns the name's :class:`EpochMean` (``log_args`` go to
        ``self.log``).

        Lightning's own mean with ``sync_dist=True`` averages the processes' item counts in an integer tensor
        (``lightning_fabric`` ``_sync_ddp``, gloo: (6 + 5) / 2 gives 5), so over an odd number of images on
        two processes the loss came out n / (n - 1) too large; the metric sums values and counts instead."""
        key = name.replace(".", "_")  # a module name holds no dot
        if key not in self.logged_means:
            self.logged_means[key] = EpochMean().to(self.device)
        mean = self.logged_means[key]
        mean.update(value.detach(), count)
        self.log(name, mean, metric_attribute=f"logged_means.{key}", **log_args)
        return mean

    def log_settled(self, values: Mapping[str, float | torch.Tensor], prog_bar: Collection[str] = ()) -> None:
        """Log epoch values that every process already holds alike (torchmetrics results, which sync their
        states; scores of every process's gathered records), ``prog_bar`` ones on the progress bar too.

        With ``sync_dist`` and ``max``: one small all-reduce each, which returns equal values exactly.
        Without ``sync_dist`` (also given as False) Lightning printed under DDP, for each value, "It is
        recommended to use `self.log(..., sync_dist=True)`"."""
        for on_bar in (True, False):
            part = {name: value for name, value in values.items() if (name in prog_bar) == on_bar}
            if part:
                self.log_dict(part, prog_bar=on_bar, sync_dist=True, reduce_fx="max")

    def _reset_poisoned_norm_statistics(self) -> None:
        """A skipped batch has already run forward: batch norms folded its NaN / inf into their running
        statistics, which would poison every later evaluation. Reset those (only those) to their start values."""
        for module in self.modules():
            if isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats:
                stats = (module.running_mean, module.running_var)
                if any(s is not None and not torch.isfinite(s).all() for s in stats):
                    module.reset_running_stats()

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = self.make_optimizer(params)
        if self.make_lr_scheduler is None:
            return optimizer
        self.lr_schedule = schedule = self.make_lr_scheduler(optimizer)
        stepping = {"scheduler": schedule, "interval": self.lr_scheduler_interval}
        if isinstance(schedule, WarmupCosine) and schedule.total_steps is None:
            schedule.total_steps = self._planned_steps()
            schedule.follows_trainer = True
            schedule.apply_lr()  # built with no length (factor 1 at step 0): step 0 warms up too
        elif isinstance(schedule, torch.optim.lr_scheduler.ReduceLROnPlateau):
            # stepped per batch it failed ("must include a monitor"): it steps after each validation instead
            every = self.trainer.check_val_every_n_epoch or 1
            stepping.update(interval="epoch", frequency=every, monitor=self._monitored_metric())
            ranked = getattr(self.trainer.checkpoint_callback, "mode", schedule.mode)
            if schedule.mode != ranked:  # its default "min" on a metric ranked "max" cut the LR as it improved
                raise ValueError(
                    f"lr_scheduler ReduceLROnPlateau has mode {schedule.mode!r}, but the checkpoint ranks "
                    f"{stepping['monitor']} by {ranked!r}: give --model.lr_scheduler.init_args.mode {ranked}"
                )
        return {"optimizer": optimizer, "lr_scheduler": stepping}

    def _planned_steps(self) -> int:
        """The length of a ``WarmupCosine`` that follows the trainer: its planned optimiser steps. A run with
        no planned length (``max_epochs -1``, ``max_steps -1``) has one only from a time budget that sets it
        while training (``--trainer.max_time``: :class:`shared.budget.FitScheduleToBudget`); until its first
        estimate the cosine stays at the base LR (after the warm-up)."""
        if self.lr_scheduler_interval != "step":
            raise ValueError(
                "lr_scheduler_interval 'epoch': WarmupCosine without total_steps runs over the planned "
                "optimiser steps, so it must step every step; give its total_steps (in epochs) to step it "
                "per epoch"
            )
        planned = self.trainer.estimated_stepping_batches
        if math.isfinite(planned):
            return max(1, int(planned))
        if any(isinstance(c, FitScheduleToBudget) for c in self.trainer.callbacks):
            return sys.maxsize
        raise ValueError(
            "the LR schedule (WarmupCosine) runs over the planned training steps, and this run has no end: "
            "give --trainer.max_epochs N or --trainer.max_steps N (or --trainer.max_time, which the schedule "
            "follows)"
        )

    def _monitored_metric(self) -> str:
        """The metric the checkpoint callback ranks by, for a schedule that watches one."""
        monitor = getattr(self.trainer.checkpoint_callback, "monitor", None)
        if monitor is None:
            raise ValueError(
                "lr_scheduler ReduceLROnPlateau watches the checkpoint's metric (--checkpoint.monitor), and "
                "this run has none (--trainer.enable_checkpointing false?): give a monitor, or another "
                "lr_scheduler"
            )
        return monitor


def gather_lists(items: list) -> list:
    """Every DDP rank's ``items`` concatenated in rank order; ``items`` itself outside distributed runs.

    For epoch-end metrics that need every image at once and are not torchmetrics states (which sync
    themselves), e.g. KITTI AP: each rank only sees its shard of the evaluation set.
    """
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return items
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, items)
    return [item for part in parts for item in part]


def read_checkpoint_data(path: str | Path, mmap: bool = False) -> dict:
    """A checkpoint read as data (``torch.load(weights_only=True)``). A file holding pickled objects besides
    tensors and plain values is refused naming them: torch's own message advises loading it with
    ``weights_only=False``, which would run whatever code it holds. A file that is no zip archive (what
    torch.save writes) is refused saying what it is (text, empty, truncated, a legacy pickle): torch's own error
    for it, read memory-mapped, talks of ``_use_new_zipfile_serialization``."""
    if Path(path).is_file() and not zipfile.is_zipfile(path):
        raise CheckpointMismatchError(
            f"{path}: not a weights-only Lightning checkpoint: {describe_file(Path(path))}; checkpoints are the "
            "zip archives fit writes, e.g. lightning_logs/<domain>/<config>/checkpoints/last.ckpt"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as err:
        found = pickled_global(str(err))
        why = load_failure_cause(err) if not found else (
            f"it holds pickled Python objects ({found}), not only tensors and plain values: a whole saved model, or "
            "custom classes? Checkpoints are read as data only, so that no code in a file can run: save the model "
            "with the Lightning Trainer (a ModelCheckpoint or trainer.save_checkpoint)"
        )
        raise CheckpointMismatchError(f"{path}: not a weights-only Lightning checkpoint: {why}") from err


def check_checkpoint_file(path: str | Path, cls: type, option: str = "checkpoint") -> dict:
    """Read a checkpoint as plain tensors and containers (``weights_only``: no code runs, memory-mapped) and
    check that it holds a ``cls`` task; returns it. Used by ``load_checked`` and by the CLI for ``--ckpt_path``
    (``option``: how the errors name where the path came from)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(
            f"{option} {path} is a folder; give the checkpoint file in it (e.g. last.ckpt)"
        )
    if not path.is_file():
        raise FileNotFoundError(f"{option} {path}: no such checkpoint file")
    if path.suffix.lower() == ".safetensors":  # tensors only: no Lightning state, no data settings
        raise CheckpointMismatchError(_safetensors_refusal(path, cls, option))
    checkpoint = read_checkpoint_data(path, mmap=True)  # a file that is no zip archive is told what it is
    _check_task(checkpoint, cls, source=str(path))
    if "pytorch-lightning_version" not in checkpoint:  # Lightning's loader ends in a bare KeyError on it
        raise CheckpointMismatchError(_bare_state_dict(str(path)))
    _check_network_layout(checkpoint, cls, source=str(path))
    _check_class_paths(checkpoint, source=str(path))
    return checkpoint


def _safetensors_refusal(path: Path, cls: type, option: str) -> str:
    """Why a ``.safetensors`` file is no checkpoint. Shipped weights with a model card are told where they do
    load (``load_checked`` from Python): ``--ckpt_path`` and the exports take what fit wrote, the Lightning
    state a weights file does not hold (a resume restores loops, optimiser and callbacks from it too)."""
    what = f"{path}: a .safetensors file holds weights only, not a Lightning checkpoint (no task, network or data settings"
    fit = "give a checkpoint that fit wrote, e.g. lightning_logs/<domain>/<config>/checkpoints/last.ckpt"
    from shared.shipped import card_path, has_card

    if not has_card(path):
        return f"{what}); {fit} (a .safetensors backbone loads with --model.pretrained_backbone)"
    return (
        f"{what}, and no training loops, optimiser or callbacks to resume): {option} takes the Lightning state fit "
        f"saved; {fit}. These are shipped weights with a model card ({card_path(path).name}): from Python, "
        f"{cls.__name__}.load_checked({str(path)!r}) returns the task in eval mode; for a fit, their backbone "
        "loads with --model.pretrained_backbone and --model.pretrained_prefix"
    )


#: packages a checkpoint's hyperparameters may name classes of, besides the suite's own (the optimiser's, ...)
LIBRARY_PACKAGES = ("torch.", "torchvision.", "torchmetrics.", "pytorch_lightning.", "lightning.")


def _class_paths(value) -> list[str]:
    """Every class named in nested hyperparameters: ``class_path`` / ``_class_path`` strings, and a ``network``
    given as a plain string (jsonargparse takes ``network: helpers.Net`` as a class path too, and imports it)."""
    if isinstance(value, dict):
        keys = ("class_path", "_class_path", "network")
        own = [v for k, v in value.items() if k in keys and isinstance(v, str)]
        return own + [path for v in value.values() for path in _class_paths(v)]
    if isinstance(value, (list, tuple)):
        return [path for v in value for path in _class_paths(v)]
    return []


def _check_class_paths(checkpoint: dict, source: str) -> None:
    """Refuse a checkpoint whose hyperparameters name a class outside the suite and the libraries it uses:
    Lightning rebuilds the task through jsonargparse, which imports every ``class_path`` it names, so a
    ``helpers.Net`` would run the ``helpers.py`` of the working folder before :func:`build_network` could refuse
    it. A module already imported counts as chosen by the user (their own network subclass, given as
    ``--model.network mymodule.MyNet``), as :func:`build_network` has it."""
    hparams = [checkpoint.get("hyper_parameters") or {}, checkpoint.get("datamodule_hyper_parameters") or {}]
    for class_path in _class_paths(hparams):
        module = class_path.rpartition(".")[0]
        if not module.startswith(TRUSTED_PACKAGES + LIBRARY_PACKAGES) and module not in sys.modules:
            raise CheckpointMismatchError(
                f"{source} names class_path {class_path!r}, outside the suite ({', '.join(TRUSTED_PACKAGES)}) and "
                "the libraries it uses: not imported, since importing a module runs its code. If it is your own "
                "class, import its module first (for the CLI: give it as --model.network)"
            )


def _check_network_layout(checkpoint: dict, cls: type, source: str) -> None:
    """Checkpoints written before the network became ``model.network`` (class_path + init_args) cannot say
    which class to build: refuse them naming the option that moved."""
    hparams = checkpoint.get("hyper_parameters") or {}
    takes_network = "network" in inspect.signature(cls.__init__).parameters
    if takes_network and hparams and "network" not in hparams:
        old = sorted(
            set(hparams)
            & {"model", "model_kwargs", "backbone", "backbone_kwargs", "encoder", "encoder_kwargs"}
        )
        raise CheckpointMismatchError(
            f"{source} was written before the network moved to model.network (class_path + init_args; its "
            f"{', '.join(old) or 'network settings'} now go there, see the README's configs): retrain it with "
            "the current configs"
        )


def _accepted_arguments(cls: type) -> set[str] | None:
    """The named ``__init__`` arguments of ``cls`` and of the classes its ``**kwargs`` reach (up to
    ``BaseTask``); None when one of them takes arbitrary keyword arguments of its own."""
    accepted: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass is pl.LightningModule:
            break
        params = inspect.signature(klass.__init__).parameters.values()
        accepted |= {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)} - {"self"}
        if not any(p.kind is p.VAR_KEYWORD for p in params) or klass is BaseTask:
            return accepted
    return None


def _bare_state_dict(source: str) -> str:
    """The error for weights saved with ``torch.save`` (``{"state_dict": ...}`` or the state dict itself, as
    torchvision's files are) given where a checkpoint that fit wrote is read."""
    return (
        f"{source}: a state dict saved with torch.save, not a checkpoint that Lightning wrote (no "
        "'pytorch-lightning_version', task or settings); give one that fit wrote, e.g. "
        "lightning_logs/<domain>/<config>/checkpoints/last.ckpt (a backbone's weights load with "
        "--model.pretrained_backbone)"
    )


def _check_task(checkpoint: dict, cls: type, source: str) -> None:
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        # a torchvision .pth given as --ckpt_path: said as what it is, with the option that reads it
        values = checkpoint.values() if isinstance(checkpoint, dict) else ()
        if values and all(isinstance(v, torch.Tensor) for v in values):
            raise CheckpointMismatchError(_bare_state_dict(source))
        raise CheckpointMismatchError(f"{source}: not a Lightning checkpoint (no state_dict)")
    info = checkpoint.get("suite_task")
    if info is None:
        # Written by another tool (or a task whose on_save_checkpoint skips ours): hyperparameters this task
        # does not take still show it holds something else; otherwise the state-dict load reports by key.
        accepted = _accepted_arguments(cls)
        if accepted is not None:
            hparams = checkpoint.get("hyper_parameters") or {}
            unknown = sorted(set(hparams) - accepted - {"_instantiator", "_class_path"})
            if unknown:
                raise CheckpointMismatchError(
                    f"{source} holds hyperparameters {unknown} that {_qualname(cls)} does not take: "
                    "a checkpoint of another task or model"
                )
        return
    if info.get("task") != _qualname(cls):
        raise CheckpointMismatchError(
            f"{source} holds a {info.get('task')} checkpoint (model {info.get('model')!r}), "
            f"not a {_qualname(cls)} one: pass a checkpoint of this domain and task"
        )
