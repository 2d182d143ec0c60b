"""Road-anomaly segmentation: a closed-set road-scene segmenter whose uncertainty flags unknown objects.

The network is :class:`domains.driving.anomaly.model.AnomalySegmenter`, a plain ``nn.Module`` (the shared U-Net
decoder on any registered encoder, the outlier head, the OE calibration and the score statistics); this module
only trains and evaluates it.
Training is per-pixel cross-entropy on the known classes; with ``oe_weight > 0`` it adds *outlier exposure*:
made-up objects (:mod:`domains.driving.anomaly.outliers`) are pasted into training scenes, and a balanced,
hard-negative-mined binary loss teaches a small outlier head on the decoder maps (the "void classifier") and/or
the free energy of the segmentation logits (VOS / energy-bounded OE, scale and bias learnt) to flag them.
Why OE: post-hoc scores of a closed-set segmenter are high on every class boundary, lane marking and dark
pixel, so on the synthetic split they barely beat chance; OE tells the network what "none of the known classes"
looks like (the figures: ``benchmarks/results/driving_anomaly.md``). After fitting, one pass over training data
stores the statistics that standardized max logit (SML) and the Mahalanobis feature score need, as the model's
buffers, so checkpoints carry them.

Validation: in-distribution mIoU. Test (the anomaly set, SegmentMeIfYouCan layout): pooled pixel AP /
AUROC / FPR95 for every score, component metrics (sIoU, PPV, mean F1) and image-level AUROC for the
selected one. Predict: per-image raw score (``.npy``) and colour overlay PNG at the source image's size.
"""

from __future__ import annotations

import itertools
import math
import multiprocessing
import warnings
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader, IterableDataset
from torchmetrics.classification import MulticlassJaccardIndex
from torchmetrics.functional.classification import binary_auroc

from domains.driving.anomaly.metrics import PixelAnomalyAccumulator, SpilledMaps, component_metrics
from domains.driving.anomaly.model import (
    FIXED_RANGES,
    IGNORE_INDEX,
    STAT_BUFFERS,
    AnomalySegmenter,
    batch_images,
    batch_masks,
)
from domains.driving.anomaly.outliers import OUTLIER_LABEL, outlier_bce, paste_outliers_batch
from domains.driving.anomaly.predict import (
    ROAD_CLASS_IDS,
    image_anomaly_score,
    road_region,
    score_to_original,
    write_predictions,
)
from domains.driving.anomaly.scores import SCORES, SIMPLE_SCORES, STAT_SCORES, AnomalyScoreError
from domains.driving.classes import SEMANTIC_CLASSES, semantic_class_names
from shared.backbones import list_backbones
from shared.files import score_text, write_csv
from shared.segmentation import class_pixel_frequencies, enet_class_weights
from shared.task import BaseTask, gather_lists

#: arguments chosen at test / predict time, not stored in checkpoints (see __init__)
RUNTIME_SETTINGS = (
    "pretrained_backbone",
    "pretrained_prefix",
    "score",
    "test_scores",
    "score_smoothing",
    "image_score_method",
    "image_score_q",
    "image_score_k",
    "component_metrics",
    "component_min_pred_size",
    "component_min_gt_size",
    "score_at_label_size",
    "predict_dir",
    "overlay_alpha",
)
#: default score of a model trained without outlier exposure
DEFAULT_PLAIN_SCORE = "msp"
#: sigma (px) of the score maps' Gaussian blur in the shipped configs, the export and this task by default
DEFAULT_SCORE_SMOOTHING = 1.0


def configured_score_smoothing(model: dict) -> float:
    """The sigma a config's ``model`` section sets, else the task's default (what a fit with it ran with)."""
    chosen = model.get("score_smoothing")
    return float(DEFAULT_SCORE_SMOOTHING if chosen is None else chosen)


def fit_score_smoothing(checkpoint: dict) -> float | None:
    """The ``model.score_smoothing`` of the config a checkpoint's fit ran with, or None where the file does not
    say. It is chosen per run, so no hyper-parameter holds it, but fit checkpoints carry their run's config
    (``suite_config``, :class:`shared.cli.ConfigInCheckpoints`); files written before that, or outside the CLI,
    have none."""
    text = checkpoint.get("suite_config")
    try:
        config = yaml.safe_load(text) if isinstance(text, str) else None
    except yaml.YAMLError:
        return None
    model = config.get("model") if isinstance(config, dict) else None
    value = model.get("score_smoothing") if isinstance(model, dict) else None
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return float(value) if is_number else None


def score_smoothing_note(used: float, fit: float | None, option: str) -> str | None:
    """One line saying which smoothing sigma a run on a checkpoint uses where its fit's config (``fit``, from
    :func:`fit_score_smoothing`) used another or the file does not say, and how to get the other (``option``:
    the command's setting); None when they agree. The task's default moved from 0 to the configs' 1.0, so an
    older file's figures may have come from raw maps."""
    if fit is None:
        other = 0.0 if used else DEFAULT_SCORE_SMOOTHING
        what = "raw maps" if other == 0 else "the shipped configs' smoothing"
        return (
            f"score maps smoothed with sigma {used:g} px; the checkpoint does not record the smoothing its fit was "
            "configured with (written before checkpoints carried their run's config; the task's default was 0 "
            f"before it became the shipped configs' {DEFAULT_SCORE_SMOOTHING:g}): {option} {other:g} gives {what}"
        )
    if fit == used:
        return None
    return (
        f"score maps smoothed with sigma {used:g} px, not the {fit:g} of the config the checkpoint's fit ran "
        f"with: {option} {fit:g} scores as that config did"
    )


