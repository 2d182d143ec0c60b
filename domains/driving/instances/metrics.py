"""COCO mask AP and box AP of one instance model, from torchmetrics' ``MeanAveragePrecision``.

One metric object with ``iou_type=("bbox", "segm")`` on the faster-coco-eval backend: COCO's AP, AP50, AP75 and
per-class AP, and per-class AP50 read from its extended summary
(:func:`domains.driving.detection.metrics.ap50_per_class`).

``min_height``: score again with the ground truth shorter than this many pixels marked COCO ``iscrowd`` (a
detection mostly on such an object is neither a hit nor a false alarm; other small detections still count as
false alarms), as KITTI's difficulty levels leave out objects under 25 px of a 375-px frame (Moderate). It says
whether the errors sit in the far, tiny objects; keys get ``_h<height>``. A class whose objects are all shorter
has no value there (COCO's -1), so the ``_h`` means may average fewer classes.

DontCare: a target's ``ignore_mask`` regions are COCO crowd regions of every class, so a detection lying in one
is ignored when it matches no object and a true object partly under one stays a hit (the KITTI devkit's rule);
its ``crowd_masks`` (COCO's ``iscrowd``) are crowd regions of their ``crowd_labels`` class only, as in COCOeval.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage

from domains.driving.detection.metrics import ap50_per_class, with_crowd_regions
from domains.driving.detection.task import local_mean_ap, mean_ap_over_ranks
from domains.driving.instances.data import mask_boxes

#: torchmetrics' prefix -> the suite's name in logged keys
IOU_TYPES = {"segm": "mask", "bbox": "box"}


class InstanceMetrics:
    """Accumulates predictions and targets; :meth:`compute` returns ``{prefix/mask_map50: ..., ...}``.

    ``update(preds, targets)``: lists of dicts; predictions with ``boxes``, ``scores``, ``labels`` and bool
    ``masks`` (N, H, W); targets with ``boxes``, ``labels`` and ``masks`` (K, H, W), optionally ``ignore_mask``
    (or its ``ignore_regions``) and ``crowd_masks`` + ``crowd_labels`` (see the module). Tensors may be on any
    device (they are moved to the CPU: the metric states live outside the Lightning module).
    """

    def __init__(self, class_names: Sequence[str], min_height: float = 0.0):
        if min_height < 0:
            raise ValueError(f"min_height must be >= 0, got {min_height}")
        self.class_names = list(class_names)
        self.min_height = float(min_height)
        self.suffix = f"_h{self.min_height:g}" if self.min_height else ""
        self.coco = local_mean_ap(
            iou_type=tuple(IOU_TYPES), backend="faster_coco_eval", class_metrics=True, extended_summary=True
        )

    def update(self, preds: Sequence[dict], targets: Sequence[dict]) -> None:
        p = [
            {
                "boxes": x["boxes"].detach().float().cpu(),
                "scores": x["scores"].detach().float().cpu(),
                "labels": x["labels"].detach().cpu(),
                "masks": x["masks"].detach().bool().cpu(),
            }
            for x in preds
        ]
        t = []
        for x in targets:
            boxes, labels = x["boxes"].float().cpu(), x["labels"].cpu()
            too_small = (boxes[:, 3] - boxes[:, 1]) < self.min_height if self.min_height else None
            crowd = torch.zeros(len(labels), dtype=torch.long) if too_small is None else too_small.long()
            target = {"boxes": boxes, "labels": labels, "masks": x["masks"].bool().cpu(), "iscrowd": crowd}
            # each DontCare region a crowd region of every class (the task finds them once per image), each
            # crowd of one class (COCO iscrowd) a crowd region of its class
            regions = x.get("ignore_regions")
            if regions is None and x.get("ignore_mask") is not None:
                regions = dontcare_regions(x["ignore_mask"].bool().cpu())
            masks, of = [], []  # the crowd regions and the class each ignores (-1: every class)
            if regions is not None:
                masks.append(regions.bool().cpu())
                of.append(torch.full((len(regions),), -1, dtype=torch.long))
            if x.get("crowd_masks") is not None:
                masks.append(x["crowd_masks"].bool().cpu())
                of.append(x["crowd_labels"].cpu().long())
            if sum(len(m) for m in masks):
                masks = torch.cat(masks)
                of = torch.cat(of)
                target = with_crowd_regions(target, mask_boxes(masks), len(self.class_names), masks, of)
            t.append(target)
        self.coco.update(p, t)

    def compute(self, prefix: str) -> dict[str, float]:
        """Mask and box mAP / mAP50 / mAP75, per-class AP and AP50; classes absent from the data are left out.
        Under DDP over every rank's images (:func:`~domains.driving.detection.task.mean_ap_over_ranks`)."""
        res = mean_ap_over_ranks(self.coco)
        values: dict[str, float] = {}
        known = range(len(self.class_names))
        for src, name in IOU_TYPES.items():
            name = f"{name}_" if not self.suffix else f"{name}{self.suffix}_"
            values[f"{prefix}/{name}map"] = float(res[f"{src}_map"])
            values[f"{prefix}/{name}map50"] = float(res[f"{src}_map_50"])
            values[f"{prefix}/{name}map75"] = float(res[f"{src}_map_75"])
            classes = res["classes"].reshape(-1).tolist()
            for cls, value in zip(classes, res[f"{src}_map_per_class"].reshape(-1).tolist()):
                if value >= 0 and int(cls) in known:  # -1: class not in the data
                    values[f"{prefix}/{name}ap/{self.class_names[int(cls)]}"] = value
            for cls, value in ap50_per_class(res, f"{src}_").items():
                if cls in known:
                    values[f"{prefix}/{name}ap50/{self.class_names[cls]}"] = value
        return values


