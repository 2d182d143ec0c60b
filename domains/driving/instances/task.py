"""Lightning wrapper of :class:`RoadInstanceSegmenter`: training, COCO mask + box AP, prediction files.

Evaluation happens in the pixels of the tensors the data module produced (native size unless
``data.image_size`` resizes); ``predict`` maps masks and boxes back to each image's original size.

DontCare / crowd regions: Mask R-CNN has no ignore label, so in training they are background (they hold only
tiny or far objects); in evaluation they are COCO crowd regions (a detection on one is ignored when it matches
no object), and detections whose mask lies mostly (more than ``ignore_overlap``) inside them are counted
(``<stage>/ignored_detections``).

Training counts the objects (and crowds) whose whole mask the augmentation's crop removed, as the detection task
counts its boxes and under its name (``train/cropped_out_boxes``, each epoch's sum over every rank).

Validation also logs the training loss on the validation images (``val/loss`` and Mask R-CNN's terms, named as
``train/*``: ``val/loss_classifier``, ``val/loss_box_reg``, ``val/loss_mask``, ``val/loss_objectness``,
``val/loss_rpn_box_reg``), as the detection task does for a batch of images of several sizes, with its code
(:meth:`~domains.driving.detection.task.DetectorTask.losses_without_update`): one more pass in training mode
without gradients, BatchNorm in eval mode, the random stream forked (the RPN's and RoI heads' sampling draws
from it), so weights, statistics and training's draws are left as they were. On one CPU thread, with untrained
networks (100 detections per image), it adds 0.12-0.20 s per batch of 2 beside 0.55-0.68 s for the detections
and metric updates with the quick config's network (0.012-0.021 s beside 0.032-0.035 s with the tests' tiny
one; two runs on a shared machine). Test logs no loss.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import torch
import torch.nn.functional as F

from domains.driving.detection.task import DETECTOR_RUNTIME_ARGS, DetectorTask
from domains.driving.instances.metrics import InstanceMetrics, dontcare_regions, masks_in_ignore_fraction
from domains.driving.instances.model import RoadInstanceSegmenter
from shared.backbones import list_backbones
from shared.task import gather_lists


class InstanceTask(DetectorTask):
    """Mask R-CNN road-user instance segmentation, scored by COCO mask and box AP.

    Validation logs mask AP (headline ``val/mask_map50``), the same model's box AP and ``val/loss`` (the
    training loss on the validation images, nothing learnt from them).

    Args:
        network: the Mask R-CNN, as ``class_path: domains.driving.instances.model.RoadInstanceSegmenter`` +
            ``init_args`` (``backbone``: a registered backbone: {backbones}; ``input_size``, ``fpn_levels``,
            ``fpn_channels``, ``anchor_scale``, proposals, RoIs and head sizes: ``--model.network.help
            RoadInstanceSegmenter``). ``num_classes`` comes from ``data.class_names`` (linked by the CLI).
        mask_thresh: a pixel belongs to a predicted instance where its mask probability reaches this.
        min_heights: ``test`` also scores with the ground truth shorter than each of these heights (pixels of
            the evaluated tensors) ignored, as KITTI's difficulty levels do (``test/mask_h12.8_ap50/Car``, ...):
            where the errors sit, far and tiny or near and large. KITTI Moderate's 25 px are in 375-px frames:
            12.8 px in a 192-px input. Unmatched small detections still count as false alarms.
        detector_args: the arguments of :class:`~domains.driving.detection.task.DetectorTask` (``class_names``,
            thresholds, ``ignore_overlap`` of masks in DontCare regions, ``predict_dir``: ``instances/<id>.png``
            (+ ``.txt``) and ``overlays/<id>.png``, ...).
    """

    WRITER = "domains.driving.instances.predict:InstancePredictionWriter"
    NETWORK = RoadInstanceSegmenter
    RUNTIME_ARGS = (*DETECTOR_RUNTIME_ARGS, "mask_thresh", "min_heights")

    def __init__(
        self,
        network: RoadInstanceSegmenter,
        mask_thresh: float = 0.5,
        min_heights: list[float] = [],  # noqa: B006 - becomes a CLI default
        **detector_args,
    ):
        if not 0 < mask_thresh < 1:
            raise ValueError(f"mask_thresh must be in (0, 1), got {mask_thresh}")
        super().__init__(network, **detector_args)
        self.mask_thresh = mask_thresh
        if any(not h > 0 for h in min_heights):
            raise ValueError(f"min_heights must be > 0 pixels, got {min_heights}")
        self.min_heights = [float(h) for h in min_heights]
        self._metrics: dict[str, list[InstanceMetrics]] = {}
        self._ignored: dict[str, int] = {}

    def on_load_card(self, card: dict, given: Collection[str] = ()) -> None:
        """Shipped weights: ``predict`` draws at the card's operating point (the best-F1 threshold
        ``apps/ship_weights.py`` fitted on the validation split) unless ``predict_score_thresh`` was given; a
        checkpoint holds no fitted threshold of this task (the class default then)."""
        from shared.shipped import card_number

        super().on_load_card(card, given)
        threshold = card_number(card, "operating_point", "threshold")
        if threshold is not None and "predict_score_thresh" not in given:
            self.predict_score_thresh = threshold

    # ------------------------------------------------------------------------------------------- training
    def training_step(self, batch, batch_idx):
        images, targets = batch
        self.log_cropped_out(targets, len(images))
        losses = self.model(images, targets)
        return self.log_training_losses(losses, len(images))

    # ----------------------------------------------------------------------------------------- evaluation
    def _evaluation_step(self, batch, stage: str) -> None:
        images, targets = batch
        preds = self.model(images)
        heights = (0.0, *self.min_heights) if stage == "test" else (0.0,)  # validation during fit stays cheap
        metrics = self._metrics.setdefault(stage, [InstanceMetrics(self.class_names, h) for h in heights])
        scored, truths = [], []
        for pred, target in zip(preds, targets):
            masks = pred["masks"] >= self.mask_thresh
            covered = masks_in_ignore_fraction(
                masks, target["ignore_mask"], pred["labels"], target.get("crowd_masks"), target.get("crowd_labels")
            )
            inside = covered > self.ignore_overlap
            self._ignored[stage] = self._ignored.get(stage, 0) + int(inside.sum())
            scored.append({**{k: pred[k] for k in ("boxes", "scores", "labels")}, "masks": masks})
            # DontCare regions: COCO crowd regions in every metric (InstanceMetrics), found once per image
            truths.append({**target, "ignore_regions": dontcare_regions(target["ignore_mask"])})
        for metric in metrics:
            metric.update(scored, truths)

    def _log_epoch_metrics(self, stage: str) -> dict[str, float]:
        if stage not in self._metrics:
            return {}
        values = {k: v for metric in self._metrics.pop(stage) for k, v in metric.compute(stage).items()}
        self.warn_undefined_map(stage, values[f"{stage}/mask_map"], "COCO mask and box mAP")
        # every rank's count (each holds its share of the images), as the detection task's
        values[f"{stage}/ignored_detections"] = float(sum(gather_lists([self._ignored.pop(stage, 0)])))
        return self.log_with_headline(values, f"{stage}/mask_map50")

    def predict_step(self, batch, batch_idx, dataloader_idx: int = 0):
        """Per image: boxes, scores, labels and bool masks in the *original* image's pixels, plus its id, for the
        detections at or above ``predict_score_thresh`` (the written maps and overlays hold no others).

        Each mask is brought to the photo's size on its own and thresholded at once: all 100 detections' float
        maps at once took 5.7 GB for one 12 MP photo, for detections none of which was written."""
        images, targets = batch if isinstance(batch, (tuple, list)) and len(batch) == 2 else (batch, None)
        out = []
        for i, (image, pred) in enumerate(zip(images, self.model(images))):
            target = targets[i] if targets is not None else {}
            size = tuple(int(v) for v in target.get("orig_size", image.shape[-2:]))
            keep = pred["scores"] >= self.predict_score_thresh
            probs, boxes = pred["masks"][keep], pred["boxes"][keep]
            if size != tuple(image.shape[-2:]):
                h, w = image.shape[-2:]
                masks = _masks_at_size(probs, size, self.mask_thresh)
                boxes = boxes * boxes.new_tensor([size[1] / w, size[0] / h] * 2)
            else:
                masks = probs >= self.mask_thresh
            image_id = target.get("image_id", f"{batch_idx:06d}_{i}")
            record = self.image_record(image_id)
            out.append(
                {
                    "boxes": boxes.cpu(),
                    "scores": pred["scores"][keep].cpu(),
                    "labels": pred["labels"][keep].cpu(),
                    "masks": masks.cpu(),
                    "image_id": image_id,
                    "image_path": record.image_path if record is not None else None,
                    "as_stored": bool(getattr(record, "as_stored", False)),  # drawn on the pixels its masks are
                    "orig_size": size,
                }
            )
        return out


def _masks_at_size(probs, size: tuple[int, int], threshold: float):
    """(K, H, W) bool masks of (K, h, w) probabilities brought to ``size`` one at a time: one float map at a
    time, not K of them."""
    masks = probs.new_zeros((len(probs), *size), dtype=torch.bool)
    for k, prob in enumerate(probs):
        masks[k] = F.interpolate(prob[None, None], size=size, mode="bilinear", align_corners=False)[0, 0] >= threshold
    return masks


def load_instance_task(checkpoint: str | Path, map_location: str = "cpu") -> InstanceTask:
    """Load a trained instance model from a Lightning checkpoint (``weights_only``, checked task)."""
    return InstanceTask.load_checked(Path(checkpoint), map_location=map_location)


__all__ = ["InstanceTask", "load_instance_task"]

InstanceTask.__doc__ = InstanceTask.__doc__.replace("{backbones}", ", ".join(list_backbones()))