__all__ = [
    "DEFAULT_SCORE_SMOOTHING",
    "FIXED_RANGES",
    "AnomalySegmentationTask",
    "configured_score_smoothing",
    "fit_score_smoothing",
    "score_smoothing_note",
]


class AnomalySegmentationTask(BaseTask):
    """Road-scene segmenter + per-pixel anomaly scores, trained and evaluated through the Lightning CLI.

    Args:
        network: the segmenter, as ``class_path: domains.driving.anomaly.model.AnomalySegmenter`` + ``init_args``
            (``encoder``: a registered backbone under the shared U-Net decoder: {backbones}; ``encoder_kwargs``,
            ``decoder_channels``, ``num_classes``, ``oe_objective``, ``outlier_head_channels``: every argument
            with ``--model.network.help AnomalySegmenter``).
        score: anomaly score used by ``test`` (components, image level), ``predict`` and ``anomaly_map``:
            ``msp``, ``max_logit``, ``sml``, ``energy``, ``entropy``, ``mahalanobis``, ``outlier_prob``.
            ``None``: ``outlier_prob`` with outlier exposure, else ``msp``. This and the
            other test / predict settings (``RUNTIME_SETTINGS``) are not saved in checkpoints, so the command
            line chooses them for ``test`` / ``predict --ckpt_path``.
        test_scores: scores whose pixel metrics ``test`` reports (``None``: every score this model supports).
        score_smoothing: sigma (px) of a Gaussian blur applied to every score map (0: none); see
            :func:`~domains.driving.anomaly.scores.smooth_score_map`. Chosen per run, not a hyper-parameter; the
            default is the shipped configs' and the export's, so ``load_from_checkpoint(path)`` scores as ``test -c
            <config> --ckpt_path`` does. A loaded checkpoint's fit config may say it ran with another
            (``fit_score_smoothing``; None: the file does not say): ``test`` / ``predict`` then say in one line
            which sigma they use and how to get the other.
        class_weighting: cross-entropy class weights: ``None`` (plain), ``"enet"`` (``1 / ln(1.02 + p)`` from the
            class pixel shares ``p`` of ``class_weight_batches`` training batches, counted when training starts:
            without it the rare person, cyclist and pole classes were never predicted in a 15-minute budget and
            read as anomalies), or an explicit list of ``num_classes`` weights.
        class_weight_batches: training batches counted for ``"enet"`` weights (``None``: the whole loader).
        oe_weight: weight of the outlier-exposure loss; 0 trains a plain segmenter.
        oe_start_epoch: first epoch with outlier exposure (before it: plain cross-entropy).
        oe_prob: share of outlier-exposure training images that get pasted objects.
        oe_num_objects: [min, max] objects pasted into such an image.
        oe_size_range: [min, max] size of a pasted object, as a fraction of the image height.
        oe_road_prob: share of pasted objects placed on the road (``road_ids``).
        oe_hard_fraction: weight of hard-negative mining in the inlier half of the OE loss (see
            :func:`~domains.driving.anomaly.outliers.outlier_bce`).
        calibration_batches: training batches used for the SML / Mahalanobis statistics when a checkpoint is
            written or fit ends (``None``: the whole loader). ``calibrate(loader)`` can be called any time.
        image_score_method: the image-level score: ``quantile`` or ``topk`` of the pixel score inside the
            predicted road region.
        image_score_q: the quantile of ``quantile``.
        image_score_k: the number of pixels averaged by ``topk``.
        component_metrics: compute SMIYC component metrics in ``test`` (the selected score maps wait for the
            best-F1 threshold in a temporary file in ``TMPDIR``, 5 bytes a label pixel, until the end of the test
            epoch: memory stays flat in the number of images).
        component_min_pred_size: predicted components smaller than this (pixels) are dropped from the
            component metrics, as the SMIYC evaluation does (AnomalyTrack 500, ObstacleTrack 50, in the masks'
            own pixels: with ``score_at_label_size``); 0: off.
        component_min_gt_size: ground-truth components smaller than this (pixels) become void in the component
            metrics (SMIYC: AnomalyTrack 100, ObstacleTrack 10); 0: off.
        score_at_label_size: ``test`` scores every pixel of each label mask at the mask's own size, as the
            SegmentMeIfYouCan evaluation does: the score map goes back to the image's pixels as ``predict``
            writes it, and the mask is read from its file. False: at the network's input size, against the
            resized mask (small objects shrink or vanish, and images of every size weigh the same).
        predict_dir: where ``predict`` writes ``<name>_score.npy``, ``<name>_overlay.png``, ``image_scores.csv``.
        overlay_alpha: heatmap weight in the overlays.
        input_size: [H, W] of the frames the network is trained on (null: native frames), kept with it
            (``model.input_size``) for export and the demo; the CLI links it from ``data.image_size``.
        pretrained_backbone: local weight file for the encoder (a torchvision ``.pth``, a suite ``.ckpt`` or
            ``.safetensors``, e.g. the road detector's); nothing is downloaded. The load report is printed; a file
            of another network is an error. Not read again with ``--ckpt_path`` (the checkpoint holds it).
        pretrained_prefix: key prefix selecting the encoder inside that file (a detection checkpoint:
            ``model.detector.backbone.body.``; an anomaly checkpoint: ``model.segmenter.backbone.encoder.``).
        road_ids: the class ids of the road in the semantic maps (kept in checkpoints): outlier exposure stands
            pasted objects on them and the image score reads the road they enclose. The default [0, 1] is the
            synthetic set's road and lane marking; labelIds maps read as they are: [7]; trainIds, a Cityscapes
            download and KITTI's ``semantic/`` with ``--data.cityscapes_ids labelIds`` (labelIds read as trainIds):
            [0]. With ``"enet"``
            class weights, ids that hold no training pixel (or the default under another class count) are warned
            about when training starts, from the pixels that pass counts.
        base_task_args: ``optimizer``, ``lr_scheduler``, ``nonfinite_loss`` (see :class:`shared.task.BaseTask`).
    """

    #: set by the CLI from the data module: the network keeps the size it learnt from
    CLI_LINKS = (("data.image_size", "model.input_size"),)

    def __init__(
        self,
        network: AnomalySegmenter,
        score: str | None = None,
        test_scores: list[str] | None = None,
        score_smoothing: float = DEFAULT_SCORE_SMOOTHING,
        class_weighting: str | list[float] | None = None,
        class_weight_batches: int | None = 20,
        oe_weight: float = 0.5,
        oe_start_epoch: int = 0,
        oe_prob: float = 0.5,
        oe_num_objects: tuple[int, int] = (1, 3),
        oe_size_range: tuple[float, float] = (0.04, 0.18),
        oe_road_prob: float = 0.8,
        oe_hard_fraction: float = 0.5,
        calibration_batches: int | None = 8,
        image_score_method: str = "quantile",
        image_score_q: float = 0.999,
        image_score_k: int = 50,
        component_metrics: bool = True,
        component_min_pred_size: int = 0,
        component_min_gt_size: int = 0,
        score_at_label_size: bool = True,
        predict_dir: str = "predictions/driving_anomaly",
        overlay_alpha: float = 0.5,
        input_size: tuple[int, int] | None = None,
        road_ids: tuple[int, ...] = ROAD_CLASS_IDS,
        pretrained_backbone: str | None = None,
        pretrained_prefix: str = "",
        **base_task_args,
    ):
        super().__init__(**base_task_args)
        # Inference-time settings stay out of the checkpoint's hyper-parameters: LightningCLI overlays those on
        # the command line for ``test/predict --ckpt_path``, which would make ``--model.score`` a no-op.
        self.save_hyperparameters(ignore=list(RUNTIME_SETTINGS))
        if oe_weight < 0:
            raise ValueError(f"oe_weight must be >= 0, got {oe_weight}")
        self.oe_weight = float(oe_weight)
        self.score = self._check_score(
            score or ("outlier_prob" if self.oe_weight > 0 else DEFAULT_PLAIN_SCORE)
        )
        self.test_scores = None if test_scores is None else [self._check_score(s) for s in test_scores]
        if not (score_smoothing >= 0 and math.isfinite(score_smoothing)):
            raise ValueError(f"score_smoothing must be a finite sigma >= 0 (pixels), got {score_smoothing}")
        self.score_smoothing = float(score_smoothing)
        self.fit_score_smoothing: float | None = None  # the fit config's, of a loaded checkpoint
        self._smoothing_unsaid = False  # a checkpoint was loaded: test / predict say the sigma if it differs
        if image_score_method not in ("quantile", "topk"):
            raise ValueError(f"image_score_method must be 'quantile' or 'topk', got {image_score_method!r}")
        self.image_score_method = image_score_method
        self.image_score_q = image_score_q
        self.image_score_k = image_score_k
        self.component_metrics = component_metrics
        if min(component_min_pred_size, component_min_gt_size) < 0:
            raise ValueError(
                "component_min_pred_size and component_min_gt_size must be >= 0 pixels, got "
                f"{component_min_pred_size}, {component_min_gt_size}"
            )
        self.component_min_pred_size = int(component_min_pred_size)
        self.component_min_gt_size = int(component_min_gt_size)
        self.score_at_label_size = bool(score_at_label_size)
        self.predict_dir = predict_dir
        self.overlay_alpha = overlay_alpha
        self.model = self.build_network(network, AnomalySegmenter)
        if pretrained_backbone:
            self.load_pretrained_backbone(pretrained_backbone, pretrained_prefix)
        self.num_classes = num_classes = self.model.num_classes
        self.oe_objective = self.model.oe_objective
        self.model.input_size = (int(input_size[0]), int(input_size[1])) if input_size else None
        self.road_ids = tuple(int(i) for i in road_ids)
        if not self.road_ids or not all(0 <= i < num_classes for i in self.road_ids):
            raise ValueError(
                f"road_ids must name road classes of the model (0..{num_classes - 1}), got {list(road_ids)}: "
                "--model.road_ids (labelIds read as they are: [7]; trainIds, a Cityscapes download and KITTI's semantic/ "
                "with --data.cityscapes_ids labelIds, whose labelIds are read as trainIds: [0])"
            )
        # Cross-entropy class weights (not saved: recomputed from the data whenever training starts).
        self.register_buffer("ce_weight", torch.ones(num_classes), persistent=False)
        self.class_weighting = self._check_class_weighting(class_weighting, num_classes)
        if isinstance(self.class_weighting, list):
            self.ce_weight.copy_(torch.tensor(self.class_weighting, dtype=torch.float32))
        self.val_miou = MulticlassJaccardIndex(num_classes=num_classes, ignore_index=IGNORE_INDEX)
        self._stats_stale = False
        self.test_results: dict = {}
        self.last_calibration: dict = {}
        self._predict_rows: list[dict] = []  # image_scores.csv's rows, one per predicted image

    # ------------------------------------------------------------------------------------------- helpers
    @staticmethod
    def _check_class_weighting(value, num_classes: int):
        if value is None or value == "enet":
            return value
        if isinstance(value, str):  # an unknown scheme name: a bad value, not a bad type
            raise ValueError(  # noqa: TRY004
                f"class_weighting must be None, 'enet' or a list of {num_classes} weights, got {value!r}"
            )
        weights = [float(w) for w in value]
        if len(weights) != num_classes or not all(math.isfinite(w) and w > 0 for w in weights):
            raise ValueError(
                f"class_weighting: need {num_classes} finite positive weights (one per class), got {weights}"
            )
        return weights

    def _check_score(self, name: str) -> str:
        if name not in SCORES:
            raise ValueError(f"unknown anomaly score {name!r}; available: {', '.join(SCORES)}")
        if name == "outlier_prob" and self.oe_weight <= 0:
            raise ValueError(
                "score 'outlier_prob' needs outlier-exposure training (oe_weight > 0); with a plain segmenter "
                f"use one of {', '.join(s for s in SCORES if s != 'outlier_prob')}"
            )
        return name

    def supported_scores(self) -> list[str]:
        """Scores this model can give: the simple ones, Mahalanobis, and ``outlier_prob`` after OE training."""
        names = [*SIMPLE_SCORES, "mahalanobis"]
        if self.oe_weight > 0:
            names.append("outlier_prob")
        return names

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    # ------------------------------------------------------------------------------------------ training
    def _oe_active(self) -> bool:
        return self.oe_weight > 0 and self.current_epoch >= self.hparams.oe_start_epoch

    def training_step(self, batch, batch_idx):
        images, masks = batch_images(batch), batch_masks(batch)
        pasted = 0
        if self._oe_active():
            rng = np.random.default_rng((int(torch.initial_seed()) % 2**32, self.global_step, batch_idx))
            images, masks, pasted = paste_outliers_batch(
                images,
                masks,
                rng,
                prob=self.hparams.oe_prob,
                num_objects=self.hparams.oe_num_objects,
                size_range=self.hparams.oe_size_range,
                road_prob=self.hparams.oe_road_prob,
                road_ids=self.road_ids,
            )
        use_head = self._oe_active() and self.oe_objective in ("extra_logit", "both")
        logits, _, extra = self.model.features(images, with_outlier=use_head)
        outlier = masks == OUTLIER_LABEL
        ce_target = masks.masked_fill(outlier, IGNORE_INDEX)
        if bool((ce_target != IGNORE_INDEX).any()):
            weight = self.ce_weight if self.class_weighting is not None else None
            ce = F.cross_entropy(logits, ce_target, weight=weight, ignore_index=IGNORE_INDEX)
        else:  # an all-void batch: no class evidence, but keep the graph (mean over nothing is NaN)
            ce = logits.sum() * 0.0
        terms = {"ce": ce}
        loss = ce
        if self._oe_active() and bool(outlier.any()):
            inlier = ce_target != IGNORE_INDEX
            hard = self.hparams.oe_hard_fraction
            losses = []
            if self.oe_objective in ("extra_logit", "both"):
                losses.append(outlier_bce(extra[:, 0], outlier, inlier, hard_fraction=hard))
            if self.oe_objective in ("energy", "both"):
                losses.append(
                    outlier_bce(self.model.energy_logit(logits), outlier, inlier, hard_fraction=hard)
                )
            oe = sum(losses) / len(losses)
            terms["oe"] = oe
            loss = ce + self.oe_weight * oe
            self.model.oe_trained.fill_(True)
        if self.guard_loss(loss, terms) is None:  # skipped: a NaN must not reach the logged curves
            return None
        batch_size = images.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        for name, value in terms.items():
            self.log(f"train/{name}", value, batch_size=batch_size)
        if self.oe_weight > 0:
            self.log("train/pasted_objects", float(pasted), batch_size=batch_size)
        return loss

    def on_train_start(self) -> None:
        if self.class_weighting != "enet":
            return
        loader = self._short_pass_loader()
        if loader is None:
            raise ValueError("class_weighting='enet' needs a training loader to count class pixels in")
        limit = self.hparams.class_weight_batches
        counted = 0

        def masks():
            nonlocal counted
            for batch in itertools.islice(loader, limit):
                counted += 1
                yield batch_masks(batch)

        freq = class_pixel_frequencies(masks(), self.num_classes, IGNORE_INDEX).to(self.ce_weight.device)
        freq = self.trainer.strategy.reduce(freq, reduce_op="mean")  # one set of weights on every DDP rank
        self.ce_weight.copy_(enet_class_weights(freq).to(self.ce_weight.device))
        self._check_road_ids(freq, counted)
        names = semantic_class_names(self.num_classes)
        listed = ", ".join(f"{n} {w:.1f}" for n, w in zip(names, self.ce_weight.tolist()))
        self.print(f"cross-entropy class weights (ENet, {counted} training batches): {listed}")

    def _check_road_ids(self, freq: torch.Tensor, batches: int) -> None:
        """Warn when ``road_ids`` hold no training pixel, or are the synthetic default under another class count
        (Cityscapes labelIds / trainIds): outlier exposure would paste objects on the wrong pixels and the image
        score read the wrong region, with no error. ``freq``: the class pixel shares the ENet pass counted."""
        shares = freq.double().cpu().tolist()
        empty = [i for i in self.road_ids if shares[i] == 0]
        synthetic = self.road_ids == tuple(ROAD_CLASS_IDS) and self.num_classes != len(SEMANTIC_CLASSES)
        if not (empty or synthetic):
            return
        said = f"--model.road_ids {list(self.road_ids)}"
        if empty:
            said += "" if len(empty) == len(self.road_ids) else f": {empty}"  # the empty ones of several
            said += f" hold no labelled pixel of the {batches} training batch(es) counted"
        else:
            said += (
                f" are the synthetic set's road and lane marking ({len(SEMANTIC_CLASSES)} classes), but the model "
                f"has {self.num_classes}"
            )
        top = sorted(range(len(shares)), key=lambda i: -shares[i])[:3]
        rank_zero_warn(
            f"{said} (class pixel shares: {', '.join(f'{i} {shares[i]:.1%}' for i in self.road_ids)}; the most "
            f"common classes: {', '.join(f'{i} {shares[i]:.1%}' for i in top)}). Outlier exposure stands pasted "
            "objects on the road_ids classes and the image score reads the road they enclose. Cityscapes labelIds: "
            "road = 7 (--model.road_ids [7], 34 classes); trainIds: road = 0 (--model.road_ids [0], 19 classes; a "
            "Cityscapes download's labelIds maps, and KITTI's with --data.cityscapes_ids labelIds, are read as trainIds)"
        )

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self._stats_stale = True  # weights moved: SML / Mahalanobis statistics must be refreshed

    # ---------------------------------------------------------------------------------------- calibration
    def calibrate(
        self, loader: Iterable, max_batches: int | None = None, max_feature_pixels: int = 20000
    ) -> dict[str, float]:
        """Fill the model's SML and Mahalanobis statistics (:meth:`AnomalySegmenter.calibrate`)."""
        self.last_calibration = self.model.calibrate(loader, max_batches, max_feature_pixels)
        self._stats_stale = False
        return dict(self.last_calibration)

    def _calibration_loader(self):
        datamodule = getattr(self._trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "train_dataloader"):
            return datamodule.train_dataloader()
        return getattr(self._trainer, "train_dataloader", None)

    def _short_pass_loader(self):
        """The training loader of the passes that read a few of its batches (the ENet class counts, the SML /
        Mahalanobis calibration): the same data, sampler and collation, its workers not persistent, so they end
        with the pass. Iterating the training loader itself kept its persistent workers running after the pass,
        and on Lightning's own loader (a fit without a data module) restarted the epoch it was in (checkpoints
        written mid-epoch: 12 distinct of 16 items trained). Forked workers start in under a second and are
        kept; ``spawn`` / ``forkserver`` ones (macOS, Windows, Linux from Python 3.14) import the suite again,
        35-57 s a pass on 2 busy cores for batches read in 0.01 s, and outlived the pass (their exit overran
        torch's 5 s join, and the suite's workers ignore the SIGTERM that follows): there the pass reads in this
        process. None: no training loader."""
        loader = self._calibration_loader()
        if not isinstance(loader, DataLoader) or loader.num_workers == 0:
            return loader
        context = loader.multiprocessing_context  # None: torch's default, the first of get_all_start_methods
        method = (context.get_start_method() if context is not None else None) or (
            multiprocessing.get_start_method(allow_none=True) or multiprocessing.get_all_start_methods()[0]
        )
        workers = loader.num_workers if method == "fork" else 0
        if isinstance(loader.dataset, IterableDataset) or loader.batch_sampler is None:
            batching = {"batch_size": loader.batch_size, "drop_last": loader.drop_last}
            if not isinstance(loader.dataset, IterableDataset):
                batching["sampler"] = loader.sampler
        else:
            batching = {"batch_sampler": loader.batch_sampler}
        return DataLoader(
            loader.dataset,
            num_workers=workers,
            collate_fn=loader.collate_fn,
            pin_memory=loader.pin_memory,
            pin_memory_device=loader.pin_memory_device,
            worker_init_fn=loader.worker_init_fn,
            multiprocessing_context=context if workers else None,
            generator=loader.generator,
            prefetch_factor=loader.prefetch_factor if workers else None,
            timeout=loader.timeout if workers else 0,
            persistent_workers=False,
            **batching,
        )

    def _refresh_stats(self) -> bool:
        if not self._stats_stale or self._trainer is None:
            return False
        loader = self._short_pass_loader()
        if loader is None:
            warnings.warn("no training loader to calibrate SML / Mahalanobis statistics on", stacklevel=2)
            return False
        info = self.calibrate(loader, max_batches=self.hparams.calibration_batches)
        self.print(
            f"calibrated SML / Mahalanobis statistics on {info['batches']} training batch(es), "
            f"{info['pixels']} pixels in {info['seconds']:.1f} s"
        )
        return True

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)  # records which task/model the file holds
        # Checkpoints are written mid-fit, before on_fit_end: calibrate now so every file carries statistics
        # that match its own weights (the state dict was taken before this hook, so patch it).
        if self._trainer is not None and self.trainer.state.fn == TrainerFn.FITTING and self._refresh_stats():
            for name in STAT_BUFFERS:
                checkpoint["state_dict"][f"model.{name}"] = getattr(self.model, name).detach().clone()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Keeps the smoothing the checkpoint's fit config used, for :meth:`_say_score_smoothing`. Files of the
        task-level layout (before the plain :class:`AnomalySegmenter`) also predate ``model.network``: the CLI,
        ``load_checked`` and the export refuse them naming that move (:func:`shared.task.check_checkpoint_file`),
        a Trainer's ``ckpt_path`` in the base class's hook (they record the model ``SegmentationNet``)."""
        super().on_load_checkpoint(checkpoint)
        self.fit_score_smoothing = fit_score_smoothing(checkpoint)
        self._smoothing_unsaid = True

    def on_load_card(self, card: dict, given: Collection[str] = ()) -> None:
        """Shipped weights: the card's ``settings.score_smoothing`` is the sigma of the fit's config (what
        :meth:`on_load_checkpoint` reads from a checkpoint's ``suite_config``); the task was built with it
        unless ``score_smoothing`` was given, and test / predict say so once where the two differ."""
        from shared.shipped import card_number

        super().on_load_card(card, given)
        self.fit_score_smoothing = card_number(card, "settings", "score_smoothing")
        # a card without it (apps/ship_weights.py's own) is no old checkpoint: nothing to say of it
        self._smoothing_unsaid = self.fit_score_smoothing is not None

    def on_fit_end(self) -> None:
        self._refresh_stats()

    # ---------------------------------------------------------------------------------------- validation
    def validation_step(self, batch, batch_idx):
        images, masks = batch_images(batch), batch_masks(batch)
        logits, _, _ = self.model.features(images)
        target = masks.masked_fill(masks == OUTLIER_LABEL, IGNORE_INDEX)
        # val/loss: the cross-entropy of every scored pixel of the split, whatever the batches or DDP shares
        # (each batch's mean weighted by its pixels, summed over the processes). Every process logs it at every
        # step (a batch without scored pixels weighs 0), so every one syncs it: a float was rank 0's share only
        pixels = int((target != IGNORE_INDEX).sum())
        loss = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX) if pixels else logits.new_zeros(())
        self.log_mean("val/loss", loss, pixels)
        self.val_miou.update(logits.argmax(dim=1), target)
        self.log("val/miou", self.val_miou, prog_bar=True, batch_size=images.shape[0])

    # ---------------------------------------------------------------------------------------------- test
    def _drop_untrained_oe(self, names: list[str]) -> list[str]:
        """``names`` without ``outlier_prob`` when these weights never had an outlier-exposure step (a fit that
        ended before ``oe_start_epoch``): an error naming what to use instead when it is the selected score."""
        if "outlier_prob" not in names or bool(self.model.oe_trained):
            return names
        if self.score == "outlier_prob":
            raise AnomalyScoreError(
                "score 'outlier_prob' needs outlier-exposure training, but these weights never had an OE step "
                f"(saved before --model.oe_start_epoch {self.hparams.oe_start_epoch}): train on, take --ckpt_path "
                "last where the fit went past it (the best on val/miou may be an earlier epoch's), or choose a "
                f"score of the plain segmenter, e.g. --model.score {DEFAULT_PLAIN_SCORE}"
            )
        # shown where the suite raises it (a line of its own), not at Lightning's call that reached this
        warnings.warn("these weights never had an outlier-exposure step: not testing 'outlier_prob'")
        return [n for n in names if n != "outlier_prob"]

    def _say_score_smoothing(self) -> None:
        """Once per loaded checkpoint: which sigma this run smooths with, where its fit's config used another or
        the file does not say (:func:`score_smoothing_note`): its figures would differ from the fit's unsaid."""
        if not self._smoothing_unsaid:
            return
        self._smoothing_unsaid = False
        note = score_smoothing_note(self.score_smoothing, self.fit_score_smoothing, "--model.score_smoothing")
        if note:
            rank_zero_info(note)

    def on_test_start(self) -> None:
        super().on_test_start()
        self._say_score_smoothing()

    def on_predict_start(self) -> None:
        self._predict_rows = []
        self._say_score_smoothing()
        self._drop_untrained_oe([self.score])

    def on_test_epoch_start(self) -> None:
        names = self._drop_untrained_oe(list(self.test_scores or self.supported_scores()))
        if not bool(self.model.calibrated):
            skipped = [n for n in names if n in STAT_SCORES]
            if self.score in STAT_SCORES:
                raise AnomalyScoreError(
                    f"score {self.score!r} needs training-set statistics but the model is not calibrated"
                )
            if skipped:
                warnings.warn(f"model not calibrated: not testing {skipped}", stacklevel=2)
            names = [n for n in names if n not in STAT_SCORES]
        if self.score not in names:
            names.append(self.score)
        self._test_names = names
        self._pixel_acc = {n: PixelAnomalyAccumulator() for n in names}
        self._kept_maps = SpilledMaps() if self.component_metrics else None
        self._image_scores: dict[str, list[float]] = {n: [] for n in names}
        self._image_targets: list[int] = []
        self._image_names: list[str] = []

    def test_step(self, batch, batch_idx):
        images, labels = batch_images(batch), batch_masks(batch, "label")
        names = batch["name"] if isinstance(batch, dict) else [f"{batch_idx}_{i}" for i in range(len(images))]
        unpadded = batch.get("unpadded_size") if isinstance(batch, dict) else None
        logits, maps = self.model.maps_by_size(images, self._test_names, unpadded, smoothing=self.score_smoothing)
        y = labels.cpu().numpy()
        maps = {name: value.cpu().numpy() for name, value in maps.items()}
        pred = logits.argmax(dim=1).cpu().numpy()
        resized = self._resized_items(batch)
        if not resized.all():  # the images scored at their own size already go in together
            own = slice(None) if not resized.any() else ~resized  # no copy of the maps in the common case
            for name, value in maps.items():
                self._pixel_acc[name].update(value[own], y[own], name=f"test batch {batch_idx}")
        for i, image_name in enumerate(names):
            size = unpadded[i] if unpadded is not None else pred.shape[-2:]  # the image itself, not the padding
            road = self._road(pred[i], size)  # once for all the scores: a hole fill of the whole image
            for name, value in maps.items():
                self._image_scores[name].append(self._image_score(value[i], road))
            kept, truth = maps[self.score][i], y[i]
            if resized[i]:  # back to the label's own pixels, as predict writes the map (the padding cut off)
                truth = np.asarray(batch["native_label"][i], dtype=np.int64)
                for name, value in maps.items():
                    native = score_to_original(value[i], truth.shape, size)
                    self._pixel_acc[name].update(native[None], truth[None], name=str(image_name))
                    kept = native if name == self.score else kept
            self._image_targets.append(int((truth == 1).any()))
            self._image_names.append(str(image_name))
            if self.component_metrics:
                self._kept_maps.append(kept, truth, str(image_name))

    def _resized_items(self, batch) -> np.ndarray:
        """(B,) bool: the images whose network input is not their own size and that are to be scored at their
        label mask's size (``score_at_label_size``; the item carries the mask as read, ``native_label``)."""
        native = batch.get("native_label") if isinstance(batch, dict) else None
        if not self.score_at_label_size or native is None:
            return np.zeros(len(batch_images(batch)), dtype=bool)
        return np.array([mask is not None for mask in native], dtype=bool)

    def _gather_test_state(self) -> None:
        """Under DDP each rank saw a shard of the test images: pool every rank's pixel counts and image scores
        (in rank order) so that every rank computes the metrics of the whole set. The kept maps stay with their
        rank: each scores its own components, pooled by :func:`component_metrics`."""
        parts = gather_lists([(self._pixel_acc, self._image_scores, self._image_targets, self._image_names)])
        if len(parts) == 1:
            return
        merged = {name: PixelAnomalyAccumulator() for name in self._pixel_acc}
        scores: dict[str, list[float]] = {name: [] for name in self._image_scores}
        targets, names = [], []
        for acc, image_scores, image_targets, image_names in parts:
            for name, total in merged.items():
                total.merge(acc[name])
                scores[name] += image_scores[name]
            targets += image_targets
            names += image_names
        self._pixel_acc, self._image_scores, self._image_targets = merged, scores, targets
        self._image_names = names

    def on_test_epoch_end(self) -> None:
        self._gather_test_state()
        results: dict = {"pixel": {}, "image_auroc": {}, "score": self.score}
        targets = torch.tensor(self._image_targets)
        image_level = 0 < int(targets.sum()) < len(targets)
        if not image_level:
            warnings.warn(
                f"image-level AUROC undefined: {int(targets.sum())} of {len(targets)} test images hold an anomaly "
                "(needs images with and without)",
                stacklevel=2,
            )
        for name, acc in self._pixel_acc.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m = acc.compute()
            results["pixel"][name] = m
            image_scores = torch.tensor(self._image_scores[name], dtype=torch.float64)
            # AUROC reads only the scores' order: given as ranks in [0, 1] (ties kept), since torchmetrics takes
            # scores outside [0, 1] for logits and squashes them, which tied Mahalanobis scores of 40-60 at 1.0
            # (AUROC 0.5 where the ranking gives 1/3)
            ranks = torch.unique(image_scores, return_inverse=True)[1].double()
            results["image_auroc"][name] = (
                float(binary_auroc(ranks / max(1, int(ranks.max())), targets)) if image_level else float("nan")
            )
            for key in ("ap", "auroc", "fpr95"):
                self.log(f"test/{name}/{key}", m[key])
            self.log(f"test/{name}/image_auroc", results["image_auroc"][name])
        sel = results["pixel"][self.score]
        acc = self._pixel_acc[self.score]
        if not (acc.num_positive and acc.num_negative):  # the seven scores' own warnings are silenced above
            warnings.warn(
                f"pixel AP, AUROC and FPR95 are undefined (NaN): the test set has {acc.num_positive} anomaly pixels "
                f"(label 1), {acc.num_negative} normal (0) and {acc.num_void} void (255); they need both anomaly "
                "and normal pixels (a 0 / 255 mask means normal and void, not anomaly)",
                stacklevel=2,
            )
        for key in ("ap", "auroc", "fpr95"):
            self.log(f"test/{key}", sel[key])
        self.log("test/image_auroc", results["image_auroc"][self.score])
        # more distinct scores than the accumulator keeps: the curve is binned (scores within one bin tie), said
        # and logged so a published figure can state it; 0 is exact (sklearn's)
        self.log("test/pixel_bin_width", sel["bin_width"])
        if sel["binned"]:
            rank_zero_info(
                f"test: pixel AP / AUROC / FPR95 of {sel['num_pixels']} pixels from {acc.max_distinct} bins "
                f"{sel['bin_width']:.2e} wide over the bulk of the scores, the rarest {acc.TAIL_SHARE:.0e} at "
                "each end counted exactly (more distinct scores than max_distinct; AP moves by far less than 1e-3)"
            )
        if self.component_metrics and self._pixel_acc[self.score].num_positive > 0:
            best = self._pixel_acc[self.score].best_f1_threshold()
            comp = component_metrics(
                self._kept_maps,
                threshold=best["threshold"],
                min_pred_size=self.component_min_pred_size,
                min_gt_size=self.component_min_gt_size,
                gather=gather_lists,
            )
            comp["best_f1_threshold"] = best
            results["component"] = comp
            # SegmentMeIfYouCan's published column names, not the lower case of the other keys: the demo's
            # headline, benchmarks/gpu_recipes.py and the shipped weights' metrics JSON read them as they are
            for key in ("sIoU_gt", "PPV", "mean_F1"):
                self.log(f"test/{key}", comp[key])
        results["image_scores"] = {
            "names": list(self._image_names),
            "targets": list(self._image_targets),
            **{n: list(v) for n, v in self._image_scores.items()},
        }
        self.test_results = results
        if self._kept_maps is not None:
            self._kept_maps.close()
            self._kept_maps = None

    # ------------------------------------------------------------------------------------------- predict
    def predict_step(self, batch, batch_idx):
        """Score maps and overlays at each source image's size (``orig_size`` of the batch, its padding cut off
        first), so they line up with the user's pixels; the image-level score stays at network resolution, as
        ``test`` computes it, but over the image's own pixels only (``unpadded_size``), not the padding."""
        images = batch_images(batch)
        info = batch if isinstance(batch, dict) else {}
        names = info.get("name", [f"{batch_idx}_{i}" for i in range(len(images))])
        full = tuple(images.shape[-2:])
        unpadded = [tuple(int(v) for v in s) for s in info.get("unpadded_size", [full] * len(images))]
        out = self.analyze(images, unpadded=unpadded)
        vmin, vmax = FIXED_RANGES.get(self.score, (None, None))
        written = write_predictions(
            self.predict_dir,
            names,
            images,
            out["score"],
            self.overlay_alpha,
            vmin,
            vmax,
            sizes=info.get("orig_size", unpadded),
            unpadded_sizes=unpadded,
            image_paths=info.get("image_path"),
            as_stored=info.get("as_stored"),
        )
        for item, image_score in zip(written, out["image_score"], strict=True):
            item["image_score"] = image_score
        self._predict_rows.extend(written)
        return written

    def on_predict_epoch_end(self) -> None:
        # every rank's rows (each wrote its own share of the maps), in name order, written once; kept here,
        # not read from Lightning's list of what predict_step returned (the CLI's predict keeps none)
        mine, self._predict_rows = self._predict_rows, []
        rows = sorted(gather_lists(mine), key=lambda r: r["name"])
        if not rows or not self.trainer.is_global_zero:
            return
        path = Path(self.predict_dir) / "image_scores.csv"
        score = f"image_score_{self.score}"
        root = path.parent.resolve()

        def inside(file) -> str:  # relative to the CSV: the folder moves (or is copied) as a whole
            return Path(file).resolve().relative_to(root).as_posix()

        write_csv(
            path,
            ["name", score, "score_npy", "overlay_png"],
            ({"name": r["name"], score: score_text(r["image_score"]), "score_npy": inside(r["score"]),
              "overlay_png": inside(r["overlay"])} for r in rows),
        )  # fmt: skip
        self.print(f"wrote {len(rows)} heatmaps and {path}")

    # -------------------------------------------------------------------------------------------- app API
    def _road(self, pred: np.ndarray, size: Sequence[int]) -> np.ndarray:
        """The road region (``road_ids``, objects on it filled in) of a class map over the image's own ``size``
        (H, W) inside a padded batch: where :meth:`_image_score` reads a score map."""
        return road_region(pred[: int(size[0]), : int(size[1])], self.road_ids)

    def _image_score(self, score: np.ndarray, road: np.ndarray) -> float:
        """The image-level score of one map over the :meth:`_road` region (its shape: the image's own size)."""
        h, w = road.shape
        return image_anomaly_score(
            score[:h, :w], road, self.image_score_method, self.image_score_q, self.image_score_k
        )

    @torch.no_grad()
    def analyze(
        self,
        images: torch.Tensor,
        scores: Sequence[str] | None = None,
        unpadded: Sequence[Sequence[int]] | None = None,
    ) -> dict:
        """Segmentation and anomaly maps for a batch of images in [0, 1] (or uint8), any size.

        Returns ``pred`` (B, H, W) class ids, ``score`` (B, H, W) the selected score, ``scores`` {name: map}
        for ``scores`` (default: the selected one), ``image_score`` list of floats (B,), over each image's own
        (H, W) in ``unpadded`` when a padded batch gives it (the padding is not road, nor an anomaly).
        """
        images = self._as_batch(images)
        names = list(scores or [self.score])
        logits, maps = self._maps(images, list(dict.fromkeys([self.score, *names])), unpadded)
        pred = logits.argmax(dim=1)
        selected = maps[self.score]
        full = [tuple(images.shape[-2:])] * len(images)
        image_scores = [
            self._image_score(s, self._road(p, size))
            for s, p, size in zip(selected.cpu().numpy(), pred.cpu().numpy(), unpadded or full, strict=True)
        ]
        return {
            "pred": pred,
            "score": selected,
            "scores": {n: maps[n] for n in names},
            "image_score": image_scores,
        }

    def anomaly_map(self, images: torch.Tensor, score: str | None = None) -> torch.Tensor:
        """(B, H, W) anomaly scores (higher = more anomalous) for images (B, 3, H, W) or (3, H, W)."""
        name = self.score if score is None else score
        if name not in SCORES:
            raise ValueError(f"unknown anomaly score {name!r}; available: {', '.join(SCORES)}")
        # this score alone: analyze() computes the task's own too, which a model without outlier exposure lacks
        return self._maps(self._as_batch(images), [name], None)[1][name]

    @torch.no_grad()
    def _maps(self, images: torch.Tensor, names: list[str], unpadded) -> tuple[torch.Tensor, dict]:
        """(logits, {name: score map}) in eval mode, the module's mode restored after."""
        was_training = self.training
        self.eval()
        try:
            return self.model.maps_by_size(images, names, unpadded, smoothing=self.score_smoothing)
        finally:
            self.train(was_training)

    def _as_batch(self, images) -> torch.Tensor:
        x = torch.as_tensor(images)
        if x.ndim == 3:
            x = x.unsqueeze(0)
        if x.ndim != 4 or x.shape[1] != self.model.in_channels:
            raise ValueError(
                f"expected images (B, {self.model.in_channels}, H, W) or ({self.model.in_channels}, H, W), "
                f"got shape {tuple(x.shape)}"
            )
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        if not bool(torch.isfinite(x).all()):
            raise ValueError("images contain NaN or inf values")
        return x.to(self.model.sml_mean.device)


# the encoder choices in ``--help`` come from the registry, so they never drift from it
AnomalySegmentationTask.__doc__ = (
    AnomalySegmentationTask.__doc__.replace("{backbones}", ", ".join(list_backbones()))
    .replace("{{", "{")
    .replace("}}", "}")
)
