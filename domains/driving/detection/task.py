"""Lightning wrapper of :class:`RoadDetector`: training, COCO / KITTI evaluation and prediction files.

Evaluation happens in the *original* image coordinates: predictions and targets are scaled back from the
tensor the data module produced (which may be resized) to ``target["orig_size"]``, so KITTI's pixel-height
difficulty filters mean what the devkit means.

* COCO mAP / mAP50 / mAP75 and per-class AP (torchmetrics ``MeanAveragePrecision`` on the faster-coco-eval
  backend; under DDP over every rank's images: :func:`mean_ap_over_ranks`). DontCare boxes are COCO crowd
  regions of every class (``with_crowd_regions``): a detection that matches no object and lies in one is
  ignored, one on a real object stays a hit. Detections lying mostly inside a DontCare box (more than
  ``ignore_overlap`` of their area) are counted (``<stage>/ignored_detections``).
* KITTI AP|R40 per class and difficulty (:func:`domains.driving.detection.metrics.kitti_average_precision`), on the raw
  KITTI labels (vans as Car's neighbour class, truncation / occlusion, DontCare) when the data module has
  them, else on the targets.

Validation also fits the operating point: the score threshold with the best pooled F1 (boxes matched at IoU
0.5 within a class, detections mostly inside DontCare dropped:
:mod:`domains.driving.detection.operating_point`, the shipped weights' rule), logged as ``val/best_f1`` /
``val/best_f1_threshold`` and kept in the checkpoint (the ``operating_threshold`` buffer of this
LightningModule, not of the plain network ``self.model``, unlike the accident model's ``alarm_threshold``: a
state dict of ``task.model`` alone, as the shipped weights are, does not hold it); test logs F1 at the
threshold ``predict`` draws at (``test/f1``, ``test/f1_threshold``), and the ONNX sidecar carries it.

Validation also logs the training loss on the validation images (``val/loss`` and its terms, as every task logs
``val/loss``). torchvision's FCOS returns losses only in training mode and detections only in eval mode, so
validation runs its steps itself (:meth:`DetectionTask.losses_and_detections`): one eval-mode pass of transform,
backbone and head gives both, the numbers a second, training-mode pass gave (normalisation and stochastic layers
in eval mode, the evaluation size, nothing drawn at random). A batch of images of several sizes (detected one
pass per size) still takes that second pass, without gradients and with the random stream forked
(:meth:`DetectorTask.losses_without_update`, the instance task's way: Mask R-CNN's losses need its
training-mode proposal sampling): weights, BatchNorm statistics and the training's random draws are left as
they were. Network time per validation batch of 4 with the quick config's network, on one thread of a shared,
loaded CPU: 2.2 s for the two passes, 1.2 s for one (medians of 7; 7.8 and 4.1 s under a heavier load). Test
logs no loss: its metrics are the figures to report.

Training: FCOS has no ignore label, so points inside DontCare regions are trained as background (they hold
only tiny or far objects); boxes under 1 px left by crops are dropped and counted
(``train/dropped_degenerate_boxes``), and so are the boxes a crop left less than ``min_visibility`` of, which
the augmentation removes (``train/cropped_out_boxes``, each epoch's sum over every rank: expected, information).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Collection, Sequence
from importlib import import_module
from pathlib import Path

import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import nn
from torchmetrics.detection import MeanAveragePrecision
from torchvision.ops import StochasticDepth

from domains.driving.classes import DETECTION_CLASSES
from domains.driving.detection.metrics import (
    FEW_OBJECTS_WARNING,
    KITTI_DIFFICULTY,
    KITTI_IMAGE_HEIGHT,
    KITTI_MIN_OVERLAP,
    ap50_per_class,
    kitti_average_precision,
    with_crowd_regions,
)
from domains.driving.detection.model import RoadDetector, as_image_list, box_in_ignore_fraction
from domains.driving.detection.operating_point import best_f1_threshold
from domains.driving.formats import KITTI_TYPES
from shared.backbones import list_backbones
from shared.files import check_output_folder
from shared.labelled_task import LabelledTask, check_distinct_class_names
from shared.task import FrozenBackboneCheck, gather_lists

# Evaluation / prediction choices of every detector task, not part of what was trained (kept out of checkpoints,
# see DetectorTask.__init__).
DETECTOR_RUNTIME_ARGS = (
    "pretrained_backbone",
    "pretrained_prefix",
    "score_thresh",
    "nms_thresh",
    "detections_per_img",
    "ignore_overlap",
    "predict_dir",
    "predict_score_thresh",
)


#: layers whose training mode updates a state or draws at random; kept in eval mode by
#: :meth:`DetectorTask.losses_without_update`
STATEFUL_OR_RANDOM = (nn.modules.batchnorm._NormBase, nn.modules.dropout._DropoutNd, StochasticDepth)


def local_mean_ap(**kwargs) -> MeanAveragePrecision:
    """A torchmetrics ``MeanAveragePrecision`` that never syncs itself: compute it with
    :func:`mean_ap_over_ranks`."""
    return MeanAveragePrecision(**kwargs, sync_on_compute=False)


def mean_ap_over_ranks(metric: MeanAveragePrecision) -> dict:
    """``metric.compute()`` over every DDP rank's images, on every rank: what one process over the whole split
    computes. ``metric`` (built by :func:`local_mean_ap`) keeps its own rank's images afterwards.

    torchmetrics syncs the metric's per-image list states one tensor (one image) at a time, so ranks holding
    different numbers of images (the no-repeat evaluation sampler's shares, :mod:`shared.data`) issued
    different numbers of collectives and gloo aborted ("Is there a distributed collective mismatch"); its
    mask lists are also interleaved as if every rank held as many images. Here the states travel in one
    ``all_gather_object`` (:func:`shared.task.gather_lists`), concatenated in rank order."""
    if metric.sync_on_compute:
        raise ValueError("mean_ap_over_ranks needs a metric built with sync_on_compute=False (local_mean_ap)")
    local = metric.metric_state
    ranks = gather_lists([local])
    if len(ranks) == 1:
        return metric.compute()
    try:
        for name in local:
            setattr(metric, name, [item for state in ranks for item in state[name]])
        return metric.compute()
    finally:
        for name, value in local.items():
            setattr(metric, name, value)


class DetectorTask(FrozenBackboneCheck, LabelledTask):
    """What the tasks on a torchvision detector (boxes here, masks in :mod:`domains.driving.instances`) share:
    their common arguments, building the network with its post-processing and pretrained backbone, the training
    step's loss logging, validation's ``val/loss`` (:meth:`losses_without_update`), the prediction writer, the
    data module's annotations by image id and the epoch's headline metric. A subclass names its network class
    (``NETWORK``) and its run-time arguments; its own arguments come first, then these:

    Args:
        class_names: classes in the order of the data module's labels (must match it).
        pretrained_backbone: local weight file (torchvision ``.pth`` or Lightning ``.ckpt``, e.g. a trained road
            detector) for the backbone; nothing is downloaded. The load report is printed.
        pretrained_prefix: key prefix selecting the backbone inside the file (a detection checkpoint:
            ``model.detector.backbone.body.``; an instance checkpoint: ``model.segmenter.backbone.body.``).
        score_thresh: detections below this score are dropped at evaluation (low: AP needs the whole curve).
        nms_thresh: IoU of the (per-class) non-maximum suppression.
        detections_per_img: at most this many detections per image.
        ignore_overlap: a detection with more than this share of it in a DontCare region is counted in
            ``<stage>/ignored_detections`` and left out of the shipped operating point (the COCO metrics ignore
            it by COCO's crowd rule when it matches no object).
        predict_dir: where ``predict`` writes its files; ``None`` only returns the predictions.
        predict_score_thresh: detections below this score are left out of the drawn images and maps (the
            instance task leaves them out of what ``predict`` returns too: their masks at the photo's size);
            the detection task's null: its fitted operating point (:class:`DetectionTask`).
        base_task_args: ``optimizer``, ``lr_scheduler``, ``nonfinite_loss`` (see :class:`shared.task.BaseTask`).
    """

    FROZEN_OPTION = "--model.network.init_args.freeze_backbone"
    TRAINED_PART = "the FPN and heads"

    #: ``"module:Class"`` of the prediction writer (``predict_dir``), imported only when predicting
    WRITER = "domains.driving.detection.predict:KittiPredictionWriter"
    #: the network's base class
    NETWORK: type = RoadDetector
    #: evaluation / prediction choices, not part of what was trained (kept out of checkpoints)
    RUNTIME_ARGS: tuple[str, ...] = DETECTOR_RUNTIME_ARGS

    def __init__(
        self,
        network,
        class_names: list[str] = list(DETECTION_CLASSES),  # noqa: B006 - becomes a CLI default
        pretrained_backbone: str | None = None,
        pretrained_prefix: str = "",
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
        ignore_overlap: float = 0.5,
        predict_dir: str | None = None,
        predict_score_thresh: float = 0.5,
        **base_task_args,
    ):
        super().__init__(**base_task_args)
        # Run-time choices stay out of the checkpoint: LightningCLI re-applies a checkpoint's hyperparameters
        # over the command line, so a stored predict_dir / score threshold would override the user's, and a
        # moved pretrained file would break loading weights the checkpoint already holds.
        self.save_hyperparameters(ignore=list(self.RUNTIME_ARGS))
        check_distinct_class_names(class_names)
        self.model = self.build_labelled_network(network, self.NETWORK, class_names)
        self.model.set_postprocess(
            score_thresh=score_thresh, nms_thresh=nms_thresh, detections_per_img=detections_per_img
        )
        if pretrained_backbone:  # a frozen backbone must be given whole (FrozenBackboneCheck, at fit start)
            self.load_pretrained_backbone(pretrained_backbone, pretrained_prefix)
        self._annotation_index: tuple[tuple, dict] | None = None  # ((source, splits read), id -> annotation)
        self.ignore_overlap = ignore_overlap
        self.predict_dir = predict_dir
        self.predict_score_thresh = predict_score_thresh

    def configure_callbacks(self):
        if not self.predict_dir:
            return []
        module, name = self.WRITER.split(":")
        writer = getattr(import_module(module), name)
        # the writer reads predict_score_thresh when predicting starts, after the checkpoint (and a detector's
        # fitted operating point) is loaded; the callbacks are built before that
        return [writer(self.predict_dir, self.class_names)]

    def setup(self, stage: str) -> None:
        """Refuse a ``predict_dir`` that is a file before predict writes anything (the writer failed after the
        first batch, naming no option)."""
        super().setup(stage)
        if stage == "predict" and self.predict_dir:
            check_output_folder(self.predict_dir, "--model.predict_dir")

    def training_targets(self, targets: Sequence[dict]) -> list[dict]:
        """The targets a training step gives the model (as they come; a task may clean them)."""
        return list(targets)

    @torch.no_grad()
    def losses_without_update(self, images: list[torch.Tensor], targets: list[dict]) -> dict[str, torch.Tensor]:
        """The network's training losses on ``images`` with nothing learnt from them: torchvision detectors
        return losses only in training mode, so the network runs in it once more with BatchNorm (and every
        running-statistics norm), dropout and stochastic depth in eval mode (the common practice for a
        detector's validation loss), no gradients, the random stream forked (an RPN's proposal sampling, the
        transform's size draw: the next training batch draws as without this call) and, for a network with
        ``input_size`` (multi-scale training), at the evaluation size. Every module's mode is restored."""
        modes = [(module, module.training) for module in self.model.modules()]
        train_sizes = getattr(self.model, "_train_sizes", None)
        device = images[0].device if len(images) else self.device
        forked = [] if device.type == "cpu" else [device]
        try:
            self.model.train()
            for module in self.model.modules():
                if isinstance(module, STATEFUL_OR_RANDOM):
                    module.eval()
            if train_sizes is not None:  # RoadDetector: the sizes training draws from, here the evaluation's
                self.model._train_sizes = self.model.evaluation_sizes
            with torch.random.fork_rng(devices=forked, device_type=device.type):
                return self.model(images, targets)
        finally:
            for module, training in modes:
                module.training = training
            if train_sizes is not None:
                self.model._train_sizes = train_sizes

    def validation_loss_targets(self, targets: Sequence[dict]) -> list[dict] | None:
        """The targets the validation loss gives the model (as they come; a task may clean them as its
        :meth:`training_targets` does, counting nothing), or None when this batch can give it none (nothing is
        logged)."""
        return list(targets)

    def validation_step(self, batch, batch_idx):
        self._log_validation_loss(batch)
        super().validation_step(batch, batch_idx)

    def _log_validation_loss(self, batch) -> None:
        """``val/loss`` (on the progress bar) and its terms, as ``train/*`` names them: the epoch's means over
        the validation images on every rank (:meth:`~shared.task.BaseTask.log_mean`; each batch's value is the
        network's loss over the batch, weighted by its images), computed by :meth:`losses_without_update` on
        the targets of :meth:`validation_loss_targets`."""
        images, targets = batch
        targets = self.validation_loss_targets(targets)
        if targets is None:
            return
        self.log_validation_losses(self.losses_without_update(images, targets), len(images))

    def log_validation_losses(self, losses: dict[str, torch.Tensor], batch_size: int) -> None:
        """``val/loss`` (on the progress bar) and each term of a batch of ``batch_size`` images."""
        self.log_mean("val/loss", sum(losses.values()), batch_size, prog_bar=True)
        for name, value in losses.items():
            self.log_mean(f"val/{name}", value, batch_size)

    def log_cropped_out(self, targets: Sequence[dict], batch_size: int) -> None:
        """``train/cropped_out_boxes``: the boxes (the instance task: the objects' masks) the training crops
        removed, each item's ``cropped_out``, counted by the dataset in the loader's worker
        (:class:`~domains.driving.detection.data.DetectionDataset`,
        :class:`~domains.driving.instances.data.InstanceDataset`), summed over the epoch and the ranks. Logged at
        every step, 0 included: a rank that never logged it would miss the epoch's all-reduce."""
        cropped = sum(int(t.get("cropped_out", 0)) for t in targets)
        self.log(
            "train/cropped_out_boxes", float(cropped), on_step=False, on_epoch=True, reduce_fx="sum",
            sync_dist=True, batch_size=batch_size,
        )  # fmt: skip

    def log_training_losses(self, losses: dict[str, torch.Tensor], batch_size: int) -> torch.Tensor | None:
        """The summed loss (None when :meth:`guard_loss` skips the step), logged with each term."""
        loss = self.guard_loss(sum(losses.values()), losses)
        if loss is None:
            return None
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        for name, value in losses.items():
            self.log(f"train/{name}", value, batch_size=batch_size)
        return loss

    def _annotations(self) -> dict:
        """image_id -> raw annotation (with ``image_path``) from the data module (empty when it has none): while
        predicting your own photos (``--data.predict_path``) theirs only, so a photo is drawn on itself, never on
        a training image of the same name. Only the splits the data module has read so far are indexed
        (:class:`~domains.driving.detection.data.SplitRecords`' ``read_splits``, the running stage's): indexing
        every split read the val and train labels in ``test`` and ``predict`` (their class notes printed after
        ``Testing:``, thousands of label files on full KITTI). The index is rebuilt when another split is read."""
        dm = getattr(self.trainer, "datamodule", None)
        own = (getattr(dm, "datasets", None) or {}).get("predict") if self.trainer.predicting else None
        source = own if own is not None else dm
        splits = getattr(dm, "splits", None) or {}
        read = getattr(splits, "read_splits", splits) if own is None else {}  # a plain dict: all of it
        key = (source, tuple(read))
        if self._annotation_index is None or self._annotation_index[0] != key:
            records = own.annotations if own is not None else [a for items in read.values() for a in items]
            self._annotation_index = (key, {a.image_id: a for a in records})
        return self._annotation_index[1]

    def image_record(self, image_id: str):
        """The data module's record of a predicted image (its file, whether it is read as stored), or None."""
        return self._annotations().get(image_id) if self._trainer is not None else None

    def image_path(self, image_id: str) -> str | None:
        """The file of a predicted image, when the data module knows it."""
        ann = self.image_record(image_id)
        return ann.image_path if ann is not None else None

    def log_with_headline(self, values: dict[str, float], headline: str) -> dict[str, float]:
        """Log ``values`` with ``headline`` on the progress bar; return them. Every rank computed them
        from every rank's images (:func:`mean_ap_over_ranks`, :func:`shared.task.gather_lists`), so they
        are logged as settled (:meth:`shared.task.BaseTask.log_settled`): no "recommended to use sync_dist"
        line each under DDP."""
        self.log_settled(values, prog_bar=(headline,))
        return values



def kitti_height_scale(setting: float | None, data_path: str | None) -> float:
    """What multiplies KITTI's minimum box heights (pixels of its 375-px frames): ``setting`` when given; else
    the synthetic frames' height / 375 on the synthetic default (``data_path`` None or its folder), and 1 (the
    devkit's limits) on one's own data, which a config written for the synthetic frames must not rescale
    silently. A converted copy of the synthetic set is one's own data here: set the scale for it."""
    if setting is not None:
        return float(setting)
    from domains.driving.synthetic.scene import DEFAULT_SIZE  # lazy: the generator is optional at import
    from domains.driving.synthetic.writers import DEFAULT_KITTI_ROOT

    synthetic = data_path is None or Path(data_path).resolve() == Path(DEFAULT_KITTI_ROOT).resolve()
    return DEFAULT_SIZE[1] / KITTI_IMAGE_HEIGHT if synthetic else 1.0

class DetectionTask(DetectorTask):
    """FCOS road-scene detector: trains :class:`RoadDetector` and evaluates it with COCO and KITTI AP.

    Args:
        network: the detector, as ``class_path: domains.driving.detection.model.RoadDetector`` + ``init_args``
            (``backbone``: a registered backbone: {backbones}; ``input_size``, ``fpn_levels``, ``fpn_channels``,
            ``head_convs``, ``semantic_classes``, ...: ``--model.network.help RoadDetector``). ``num_classes``
            comes from ``data.class_names`` (linked by the CLI). ``input_size`` is not linked to
            ``data.image_size`` (null there: native sizes; a larger network input upsamples on purpose, as
            the shipped 384x1280 detector on 192x640 frames): a larger ``data.image_size`` is refused at fit.
        nms_thresh: IoU of non-maximum suppression.
        predict_score_thresh: boxes ``predict`` draws (the KITTI files keep all) and test's ``test/f1``; null:
            the operating point fitted at validation (best F1, kept in the checkpoint), 0.5 before one is.
        kitti_difficulties: KITTI AP levels computed at validation and test (empty: no KITTI AP).
        kitti_min_height_scale: multiplies the levels' minimum box heights (40 / 25 px of KITTI's 375-px
            frames) for data at another resolution. null: 192 / 375 = 0.512 on the synthetic default (its frames
            are 192 px tall), 1 (the devkit's limits) on one's own data (``data.data_path`` set).
        detector_args: the arguments of :class:`DetectorTask` (``class_names``, thresholds, ``predict_dir``: KITTI
            result files ``data/<id>.txt`` and drawn images ``images/<id>.png``, ...).
    """

    RUNTIME_ARGS = (*DETECTOR_RUNTIME_ARGS, "kitti_difficulties", "kitti_min_height_scale")

    #: what ``predict`` draws at (``predict_score_thresh`` null) before validation fitted an operating point
    UNFITTED_SCORE_THRESH = 0.5

    def __init__(
        self,
        network: RoadDetector,
        nms_thresh: float = 0.6,
        kitti_difficulties: list[str] = ["easy", "moderate", "hard"],  # noqa: B006
        kitti_min_height_scale: float | None = None,
        predict_score_thresh: float | None = None,
        **detector_args,
    ):
        super().__init__(
            network, nms_thresh=nms_thresh, predict_score_thresh=predict_score_thresh, **detector_args
        )
        # the best-F1 score threshold of the last validation (NaN: none yet); a buffer, so checkpoints keep it
        self.register_buffer("operating_threshold", torch.tensor(float("nan")))
        bad = [d for d in kitti_difficulties if d not in KITTI_DIFFICULTY]
        if bad:
            raise ValueError(f"kitti_difficulties {bad} unknown; choose from {list(KITTI_DIFFICULTY)}")
        if kitti_min_height_scale is not None and not kitti_min_height_scale > 0:
            raise ValueError(f"kitti_min_height_scale must be > 0 (or null), got {kitti_min_height_scale}")
        self.kitti_difficulties = list(kitti_difficulties)
        self.kitti_min_height_scale = kitti_min_height_scale
        self.dropped_degenerate = 0
        self._metrics: dict[str, MeanAveragePrecision] = {}
        self._kitti: dict[str, tuple[list, list]] = {}
        self._ignored_detections: dict[str, int] = {}
        self._f1_boxes: dict[str, tuple[list, list]] = {}  # per stage: detections and ground truth for F1

    @property
    def predict_score_thresh(self) -> float:
        """The score ``predict`` draws from: ``predict_score_thresh`` when given, else the fitted operating
        point (:attr:`operating_threshold`), else :data:`UNFITTED_SCORE_THRESH`."""
        if self._predict_score_thresh is not None:
            return float(self._predict_score_thresh)
        fitted = float(self.operating_threshold)
        return fitted if math.isfinite(fitted) else self.UNFITTED_SCORE_THRESH

    @predict_score_thresh.setter
    def predict_score_thresh(self, value: float | None) -> None:
        self._predict_score_thresh = value

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Checkpoints written before the operating point was fitted have none: NaN (draw at 0.5)."""
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("state_dict")
        if state is not None:
            state.setdefault("operating_threshold", torch.tensor(float("nan")))

    def on_load_card(self, card: dict, given: Collection[str] = ()) -> None:
        """Shipped weights hold ``task.model`` alone, not this task's :attr:`operating_threshold`: the card's
        ``operating_point`` threshold (the one fitted at validation) is restored, so ``predict`` draws at it as
        from the checkpoint (a ``predict_score_thresh`` given still wins)."""
        from shared.shipped import card_number

        super().on_load_card(card, given)
        threshold = card_number(card, "operating_point", "threshold")
        if threshold is not None:
            self.operating_threshold.fill_(threshold)

    # ---------------------------------------------------------------------------------------------- setup
    def setup(self, stage: str) -> None:
        super().setup(stage)
        dm = self.attached_datamodule()
        self.check_image_size(getattr(dm, "image_size", None), stage)
        needs_maps = stage == "fit" and self.model.semantic_head is not None
        if needs_maps and dm is not None and not getattr(dm, "semantic_maps", False):
            raise ValueError(
                f"model.network.init_args.semantic_classes is {self.model.semantic_classes} but the data module "
                "reads no semantic maps: set data.semantic_maps true (or the weight 0)"
            )

    def check_image_size(self, image_size: Sequence[int] | None, stage: str) -> None:
        """The network fits every image into its own ``input_size`` again: a ``data.image_size`` box larger
        than it (short or long side) was shrunk back without a word, so ``--data.image_size [384, 1280]``
        trained at 192x640. Refused at fit, warned of otherwise (a checkpoint's network takes the size it was
        trained at). Smaller (the network upsamples) and null (native sizes) are fine."""
        if image_size is None:
            return
        box = sorted(int(v) for v in image_size)
        network = sorted(self.model.input_size)
        if box[0] <= network[0] and box[1] <= network[1]:
            return
        size = list(self.model.input_size)
        message = (
            f"--data.image_size {list(image_size)} is larger than the network's input_size {size}: the "
            f"network would shrink every image back into {size}"
        )
        if stage == "fit":
            raise ValueError(
                f"{message}. Set --model.network.init_args.input_size {list(image_size)} too (or a smaller "
                "--data.image_size)"
            )
        rank_zero_warn(f"{message}, the size this checkpoint's network was built for")

    # ------------------------------------------------------------------------------------------- training
    def on_train_start(self) -> None:
        super().on_train_start()
        self.dropped_degenerate = (
            0  # count this fit's boxes only (not, e.g., a benchmark's calibration steps)
        )

    def training_targets(self, targets: Sequence[dict]) -> list[dict]:
        """Boxes narrower or lower than 1 px (left by crops) make FCOS raise: drop them and count them."""
        out, dropped = _without_degenerate_boxes(targets)
        self.dropped_degenerate += dropped
        return out

    def training_step(self, batch, batch_idx):
        images, targets = batch
        self.log_cropped_out(targets, len(images))
        losses = self.model(images, self.training_targets(targets))
        loss = self.log_training_losses(losses, len(images))
        if loss is not None and self.dropped_degenerate:
            self.log("train/dropped_degenerate_boxes", float(self.dropped_degenerate), batch_size=len(images))
        return loss

    # ----------------------------------------------------------------------------------------- evaluation
    def validation_step(self, batch, batch_idx):
        """``val/loss`` and the detections the metrics score from one pass of the network
        (:meth:`losses_and_detections`); a batch of several image sizes, or one whose loss is not logged, takes
        :class:`DetectorTask`'s two passes."""
        images, targets = batch
        loss_targets = self.validation_loss_targets(targets)
        both = None if loss_targets is None else self.losses_and_detections(images, loss_targets)
        if both is None:
            return super().validation_step(batch, batch_idx)
        self.log_validation_losses(both[0], len(images))
        self._evaluation_step(batch, "val", both[1])

    @torch.no_grad()
    def losses_and_detections(
        self, images: list[torch.Tensor], targets: list[dict]
    ) -> tuple[dict[str, torch.Tensor], list[dict]] | None:
        """Validation's training losses and detections from one pass of the network in eval mode: the steps of
        torchvision's ``FCOS.forward`` (its transform, backbone, head, anchors, then ``compute_loss`` and
        ``postprocess_detections``), which computes either the losses (training) or the detections (eval) from
        the same head outputs, plus the semantic head's loss as ``RoadDetector.forward`` adds it. Written by
        hand because FCOS returns only one of the two; with BatchNorm and dropout in eval mode the head outputs
        are those of :meth:`losses_without_update`'s pass, and the eval transform draws no random size. None
        (two passes needed) in training mode or for images of several sizes: detections go one pass per size
        (``RoadDetector.detect_by_size``), the loss over the padded batch."""
        model = self.model
        images = as_image_list(images, model.backbone.in_channels)
        if model.training or len({tuple(image.shape[-2:]) for image in images}) > 1:
            return None
        fcos = model.detector
        fcos.transform.min_size, fcos.transform.max_size = model.evaluation_sizes
        original_sizes = [(int(image.shape[-2]), int(image.shape[-1])) for image in images]
        batch, moved = fcos.transform(images, [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets])
        features = fcos.backbone(batch.tensors)
        levels = list(features.values())
        outputs, anchors = fcos.head(levels), fcos.anchor_generator(batch, levels)
        per_level = [level.size(2) * level.size(3) for level in levels]
        losses = fcos.compute_loss(moved, outputs, anchors, per_level)
        if model.semantic_head is not None:
            semantic = model.semantic_loss(features, batch, [t["semantic"] for t in targets])
            losses = {**losses, "semantic": model.semantic_loss_weight * semantic}
        split = {name: list(value.split(per_level, dim=1)) for name, value in outputs.items()}
        found = fcos.postprocess_detections(split, [list(a.split(per_level)) for a in anchors], batch.image_sizes)
        return losses, fcos.transform.postprocess(found, batch.image_sizes, original_sizes)

    def validation_loss_targets(self, targets: Sequence[dict]) -> list[dict] | None:
        """Boxes under 1 px are left out as in training (not counted in ``train/dropped_degenerate_boxes``);
        each batch's loss is FCOS's mean over its images' foreground points. None (no loss logged) for a network
        with a semantic head on data without semantic maps (``validate`` of such a checkpoint): its loss needs
        them."""
        targets, _ = _without_degenerate_boxes(targets)
        if self.model.semantic_head is not None and not all("semantic" in t for t in targets):
            return None
        return targets

    def _metric(self, stage: str) -> MeanAveragePrecision:
        if stage not in self._metrics:
            # AP over IoU 0.5:0.95 (COCO) with per-class values; the extended summary gives per-class AP50
            self._metrics[stage] = local_mean_ap(
                box_format="xyxy", backend="faster_coco_eval", class_metrics=True, extended_summary=True
            )
        return self._metrics[stage]

    def predict_original(
        self, images: list[torch.Tensor], targets: Sequence[dict] | None = None
    ) -> list[dict]:
        """Detections for a batch, in the original image coordinates (``orig_size`` of each target)."""
        return self.to_original(images, self.model(images), targets)

    def to_original(
        self, images: list[torch.Tensor], preds: list[dict], targets: Sequence[dict] | None = None
    ) -> list[dict]:
        """The network's detections ``preds`` of ``images`` in the original image coordinates."""
        return _boxes_scaled(preds, _scales_to_original(images, targets))

    def scored_original(
        self, images, targets: list[dict], preds: list[dict] | None = None
    ) -> list[tuple[dict, dict, dict, torch.Tensor]]:
        """Per image (``preds``: the network's detections where computed already), in the original pixels: all
        detections, those not lying mostly inside a DontCare / crowd region (``ignore_overlap``), the ground truth
        and its ignore boxes. The COCO and KITTI metrics score all detections (each with its own DontCare rule: a
        detection matching an object stays a hit) and count the others (``ignored_detections``); the shipped
        operating point (``apps/ship_weights.py``) drops them before its matching, the simpler rule its card
        names."""
        out = []
        scales = _scales_to_original(images, targets)  # for the detections, the ground truth and DontCare
        # without preds, predict_original returns the detections already in original pixels
        found = self.predict_original(images, targets) if preds is None else _boxes_scaled(preds, scales)
        for pred, target, scale in zip(found, targets, scales):
            ignore = target.get("ignore_boxes", torch.zeros(0, 4)).to(pred["boxes"]) * scale
            covered = box_in_ignore_fraction(pred["boxes"], ignore, pred["labels"], target.get("ignore_labels"))
            keep = covered <= self.ignore_overlap
            kept = {k: pred[k][keep] for k in ("boxes", "scores", "labels")}
            gt = {"boxes": target["boxes"].to(pred["boxes"]) * scale, "labels": target["labels"]}
            out.append((pred, kept, gt, ignore))
        return out

    def _evaluation_step(self, batch, stage: str, preds: list[dict] | None = None) -> None:
        images, targets = batch
        coco = self._metric(stage)
        kitti_dets, kitti_gts = self._kitti.setdefault(stage, ([], []))
        f1_preds, f1_gts = self._f1_boxes.setdefault(stage, ([], []))  # the operating point's rule: kept only
        annotations = self._annotations()
        class_map = getattr(getattr(self._trainer, "datamodule", None), "class_map", None) or {}
        for target, (pred, kept, gt, ignore) in zip(targets, self.scored_original(images, targets, preds)):
            inside = len(pred["boxes"]) - len(kept["boxes"])  # mostly in DontCare
            self._ignored_detections[stage] = self._ignored_detections.get(stage, 0) + inside
            # metrics live outside the module (not moved with it): feed them CPU tensors
            gt = {k: v.cpu() for k, v in gt.items()}
            crowd = with_crowd_regions(gt, ignore.cpu(), len(self.class_names), ignore_labels=target.get("ignore_labels"))
            coco.update([{k: pred[k].cpu() for k in ("boxes", "scores", "labels")}], [crowd])
            f1_preds.append({k: v.cpu() for k, v in kept.items()})
            f1_gts.append(gt)
            if self.kitti_difficulties:
                kitti_dets.append(self._kitti_detections(pred))
                ann = annotations.get(target.get("image_id"))
                kitti_gts.append(_kitti_ground_truth(ann, gt, ignore, self.class_names, class_map))

    def _kitti_detections(self, pred: dict) -> list[dict]:
        return [
            {"type": self.class_names[int(label)], "bbox": box.tolist(), "score": float(score)}
            for box, score, label in zip(pred["boxes"].cpu(), pred["scores"].cpu(), pred["labels"].cpu())
        ]

    def _log_epoch_metrics(self, stage: str) -> dict[str, float]:
        if stage not in self._metrics:
            return {}
        res = mean_ap_over_ranks(self._metrics.pop(stage))
        sanity = getattr(self._trainer, "sanity_checking", False)  # two batches are no evaluation set
        self.warn_undefined_map(stage, float(res["map"]))
        values: dict[str, float] = {
            f"{stage}/map": float(res["map"]),
            f"{stage}/map50": float(res["map_50"]),
            f"{stage}/map75": float(res["map_75"]),
            f"{stage}/mar100": float(res["mar_100"]),
        }
        for cls, value in zip(_as_list(res["classes"]), _as_list(res["map_per_class"])):
            if value >= 0:  # torchmetrics reports -1 for classes without ground truth
                values[f"{stage}/ap/{self.class_names[int(cls)]}"] = float(value)
        for cls, value in ap50_per_class(res).items():
            values[f"{stage}/ap50/{self.class_names[cls]}"] = value
        # KITTI AP, F1 and the ignored count are plain Python state: one gather brings every rank's images
        kitti, f1_boxes = self._kitti.pop(stage, ([], [])), self._f1_boxes.pop(stage, ([], []))
        ranks = gather_lists([(*kitti, self._ignored_detections.pop(stage, 0), *f1_boxes)])
        dets = [d for rank in ranks for d in rank[0]]
        gts = [g for rank in ranks for g in rank[1]]
        f1_preds, f1_gts = [p for rank in ranks for p in rank[3]], [g for rank in ranks for g in rank[4]]
        values.update(self._operating_point(stage, f1_preds, f1_gts))
        if dets:
            kitti_classes = [c for c in self.class_names if c.lower() in KITTI_MIN_OVERLAP]
            dm = self.attached_datamodule()
            height_scale = kitti_height_scale(self.kitti_min_height_scale, getattr(dm, "data_path", ""))
            for level in self.kitti_difficulties:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message="KITTI AP: no valid")
                    if sanity:
                        warnings.filterwarnings("ignore", message=FEW_OBJECTS_WARNING)
                    aps = kitti_average_precision(
                        dets, gts, classes=kitti_classes, difficulty=level,
                        min_height_scale=height_scale,
                    )  # fmt: skip
                for cls, value in aps.items():
                    if not math.isnan(value):
                        values[f"{stage}/kitti_{level}/{cls}"] = value
                finite = [v for v in aps.values() if not math.isnan(v)]
                if finite:
                    values[f"{stage}/kitti_{level}/mean"] = sum(finite) / len(finite)
                    values[f"{stage}/kitti_{level}/num_classes"] = float(len(finite))
                if not sanity:
                    self._say_kitti_classes_left_out(stage, level, [c for c, v in aps.items() if math.isnan(v)])
        values[f"{stage}/ignored_detections"] = float(sum(rank[2] for rank in ranks))
        return self.log_with_headline(values, f"{stage}/map50")

    _kitti_gaps_said: set | None = None  # (stage, level, classes) said by _say_kitti_classes_left_out

    def _say_kitti_classes_left_out(self, stage: str, level: str, left_out: list[str]) -> None:
        """A class with no valid ground truth at ``level`` has no AP (NaN; the devkit prints 0 for it), so
        ``kitti_<level>/mean`` averages fewer classes (``num_classes``): said once per stage, level and classes,
        as a mean over Car and Pedestrian reads like one over all three."""
        if self._kitti_gaps_said is None:
            self._kitti_gaps_said = set()
        if not left_out or (stage, level, tuple(left_out)) in self._kitti_gaps_said:
            return
        self._kitti_gaps_said.add((stage, level, tuple(left_out)))
        rank_zero_warn(
            f"{stage}: KITTI AP at {level}: no valid {', '.join(left_out)} ground truth in this split (the devkit "
            f"would print 0 for it); {stage}/kitti_{level}/mean averages the other classes only"
        )

    def _operating_point(self, stage: str, preds: list[dict], targets: list[dict]) -> dict[str, float]:
        """Validation: fit :attr:`operating_threshold` (the best pooled F1, :func:`best_f1_threshold`) and log
        it; test: F1 at the threshold ``predict`` draws at. Nothing without ground truth (F1 would rank
        thresholds by false positives alone) or during the sanity check (two batches)."""
        if not any(len(t["boxes"]) for t in targets) or getattr(self._trainer, "sanity_checking", False):
            return {}
        if stage == "val":
            point = best_f1_threshold(preds, targets)
            self.operating_threshold.fill_(point["threshold"])
            name = "val/best_f1"
        else:
            point = best_f1_threshold(preds, targets, thresholds=(self.predict_score_thresh,))
            name = f"{stage}/f1"
        return {
            name: point["f1"],
            f"{name}_threshold": point["threshold"],
            f"{name}_precision": point["precision"],
            f"{name}_recall": point["recall"],
        }

    def predict_step(self, batch, batch_idx, dataloader_idx: int = 0):
        images, targets = batch if isinstance(batch, (tuple, list)) and len(batch) == 2 else (batch, None)
        preds = self.predict_original(images, targets)
        for i, pred in enumerate(preds):
            target = targets[i] if targets is not None else {}
            pred["image_id"] = target.get("image_id", f"{batch_idx:06d}_{i}")
            pred["image_path"] = self.image_path(pred["image_id"])
            pred["orig_size"] = tuple(target.get("orig_size", images[i].shape[-2:]))
        return preds


def _without_degenerate_boxes(targets: Sequence[dict]) -> tuple[list[dict], int]:
    """The targets a detector's loss takes (boxes, labels and a semantic map if any) without boxes narrower or
    lower than 1 px, which make FCOS raise; and how many were dropped."""
    out, dropped = [], 0
    for t in targets:
        boxes = t["boxes"]
        ok = ((boxes[:, 2] - boxes[:, 0]) >= 1) & ((boxes[:, 3] - boxes[:, 1]) >= 1)
        dropped += int((~ok).sum())
        kept = {"boxes": boxes[ok], "labels": t["labels"][ok]}
        if "semantic" in t:
            kept["semantic"] = t["semantic"]
        out.append(kept)
    return out, dropped


def _scale_to_original(image: torch.Tensor, target: dict | None) -> torch.Tensor:
    """xyxy multipliers from the tensor's pixel grid to the original image's (ones without ``orig_size``)."""
    h, w = image.shape[-2:]
    if target is None or "orig_size" not in target:
        return image.new_ones(4)
    oh, ow = target["orig_size"]
    sx, sy = float(ow) / w, float(oh) / h
    return image.new_tensor([sx, sy, sx, sy])


def _scales_to_original(images: Sequence[torch.Tensor], targets: Sequence[dict] | None) -> list[torch.Tensor]:
    """:func:`_scale_to_original` of each image (its target's ``orig_size``; ones without ``targets``)."""
    return [
        _scale_to_original(image, None if targets is None else targets[i]) for i, image in enumerate(images)
    ]


def _boxes_scaled(preds: Sequence[dict], scales: Sequence[torch.Tensor]) -> list[dict]:
    """Each detection dict of ``preds`` with its ``boxes`` multiplied by its image's xyxy ``scales``."""
    return [{**pred, "boxes": pred["boxes"] * scale} for pred, scale in zip(preds, scales)]


def _as_list(x: torch.Tensor) -> list:
    return x.reshape(-1).tolist()


def _kitti_ground_truth(
    ann, gt: dict, ignore: torch.Tensor, class_names: Sequence[str], class_map: dict[str, str] | None = None
) -> list[dict]:
    """Ground truth for KITTI AP: the raw labels if known (neighbour classes, truncation, occlusion, DontCare),
    else the targets (no truncation / occlusion information: every object counts at every difficulty).

    Raw types that are KITTI's keep their name, so the devkit's neighbour rule holds (a Van is neither a Car
    nor a false positive, whatever ``class_map`` trains it as); other types (your ``Automobile``) are renamed by
    ``class_map`` as in training, or no ground truth would match their class."""
    if ann is not None:
        rename = {k: v for k, v in (class_map or {}).items() if k not in KITTI_TYPES}
        return [
            {
                "type": rename.get(o.type, o.type),
                "bbox": list(o.bbox),
                "truncated": o.truncated,
                "occluded": o.occluded,
            }
            for o in ann.objects
        ]
    objects = [
        {"type": class_names[int(label)], "bbox": box.tolist(), "truncated": 0.0, "occluded": 0}
        for box, label in zip(gt["boxes"].cpu(), gt["labels"].cpu())
    ]
    objects += [
        {"type": "DontCare", "bbox": b.tolist(), "truncated": -1, "occluded": -1} for b in ignore.cpu()
    ]
    return objects


def load_detection_task(checkpoint: str | Path, map_location: str = "cpu") -> DetectionTask:
    """Load a trained detector from a Lightning checkpoint (hyperparameters come from the checkpoint)."""
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return DetectionTask.load_checked(path, map_location=map_location)


__all__ = ["DetectionTask", "load_detection_task", "local_mean_ap", "mean_ap_over_ranks"]


# the backbone choices in ``--help`` come from the registry, so they never drift from it
DetectionTask.__doc__ = DetectionTask.__doc__.replace("{backbones}", ", ".join(list_backbones()))
