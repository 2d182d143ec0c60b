"""Road-user instance segmentation: torchvision's Mask R-CNN on any backbone of the shared registry.

Why Mask R-CNN (of torchvision's instance models it is the only one, but also on its merits):

* its masks are predicted per box (a 28x28 map inside each RoI), so overlapping cars and pedestrians get one
  mask each by construction; the boxes it scores are the boxes the detection metrics use, so box AP and mask
  AP come from one model and can be compared;
* the FPN + RoIAlign design takes any feature pyramid: the detector's :class:`BackboneWithFPN` (a registry
  backbone + ``torchvision.ops.FeaturePyramidNetwork``) plugs in unchanged, so a detector's trained backbone
  transfers by state-dict keys (``load_backbone_weights``);
* it is the reference model of the COCO instance benchmark (torchvision's table: R50-FPN 34.6 mask AP),
  and CPU-tunable: the RoI sample size, proposal counts and head widths set the cost.

What is torchvision's and what is ours: the RPN, RoIAlign, box and mask heads, their losses, NMS, mask pasting
and the resize / normalise transform are torchvision's. This module only picks the anchor sizes from the real
strides of the chosen levels (torchvision's defaults assume strides 4..64 with 32-px anchors at stride 4, too
large for 10-px pedestrians in a 192-px frame), narrows the heads for CPU budgets, keeps anchors, proposals and
boxes float32 under mixed precision (as the detector does) and shifts labels: the suite's labels are 0-based
class indices, Mask R-CNN reserves 0 for background.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import MultiScaleRoIAlign

from domains.driving.detection.model import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    AdjustablePostprocess,
    BackboneWithFPN,
    FitIntoBox,
    Float32Outputs,
    Float32Points,
    as_image_list,
    checked_backbone,
    run_by_size,
)
from shared.backbones import Backbone, FreezableBackbone
from shared.networks import RemembersInitArgs


class Float32RPNHead(Float32Outputs, RPNHead):
    """torchvision's RPN head with float32 objectness and box deltas: with :class:`Float32Points` the
    proposals are decoded in float32. In bfloat16 (bf16-mixed) they rounded to 4 px beyond x = 512, a thin one
    collapsed to zero width and its log-width regression target in the RoI heads was infinite."""


class Float32BoxPredictor(Float32Outputs, FastRCNNPredictor):
    """torchvision's box predictor with float32 class logits and box deltas: scores and the boxes decoded from
    the proposals in float32 (torchvision decodes in the deltas' dtype)."""


class RoadInstanceSegmenter(FreezableBackbone, AdjustablePostprocess, RemembersInitArgs, nn.Module):
    """Mask R-CNN on a registry backbone + FPN. Plain ``nn.Module``: usable without Lightning.

    ``forward(images, targets=None)``: ``images`` a list of float (3, H, W) tensors in [0, 1]. Training (targets
    with ``boxes`` xyxy, 0-based ``labels`` and ``masks`` (K, H, W)) returns torchvision's loss dict
    (``loss_classifier``, ``loss_box_reg``, ``loss_mask``, ``loss_objectness``, ``loss_rpn_box_reg``); eval
    returns per image ``boxes``, ``scores``, 0-based ``labels`` and ``masks`` (N, H, W) float probabilities in
    the input image's pixels, the same whatever the batch the image comes in (one pass per image size).

    Args:
        num_classes: object classes (no background slot).
        backbone / backbone_kwargs: registry name (or a built :class:`Backbone`) and its arguments.
        input_size: ``(height, width)`` box each image is scaled into, aspect ratio kept (:class:`FitIntoBox`,
            as the detector's).
        fpn_levels / fpn_channels: the backbone's coarsest maps feeding the FPN, and its width.
        anchor_scale: anchor side = level stride x this (3 aspect ratios per location).
        proposals_train / proposals_test: RPN proposals kept per image (before and after its NMS).
        rois_per_image: RoIs sampled per training image for the box and mask heads (torchvision: 512).
        box_head_dim: width of the two-layer box head (torchvision: 1024).
        mask_head_channels / mask_head_convs: the mask head's conv width and depth (torchvision: 256 x 4).
        score_thresh / nms_thresh / detections_per_img: post-processing.
        freeze_backbone: train only the FPN and heads; the backbone keeps the weights it was given (a trained
            road detector's, through the task's ``pretrained_backbone``) and its BatchNorm statistics. No
            backward pass through it: the budget buys a larger input at the same step count.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str | Backbone = "resnet18",
        backbone_kwargs: dict | None = None,
        in_channels: int = 3,
        input_size: tuple[int, int] = (192, 640),
        fpn_levels: int = 4,
        fpn_channels: int = 64,
        anchor_scale: float = 4.0,
        proposals_train: int = 1000,
        proposals_test: int = 500,
        rois_per_image: int = 256,
        box_head_dim: int = 256,
        mask_head_channels: int = 64,
        mask_head_convs: int = 2,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
        image_mean: tuple[float, ...] = IMAGENET_MEAN,
        image_std: tuple[float, ...] = IMAGENET_STD,
        freeze_backbone: bool = False,
    ):
        super().__init__()
        backbone = checked_backbone(num_classes, input_size, backbone, in_channels, backbone_kwargs)
        for name, value in (
            ("fpn_channels", fpn_channels),
            ("proposals_train", proposals_train),
            ("proposals_test", proposals_test),
            ("rois_per_image", rois_per_image),
            ("box_head_dim", box_head_dim),
            ("mask_head_channels", mask_head_channels),
            ("mask_head_convs", mask_head_convs),
        ):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not anchor_scale > 0:
            raise ValueError(f"anchor_scale must be > 0, got {anchor_scale}")
        self.num_classes = num_classes
        self.input_size = (int(input_size[0]), int(input_size[1]))
        body = BackboneWithFPN(backbone, num_levels=fpn_levels, fpn_channels=fpn_channels, extra_levels=False)
        names = [f"c{i}" for i in body.level_indices]
        anchors = Float32Points(  # float32 anchors and heads: boxes stay float32 under mixed precision
            tuple((float(s * anchor_scale),) for s in body.strides), ((0.5, 1.0, 2.0),) * len(names)
        )
        self.segmenter = MaskRCNN(
            body,
            num_classes=None,  # the predictors below carry the classes (+1 background)
            min_size=min(self.input_size),
            max_size=max(self.input_size),
            image_mean=list(image_mean),
            image_std=list(image_std),
            rpn_anchor_generator=anchors,
            rpn_head=Float32RPNHead(fpn_channels, anchors.num_anchors_per_location()[0]),
            rpn_pre_nms_top_n_train=proposals_train,
            rpn_post_nms_top_n_train=proposals_train,
            rpn_pre_nms_top_n_test=proposals_test,
            rpn_post_nms_top_n_test=proposals_test,
            box_roi_pool=MultiScaleRoIAlign(names, output_size=7, sampling_ratio=2),
            box_head=TwoMLPHead(fpn_channels * 7 * 7, box_head_dim),
            box_predictor=Float32BoxPredictor(box_head_dim, num_classes + 1),
            box_score_thresh=score_thresh,
            box_nms_thresh=nms_thresh,
            box_detections_per_img=detections_per_img,
            box_batch_size_per_image=rois_per_image,
            mask_roi_pool=MultiScaleRoIAlign(names, output_size=14, sampling_ratio=2),
            mask_head=MaskRCNNHeads(fpn_channels, [mask_head_channels] * mask_head_convs, 1),
            mask_predictor=MaskRCNNPredictor(mask_head_channels, mask_head_channels, num_classes + 1),
        )
        self.segmenter.transform = FitIntoBox.replacing(self.segmenter.transform, self.input_size)
        self.set_backbone_frozen(freeze_backbone)

    @property
    def backbone(self) -> Backbone:
        """The registry backbone (for freezing / transfer learning)."""
        return self.segmenter.backbone.body

    def postprocess_module(self) -> nn.Module:
        return self.segmenter.roi_heads  # Mask R-CNN applies its thresholds in the RoI heads

    def forward(self, images: list[torch.Tensor], targets: list[dict] | None = None):
        images = as_image_list(images, self.backbone.in_channels)
        if targets is not None:
            for i, (image, t) in enumerate(zip(images, targets, strict=True)):
                masks = t["masks"]
                if masks.ndim != 3 or masks.shape[-2:] != image.shape[-2:] or len(masks) != len(t["boxes"]):
                    raise ValueError(
                        f"target {i}: masks must be (K, H, W) matching its {len(t['boxes'])} boxes and the "
                        f"{tuple(image.shape[-2:])} image, got {tuple(masks.shape)}"
                    )
            targets = [
                {"boxes": t["boxes"], "labels": t["labels"] + 1, "masks": t["masks"].to(torch.uint8)}
                for t in targets
            ]
        if self.training:
            return self.segmenter(images, targets)
        # one pass per image size, as the detector's detect_by_size: torchvision pads a batch to its largest
        # image and the padding is not inert (MobileNetV3's squeeze-excitation averages over it), so an image's
        # instances had hung on what it was batched with
        out = run_by_size(images, self.segmenter)
        return [{**o, "labels": o["labels"] - 1, "masks": o["masks"][:, 0].float()} for o in out]


__all__ = ["RoadInstanceSegmenter"]