def dontcare_regions(ignore: torch.Tensor) -> torch.Tensor:
    """The 8-connected regions of an (H, W) bool ignore mask as (R, H, W) bool masks (COCO crowd regions: a
    region's box is its own, not one box around two distant DontCare areas and the road between them). Each is
    a full-size mask, as torchmetrics takes them: the instance task finds them once per image, for all its
    metric objects."""
    labelled, n = ndimage.label(ignore.cpu().numpy(), structure=np.ones((3, 3)))
    return torch.from_numpy(labelled[None] == np.arange(1, n + 1)[:, None, None])


def masks_in_ignore_fraction(
    masks: torch.Tensor,
    ignore: torch.Tensor,
    labels: torch.Tensor | None = None,
    crowd_masks: torch.Tensor | None = None,
    crowd_labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """For each (N, H, W) bool mask, the share of its pixels inside the (H, W) ignore mask (0 when empty), or,
    given the detections' ``labels``, inside it or a crowd of its own class (``crowd_masks`` (R, H, W) of
    ``crowd_labels``): detections lying mostly in DontCare are counted (``<stage>/ignored_detections``) and left
    out of the shipped operating point; the COCO metrics ignore them by the crowd rule (:class:`InstanceMetrics`)."""
    if masks.numel() == 0:
        return masks.new_zeros(len(masks), dtype=torch.float32)
    region = ignore.to(masks.device).bool()[None].expand_as(masks)
    if labels is not None and crowd_masks is not None and len(crowd_masks):
        crowds = crowd_masks.to(masks.device).bool()
        own = crowd_labels.to(labels.device)[None, :] == labels[:, None]  # (N, R): crowds of each one's class
        region = region | (own.to(masks.device)[:, :, None, None] & crowds[None]).any(1)
    inside = (masks & region).flatten(1).sum(1).float()
    return inside / masks.flatten(1).sum(1).clamp(min=1).float()


__all__ = ["IOU_TYPES", "InstanceMetrics", "dontcare_regions", "masks_in_ignore_fraction"]
