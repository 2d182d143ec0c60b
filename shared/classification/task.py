"""Lightning wrapper of :class:`ImageClassifier`: training, torchmetrics evaluation, and prediction files.

``predict`` (with ``predict_dir``) writes ``probabilities.csv`` (one row per image: file, true label if known,
predicted class, one probability column per class, the overlay's file and the class it explains) and, with
``cam``, a Grad-CAM overlay per image under ``cam/`` so a person sees where the network looked (MONAI's
``GradCAM`` on the backbone's last feature map) for the predicted class, or for ``cam_class``.
Images of ``--data.predict_path`` that do not decode are listed in ``unreadable.csv`` (path, error) and counted
in a warning; the others are still predicted. Where none decodes, the run is an error naming the first few
(as the other tasks' predict), and ``predict_dir`` keeps the earlier run's set.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn

from shared.backbones import BackboneFreezeUnfreeze, list_backbones
from shared.classification.data import ClassificationDataError, read_image
from shared.classification.metrics import ClassificationMetrics, confusion_table, decide, youden_threshold
from shared.classification.model import ImageClassifier
from shared.cli_help import predicted_split_note
from shared.files import score_text, write_csv
from shared.images import write_image
from shared.labelled_task import LabelledTask
from shared.task import FrozenBackboneCheck, gather_lists

# Run-time choices, kept out of checkpoints (LightningCLI would re-apply them over the command line, and a
# moved weight file would break loading weights the checkpoint already holds).
NOT_FITTED = float("nan")
RUNTIME_ARGS = (
    "pretrained_backbone", "pretrained_prefix", "predict_dir", "cam", "cam_max", "cam_class", "decision_threshold",
)  # fmt: skip


class ClassificationTask(FrozenBackboneCheck, LabelledTask):
    """Image classification on any registered backbone (shared by the domains).

    Args:
        class_names: the classes, in the data module's label order (linked from ``data.class_names``).
        network: the classifier, as ``class_path: shared.classification.model.ImageClassifier`` + ``init_args``
            (``backbone``: a registered backbone: {backbones}; ``backbone_kwargs``, ``dropout``); ``num_classes``
            and ``in_channels`` come from ``data.class_names`` / ``data.in_channels`` (linked by the CLI).
        label_smoothing: cross-entropy label smoothing.
        class_weights: one cross-entropy weight per class, in ``class_names`` order (e.g. ``[1, 9]`` for 1:9
            imbalanced data, so the rare class is not learnt as "never"); null: unweighted. The training loss only:
            ``val/loss`` stays the plain cross-entropy, comparable between runs with other weights (the checkpoint
            is chosen on ``val/f1_macro``, not on it).
        pretrained_backbone: local weight file for the backbone: a torchvision ``.pth`` or a suite ``.ckpt``
            (e.g. a detector's or segmenter's); nothing is downloaded. The load report is printed.
        pretrained_prefix: key prefix of the backbone inside that file (``model.backbone.`` for the suite's
            classifier; see the README for the detector and segmenter).
        freeze_backbone_epochs: train only the head for this many epochs, then the backbone too with
            ``lr * backbone_lr_factor`` (``shared.backbones.BackboneFreezeUnfreeze``); 0: no freezing.
        backbone_lr_factor: the backbone's learning-rate factor after unfreezing.
        ece_bins: confidence bins of the expected calibration error.
        decision_threshold: two classes only: the positive class (the second) is predicted where its
            probability is at least this (e.g. 0.2 to miss fewer malignant cases), in the test metrics and
            ``predict``. ``youden`` (at ``fit``): fit it at every validation, the best Youden's J (sensitivity +
            specificity - 1) on the validation split, kept in the checkpoint and logged
            (``val/decision_threshold``; the validation metrics are then at their own fitted threshold, so
            optimistic: read test's). null: the checkpoint's fitted threshold if it has one, else the argmax
            (0.5 for two classes). ``train/acc`` is always the argmax's.
        predict_dir: where ``predict`` writes ``probabilities.csv`` and ``cam/*.png``; null: nothing written.
        cam: write a Grad-CAM overlay per predicted image.
        cam_max: at most this many overlays (null: all; per process where several predict).
        cam_class: the class every Grad-CAM explains (one of ``class_names``, e.g. the malignant class even
            where the image was predicted benign); null: each image's predicted class. ``probabilities.csv``
            names it per row (``cam_class``).
        base_task_args: ``optimizer``, ``lr_scheduler``, ``nonfinite_loss`` (see :class:`shared.task.BaseTask`).
    """

    # the first epochs' head would learn on random features, and the backbone later from scratch at a reduced LR
    FROZEN_OPTION = "--model.freeze_backbone_epochs"
    FROZEN_VALUES = ("above 0", "0")
    TRAINED_PART = "the head"
    WEIGHTS_EXAMPLE = "a torchvision .pth, or a suite checkpoint with --model.pretrained_prefix; see the README"

    #: set by the CLI from the data module (one source): the labels index class_names
    CLI_LINKS = (*LabelledTask.CLI_LINKS, ("data.in_channels", "model.network.init_args.in_channels"))

    def __init__(
        self,
        network: ImageClassifier,
        class_names: list[str],
        label_smoothing: float = 0.0,
        class_weights: list[float] | None = None,
        pretrained_backbone: str | None = None,
        pretrained_prefix: str = "",
        freeze_backbone_epochs: int = 0,
        backbone_lr_factor: float = 0.1,
        ece_bins: int = 10,
        decision_threshold: float | Literal["youden"] | None = None,
        predict_dir: str | None = None,
        cam: bool = True,
        cam_max: int | None = None,
        cam_class: str | None = None,
        **base_task_args,
    ):
        super().__init__(**base_task_args)
        self.save_hyperparameters(ignore=list(RUNTIME_ARGS))
        if freeze_backbone_epochs < 0:
            raise ValueError(f"freeze_backbone_epochs must be >= 0, got {freeze_backbone_epochs}")
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.model = self.build_labelled_network(network, ImageClassifier, class_names)
        # a buffer: on the loss's device, and in the checkpoint; None (no state_dict key) keeps older ones loading
        self.register_buffer("class_weights", self._check_class_weights(class_weights))
        self._check_decision_threshold(decision_threshold)
        self.decision_rule = decision_threshold
        # the Youden threshold fitted at validation; NaN until then (and in checkpoints from before it existed)
        self.register_buffer("fitted_threshold", torch.tensor(NOT_FITTED))
        if pretrained_backbone:
            self.load_report = self.load_pretrained_backbone(pretrained_backbone, pretrained_prefix)
        self.predict_dir = predict_dir
        if cam_max is not None and cam_max < 0:
            raise ValueError(f"--model.cam_max must be >= 0 (or null: every image), got {cam_max}")
        if cam_class is not None and cam_class not in self.class_names:
            raise ValueError(f"--model.cam_class {cam_class!r} is not a class: one of {self.class_names} (or null)")
        self.cam, self.cam_max, self.cam_class = cam, cam_max, cam_class
        self.metrics = torch.nn.ModuleDict(
            {stage: ClassificationMetrics(self.class_names, ece_bins) for stage in ("val", "test")}
        )
        self.last_metrics: dict[str, dict] = {}
        self._rows: list[dict] = []
        self._cam_model = None
        self._cams_written = 0

    def _check_class_weights(self, class_weights: list[float] | None) -> torch.Tensor | None:
        """``class_weights`` as a tensor, refused unless one finite weight >= 0 per class, not all 0."""
        if class_weights is None:
            return None
        weights = torch.tensor([float(w) for w in class_weights])
        if len(weights) != len(self.class_names) or not (weights.isfinite().all() and weights.min() >= 0):
            raise ValueError(
                f"--model.class_weights {list(class_weights)} must hold one finite weight >= 0 per class, in the "
                f"order of class_names {self.class_names} ({len(self.class_names)} weights)"
            )
        if weights.sum() == 0:
            raise ValueError(f"--model.class_weights {list(class_weights)} are all 0: no class would be learnt")
        return weights

    def _check_decision_threshold(self, value) -> None:
        if value is None:
            return
        if len(self.class_names) != 2:
            raise ValueError(
                f"--model.decision_threshold {value!r} needs two classes (a positive one), the model has "
                f"{len(self.class_names)}: {self.class_names}; null predicts the argmax"
            )
        if value != "youden" and not (isinstance(value, float | int) and 0 < value < 1):
            raise ValueError(f"--model.decision_threshold must be in (0, 1), 'youden' or null, got {value!r}")

    @property
    def decision_threshold(self) -> float | None:
        """The positive class's probability threshold the metrics and ``predict`` use: the one given, else the
        fitted one; None: the argmax (no threshold given, none fitted)."""
        if self.decision_rule not in (None, "youden"):
            return float(self.decision_rule)
        fitted = float(self.fitted_threshold)
        return fitted if math.isfinite(fitted) else None

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Checkpoints from before the fitted threshold existed have none (NaN: the argmax)."""
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("state_dict")
        if state is not None:
            state.setdefault("fitted_threshold", torch.tensor(NOT_FITTED))

    def on_test_start(self) -> None:
        self._say_decision("test")

    def _say_decision(self, stage: str) -> None:
        """One line saying how ``stage`` decides the class; a warning where ``youden`` was never fitted."""
        threshold = self.decision_threshold
        if threshold is None:
            if self.decision_rule == "youden":
                rank_zero_warn(
                    f"{stage}: --model.decision_threshold youden was never fitted (no validation ran): the argmax "
                    "decides the class"
                )
            return
        how = "--model.decision_threshold" if self.decision_rule not in (None, "youden") else "fitted at validation"
        rank_zero_info(f"{stage}: {self.class_names[1]} where its probability >= {threshold:.4f} ({how})")

    def backbone_starts_frozen(self) -> bool:
        return self.hparams.freeze_backbone_epochs > 0

    def configure_callbacks(self):
        """The backbone freeze schedule, for ``fit`` only: in ``predict`` it froze the network, and Grad-CAM's
        backward pass found no gradient (an IndexError deep in MONAI)."""
        epochs = self.hparams.freeze_backbone_epochs
        if epochs <= 0 or self.trainer.state.fn != TrainerFn.FITTING:
            return []
        return [BackboneFreezeUnfreeze("model.backbone", epochs, self.hparams.backbone_lr_factor)]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def training_step(self, batch, batch_idx):
        logits = self.model(batch["image"])
        loss = F.cross_entropy(
            logits, batch["label"], weight=self.class_weights, label_smoothing=self.hparams.label_smoothing
        )
        acc = (logits.argmax(1) == batch["label"]).float().mean()
        self.log("train/loss", loss, prog_bar=True, batch_size=len(logits))
        # sync_dist: the epoch's accuracy over every rank's images (the training sampler gives each rank as many,
        # so Lightning's mean of the ranks' counts is exact; without it rank 0's share, and a warning)
        self.log("train/acc", acc, on_step=False, on_epoch=True, batch_size=len(logits), sync_dist=True)
        return self.guard_loss(loss, {"cross_entropy": loss})

    def _evaluation_step(self, batch, stage: str) -> None:
        logits = self.model(batch["image"])
        loss = F.cross_entropy(logits, batch["label"])
        # the epoch's value: the mean over every image of the split, all ranks' (log_mean)
        self.log_mean(f"{stage}/loss", loss, len(logits), prog_bar=stage == "val")
        self.metrics[stage].update(logits.softmax(1), batch["label"])

    def _log_epoch_metrics(self, stage: str) -> None:
        metrics = self.metrics[stage]
        if stage == "val" and self.decision_rule == "youden":
            probs, labels = metrics.split()
            fitted = youden_threshold(probs[:, 1], labels)
            if fitted is None:
                rank_zero_warn(
                    "val: --model.decision_threshold youden not fitted: the validation split lacks a class (Youden's "
                    "J needs both)"
                )
            else:
                self.fitted_threshold.fill_(fitted)
        threshold = self.decision_threshold
        values = metrics.compute(threshold)
        metrics.reset()
        if threshold is not None:
            values["decision_threshold"] = torch.tensor(threshold)
        confusion = values.pop("confusion")
        self.log_settled({f"{stage}/{k}": v for k, v in values.items()})  # torchmetrics': every rank's images
        self.last_metrics[stage] = {
            **{k: float(v) for k, v in values.items()},
            "confusion": confusion.tolist(),
        }
        if stage == "test" and not self.trainer.sanity_checking:
            rank_zero_info(f"test confusion matrix:\n{confusion_table(confusion, self.class_names)}")

    # ---------------------------------------------------------------------------------------- predict

    def on_predict_start(self) -> None:
        self._say_decision("predict")
        self._rows, self._unreadable, self._cams_written, self._cam_model = [], [], 0, None
        self._predicted = 0  # images predicted, with or without predict_dir

    def grad_cam(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Grad-CAM maps (B, 1, H, W) in [0, 1] for ``classes`` (MONAI ``GradCAM`` on ``cam_layer``).

        One MONAI call per class, over the images explaining it: MONAI's score for a batch is the sum of the
        images' scores of one class, and in eval mode (BatchNorm on its running statistics) no image's score
        depends on another image, so each image gets its own gradient: the maps of one image at a time, at a
        batch's speed (not one forward and backward pass per image). Its hooks are never removed, so they sit on
        a copy of the network, made outside inference mode (Lightning predicts under ``torch.inference_mode``,
        whose tensors cannot take part in a backward pass)."""
        from monai.visualize import GradCAM

        maps, order = [], []
        with torch.inference_mode(False), torch.enable_grad():
            if self._cam_model is None:
                network = copy.deepcopy(self.model).eval().requires_grad_(True)  # a frozen layer has no gradient
                self._cam_model = GradCAM(
                    nn_module=network,
                    target_layers="cam_layer",
                    postprocessing=unit_range,
                )
            for cls in classes.unique().tolist():
                index = (classes == cls).nonzero()[:, 0]
                maps.append(self._cam_model(images[index].clone(), class_idx=int(cls)).detach())
                order.append(index)
        return torch.cat(maps)[torch.cat(order).argsort()]  # back in the images' order

    def predict_step(self, batch, batch_idx, dataloader_idx: int = 0):
        errors = batch.get("error") or [""] * len(batch["path"])
        if any(errors):  # images that did not decode (the dataset's skip_unreadable): listed, not predicted
            failed = zip(batch["path"], errors, strict=True)
            self._unreadable += [{"path": path, "error": error} for path, error in failed if error]
            keep = [i for i, e in enumerate(errors) if not e]
            if not keep:  # an empty result like every batch's (None made Lightning warn "predict returned None")
                probs = torch.zeros(0, len(self.class_names), device=self.device)
                return {"probs": probs, "predicted": probs.argmax(1), "path": []}
            batch = {
                "image": batch["image"][keep],
                "label": batch["label"][keep],
                "path": [batch["path"][i] for i in keep],
            }
        probs = self.model(batch["image"]).softmax(1)
        predicted = decide(probs, self.decision_threshold)
        self._predicted += len(probs)
        if not self.predict_dir:
            return {"probs": probs, "predicted": predicted, "path": batch["path"]}
        out = Path(self.predict_dir)
        cams = None
        room = None if self.cam_max is None else max(0, self.cam_max - self._cams_written)
        if self.cam and room != 0:
            take = len(probs) if room is None else min(room, len(probs))
            explained = predicted  # the class each map explains
            if self.cam_class is not None:
                explained = torch.full_like(predicted, self.class_names.index(self.cam_class))
            cams = self.grad_cam(batch["image"][:take], explained[:take])
            (out / "cam").mkdir(parents=True, exist_ok=True)
            self._cams_written += take
        # one device-to-host copy per batch, not one per value
        labels, predicted_ids, prob_rows = batch["label"].tolist(), predicted.tolist(), probs.float().tolist()
        cam_maps = cams[:, 0].float().cpu().numpy() if cams is not None else []
        for i, path in enumerate(batch["path"]):
            row = {
                "path": path,
                "label": self.class_names[labels[i]] if labels[i] >= 0 else "",
                "predicted": self.class_names[predicted_ids[i]],
                **{f"p_{name}": score_text(p) for name, p in zip(self.class_names, prob_rows[i], strict=True)},
                "cam": "",
                "cam_class": "",
            }
            if i < len(cam_maps):
                # the rank where several processes predict (each counts its own batches); the stem cut to 100
                # bytes of UTF-8 (a name's limit is 255 bytes, and the writer's temporary name adds some)
                rank = f"r{self.global_rank}_" if self.trainer.world_size > 1 else ""
                stem = Path(path).stem.encode()[:100].decode(errors="ignore")
                name = f"{rank}{batch_idx:05d}_{i:03d}_{stem}.png"
                write_cam_overlay(path, cam_maps[i], out / "cam" / name, self.model.in_channels)
                row["cam"] = f"cam/{name}"
                row["cam_class"] = self.cam_class or row["predicted"]
            self._rows.append(row)
        return {"probs": probs, "predicted": predicted, "path": batch["path"]}

    def on_predict_epoch_end(self) -> None:
        rows, unreadable = gather_lists(self._rows), gather_lists(self._unreadable)
        predicted = sum(gather_lists([self._predicted]))
        cams_written = sum(gather_lists([self._cams_written]))
        self._cam_model = None
        if unreadable and not predicted:  # on every rank (the lists are gathered): each stops, none waits
            raise self._none_readable(unreadable)
        if not self.trainer.is_global_zero:
            return
        out = Path(self.predict_dir) if self.predict_dir else None
        if out is not None:  # written even without a row (an empty input): the run's own set says so
            out.mkdir(parents=True, exist_ok=True)
            probabilities = [f"p_{name}" for name in self.class_names]
            columns = ["path", "label", "predicted", *probabilities, "cam", "cam_class"]
            write_csv(out / "probabilities.csv", columns, rows)
            which = predicted_split_note(self.trainer.datamodule, "images")
            self.print(
                f"predict: {len(rows)} rows{which} in {out / 'probabilities.csv'}; {cams_written} Grad-CAM maps"
            )
        if unreadable:
            listed = ""
            if out is not None:
                write_csv(out / "unreadable.csv", ["path", "error"], unreadable)
                listed = f", listed in {out / 'unreadable.csv'}"
            rank_zero_warn(
                f"predict: {len(unreadable)} of {predicted + len(unreadable)} images could not be read and have no "
                f"prediction{listed} (e.g. {unreadable[0]['error']})"
            )

    def _none_readable(self, unreadable: list[dict]) -> ClassificationDataError:
        """The error of a predict run where no image decodes, naming the input and the first three files' errors
        (the run fails, so ``predict_dir`` gets back the earlier set: no ``unreadable.csv`` would stay to list
        them). It exited 0 with a header-only ``probabilities.csv``, where the other tasks' predict stop."""
        source = getattr(self.trainer.datamodule, "predict_path", None)
        source = f"--data.predict_path {source}" if source is not None else "the test split"
        shown = "; ".join(row["error"] for row in unreadable[:3])
        more = f"; ... {len(unreadable) - 3} more" if len(unreadable) > 3 else ""
        kept = f" (--model.predict_dir {self.predict_dir} keeps its earlier set)" if self.predict_dir else ""
        return ClassificationDataError(
            f"{source}: none of its {len(unreadable)} images can be read, nothing was predicted{kept}: "
            f"{shown}{more}"
        )


ClassificationTask.__doc__ = ClassificationTask.__doc__.format(backbones=", ".join(list_backbones()))


def unit_range(maps: torch.Tensor) -> torch.Tensor:
    """Each map scaled to [0, 1], strongest evidence = 1. (MONAI's default post-processing maps max to 0 and
    min to 1, i.e. it flips the map; a flat map becomes all 0.)"""
    flat = maps.flatten(1)
    low, high = flat.min(1).values, flat.max(1).values
    scale = torch.where(high > low, high - low, torch.ones_like(high))
    shape = (-1,) + (1,) * (maps.ndim - 1)
    return (maps - low.view(shape)) / scale.view(shape)


def write_cam_overlay(image_path: str, cam: np.ndarray, out: Path, in_channels: int) -> None:
    """The image with its Grad-CAM (JET colour map, 40 %) at the image's own resolution, as PNG."""
    image = read_image(image_path, in_channels)
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    heat = cv2.resize(np.clip(cam, 0, 1).astype(np.float32), (image.shape[1], image.shape[0]))
    colour = cv2.cvtColor(cv2.applyColorMap(np.uint8(255 * heat), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    blend = cv2.addWeighted(image, 0.6, colour, 0.4, 0)
    write_image(out, blend, rgb=True, what="Grad-CAM image")
