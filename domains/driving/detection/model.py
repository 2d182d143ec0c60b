"""Road-scene 2D detector: torchvision's FCOS on any backbone of the shared registry, through an FPN.

Why FCOS (and not RetinaNet or Faster R-CNN):

* anchor-free: one point per feature-map location and a scale range per pyramid level, so there are no anchor
  shapes to tune for tall, thin pedestrians next to wide trucks (RetinaNet's 9 anchors per location assume
  COCO's box statistics);
* better box mAP in torchvision's own COCO table (FCOS R50-FPN 39.2 vs RetinaNet 36.4, Faster R-CNN 37.0), and
  one stage: no RoI pooling, cheap enough for CPU inference at KITTI-like sizes.

What is torchvision's and what is ours: FCOS (loss, centre sampling, box decoding, NMS), the FPN
(``torchvision.ops.FeaturePyramidNetwork`` + ``LastLevelP6P7``) and the resize / normalise / map-back
transform (``GeneralizedRCNNTransform``) are torchvision's. This module only adapts a registry backbone
(``forward_features`` -> list of maps) to the ``OrderedDict`` + ``out_channels`` interface torchvision
detectors expect, sets the point sizes to the real strides of the chosen levels (torchvision's default
assumes strides 8..128, which VGG's levels do not have) and makes the transform fit a photo lying the other way
than the input box into it (:class:`FitIntoBox`). Under mixed precision the point grid and the head's
outputs stay float32 (:class:`Float32Points`, :class:`Float32OutputHead`), so losses, scores and box decoding
do not run in bfloat16 / float16.

Labels are 0-based class indices (``domains.driving.classes``): FCOS's sigmoid focal loss has no background
logit, so no slot is reserved for it.

Optional auxiliary semantic segmentation (``semantic_classes`` > 0): a small head on the finest FPN level is
trained with cross-entropy on per-pixel class maps, where the data has them (the synthetic scenes do; so do
Cityscapes-style sets). Dense labels give every pixel a training signal, where boxes give a few points per
object: the multi-task idea of DES (Zhang et al., CVPR 2018) and YOLOP. The head is used only in training; the
detections, the exported graph and the inference cost do not change. Written by hand: torchvision's FCOS has
no auxiliary-loss hook, so the transformed batch and the FPN maps are read with forward hooks.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from numbers import Integral

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import FCOS
from torchvision.models.detection._utils import BoxLinearCoder
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOSClassificationHead, FCOSHead, FCOSRegressionHead
from torchvision.models.detection.transform import (
    GeneralizedRCNNTransform,
    _resize_image_and_masks,
    resize_boxes,
)
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from domains.driving.classes import VOID
from shared.backbones import IMAGENET_MEAN, IMAGENET_STD, Backbone, create_backbone
from shared.networks import RemembersInitArgs


class BackboneWithFPN(nn.Module):
    """A registry backbone + FPN over its last ``num_levels`` feature maps (+ P6, P7 by strided convs).

    ``out_channels`` (one width for every level) and an ``OrderedDict`` output are what torchvision's
    detectors require of a backbone; ``strides`` lists the stride of every returned map, finest first.
    """

    def __init__(
        self, backbone: Backbone, num_levels: int = 3, fpn_channels: int = 128, extra_levels: bool = True
    ):
        super().__init__()
        n = len(backbone.feature_channels)
        if not 1 <= num_levels <= n:
            raise ValueError(
                f"num_levels must be in 1..{n} for {type(backbone).__name__}, got {num_levels} "
                "(the option --model.network.init_args.fpn_levels)"
            )
        self.body = backbone
        self.level_indices = list(range(n - num_levels, n))
        in_channels = [backbone.feature_channels[i] for i in self.level_indices]
        extra = LastLevelP6P7(fpn_channels, fpn_channels) if extra_levels else None
        self.fpn = FeaturePyramidNetwork(in_channels, fpn_channels, extra_blocks=extra)
        self.out_channels = fpn_channels
        strides = [backbone.feature_strides[i] for i in self.level_indices]
        if extra_levels:
            strides += [strides[-1] * 2, strides[-1] * 4]
        self.strides = strides

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats = self.body.forward_features(x)
        return self.fpn(OrderedDict((f"c{i}", feats[i]) for i in self.level_indices))


class Float32Points(AnchorGenerator):
    """torchvision's point ("anchor") grid, always float32 (FCOS's points, Mask R-CNN's anchors).

    torchvision builds it in the feature maps' dtype: under bf16-mixed that is bfloat16, whose 8 significant
    bits round the points' boxes (and every box decoded from them) to 4 px beyond x = 512, 8 px beyond 1024:
    a stride-4 level, or a full-width KITTI frame (1242 px) at stride 8.
    """

    def set_cell_anchors(self, dtype: torch.dtype, device: torch.device) -> None:
        super().set_cell_anchors(torch.float32, device)


def _float32(value):
    """``value``'s tensors (alone, or in a dict, list or tuple, nested) as float32."""
    if isinstance(value, torch.Tensor):
        return value.float()
    if isinstance(value, dict):
        return {name: _float32(v) for name, v in value.items()}
    return type(value)(_float32(v) for v in value)


class Float32Outputs:
    """Mixin (first base) for a torchvision head: float32 outputs. Under mixed precision its convolutions and
    linear layers hand out bfloat16 / float16, and the losses, scores and box decoding that follow would run
    in them."""

    def forward(self, *args, **kwargs):
        return _float32(super().forward(*args, **kwargs))


class Float32OutputHead(Float32Outputs, FCOSHead):
    """torchvision's FCOS head with float32 outputs (:class:`Float32Outputs`) and branches normalised by
    ``norm_layer`` (None: torchvision's GroupNorm(32)).

    torchvision's ``FCOSHead`` (0.29 here) takes no ``norm_layer``, only its two branches do, and building
    it with its GroupNorm(32) refused any width not a multiple of 32 before a narrower norm could be swapped
    in. So this is ``FCOSHead.__init__`` with the norm passed to the branches: the same modules, built in the
    same order (a seeded GroupNorm(32) head draws the same weights as torchvision's)."""

    def __init__(
        self,
        in_channels: int,
        num_anchors: int,
        num_classes: int,
        num_convs: int = 4,
        norm_layer: Callable[[int], nn.Module] | None = None,
    ):
        nn.Module.__init__(self)
        self.box_coder = BoxLinearCoder(normalize_by_size=True)
        self.classification_head = FCOSClassificationHead(
            in_channels, num_anchors, num_classes, num_convs, norm_layer=norm_layer
        )
        self.regression_head = FCOSRegressionHead(in_channels, num_anchors, num_convs, norm_layer=norm_layer)


class FitIntoBox(GeneralizedRCNNTransform):
    """torchvision's resize / normalise / batch transform, fitting each image into the ``(height, width)`` box
    ``input_size`` keeping its aspect ratio, as the data modules do (``A.LongestMaxSize``).

    torchvision sends an image's short side to ``min_size`` (long side at most ``max_size``), blind to which way
    the box lies: a portrait photo the data module had fitted into a 192x640 box was scaled 1.5x again (its
    width to 192), and predict and the exported graph's preprocessing disagreed. An image lying as the box does
    (or square) keeps torchvision's arithmetic exactly; one lying the other way gets it with ``min_size`` and
    ``max_size`` swapped, which is ``min(height / h, width / w)``: no scaling for a fitted image."""

    def __init__(self, input_size: tuple[int, int], *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.tall_box = input_size[0] > input_size[1]

    @classmethod
    def replacing(cls, transform: GeneralizedRCNNTransform, input_size: tuple[int, int]) -> FitIntoBox:
        """One with ``transform``'s settings (what a torchvision detector built for itself)."""
        return cls(
            input_size, transform.min_size, transform.max_size, transform.image_mean, transform.image_std,
            size_divisible=transform.size_divisible, fixed_size=transform.fixed_size,
            _skip_resize=transform._skip_resize,
        )  # fmt: skip

    def resize(self, image: torch.Tensor, target: dict | None = None):
        h, w = image.shape[-2:]
        if h == w or (h > w) == self.tall_box or (self.training and self._skip_resize):
            return super().resize(image, target)
        size = self.torch_choice(self.min_size) if self.training else self.min_size[-1]
        resized, target = _resize_image_and_masks(image, self.max_size, size, target, self.fixed_size)
        if target is not None:
            target["boxes"] = resize_boxes(target["boxes"], (h, w), resized.shape[-2:])
        return resized, target


def as_image_list(images: list[torch.Tensor] | torch.Tensor, channels: int) -> list[torch.Tensor]:
    """A torchvision detector's ``images`` (a list, or a (B, C, H, W) / (C, H, W) tensor) as a list of
    (``channels``, H, W) tensors; anything else is refused naming the image."""
    if isinstance(images, torch.Tensor):
        images = list(images) if images.ndim == 4 else [images]
    for i, image in enumerate(images):
        if image.ndim != 3 or image.shape[0] != channels:
            raise ValueError(
                f"image {i}: expected a ({channels}, H, W) tensor, got shape {tuple(image.shape)}"
            )
    return images


class AdjustablePostprocess:
    """Mixin of the torchvision-based road models: :meth:`set_postprocess` changes the thresholds of the module
    that applies them (:meth:`postprocess_module`) after construction, e.g. a low score threshold for AP and a
    high one for display."""

    def postprocess_module(self) -> nn.Module:
        raise NotImplementedError

    def set_postprocess(
        self,
        score_thresh: float | None = None,
        nms_thresh: float | None = None,
        detections_per_img: int | None = None,
    ) -> None:
        module = self.postprocess_module()
        for name, value in (
            ("score_thresh", score_thresh),
            ("nms_thresh", nms_thresh),
            ("detections_per_img", detections_per_img),
        ):
            if value is not None:
                setattr(module, name, value)


def checked_backbone(
    num_classes: int,
    input_size: tuple[int, int],
    backbone: str | Backbone,
    in_channels: int = 3,
    backbone_kwargs: dict | None = None,
) -> Backbone:
    """The argument checks every road-object network (detector, instance segmenter) starts with, and its
    registry backbone built from a name (or a built :class:`Backbone` passed through)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, Integral) or num_classes < 1:
        # a list of class names fell into `<` as a TypeError (an IndexError further on for an empty one)
        hint = " (for class names, pass how many: len(names) >= 1)" if isinstance(num_classes, list | tuple) else ""
        raise ValueError(f"num_classes (the first argument) must be an int >= 1, got {num_classes!r}{hint}")
    if len(input_size) != 2 or min(input_size) < 16:
        raise ValueError(f"input_size must be (height, width) with both >= 16, got {input_size}")
    if isinstance(backbone, str):
        backbone = create_backbone(backbone, in_channels=in_channels, **(backbone_kwargs or {}))
    return backbone


class RoadDetector(AdjustablePostprocess, RemembersInitArgs, nn.Module):
    """FCOS detector on a registry backbone. Plain ``nn.Module``: usable without Lightning.

    ``forward(images, targets=None)``: ``images`` is a list of float (3, H, W) tensors in [0, 1], any sizes.
    In training mode (with targets holding ``boxes`` xyxy pixels and 0-based ``labels``) it returns FCOS's loss
    dict (``classification``, ``bbox_regression``, ``bbox_ctrness``); in eval mode one dict per image with
    ``boxes`` (in the *original* image's pixel coordinates), ``scores`` and ``labels``, the same whatever the
    batch the image comes in (:meth:`detect_by_size`).

    Args:
        num_classes: number of object classes (no background slot).
        backbone: registry name (``resnet18``, ``vgg11``, ``vit``, ...) or a built :class:`Backbone`.
        backbone_kwargs: passed to ``create_backbone``.
        input_size: ``(height, width)`` box each image is scaled into, keeping its aspect ratio
            (:class:`FitIntoBox`): KITTI's 1242x375 and the synthetic 640x192 both become about 640x192 with the
            default, and a photo the data module already fitted into it is not scaled again.
        train_scales: multipliers of ``input_size``, one drawn at random per training batch (multi-scale
            training); evaluation always uses ``input_size``. A scale below 1 trains on smaller batches than
            it evaluates: with zoom-in crops (the data module's ``crop_prob: 1``) objects keep their test size.
        fpn_levels: how many of the backbone's coarsest maps feed the FPN (4: strides 4 to 32).
        fpn_channels: FPN and head width: even, and from 64 up a multiple of 32 (the head's GroupNorm keeps 32
            groups there; a narrower FPN gets 2 channels per group).
        head_convs: conv + GroupNorm blocks in each FCOS branch (torchvision default 4; fewer is faster on CPU).
        score_thresh: FCOS post-processing: detections below this score are dropped (the task's own setting,
            chosen at test time, replaces it).
        nms_thresh: IoU of non-maximum suppression (replaced by the task's).
        detections_per_img: at most this many detections per image (replaced by the task's).
        topk_candidates: candidates per level before NMS.
        center_sampling_radius: FCOS centre sampling radius, in strides.
        image_mean: per-channel mean the images are normalised with (ImageNet's by default).
        image_std: per-channel standard deviation the images are normalised with.
        semantic_classes: > 0 adds the auxiliary semantic head (that many classes, 255 = void); training
            targets must then carry a ``semantic`` (H, W) class map of their image.
        semantic_loss_weight: weight of its cross-entropy in the training loss (reported as ``semantic``).
    """

    def __init__(
        self,
        num_classes: int,
        backbone: str | Backbone = "resnet18",
        backbone_kwargs: dict | None = None,
        in_channels: int = 3,
        input_size: tuple[int, int] = (192, 640),
        train_scales: tuple[float, ...] = (1.0,),
        fpn_levels: int = 3,
        fpn_channels: int = 128,
        head_convs: int = 2,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.6,
        detections_per_img: int = 100,
        topk_candidates: int = 1000,
        center_sampling_radius: float = 1.5,
        image_mean: tuple[float, ...] = IMAGENET_MEAN,
        image_std: tuple[float, ...] = IMAGENET_STD,
        semantic_classes: int = 0,
        semantic_loss_weight: float = 1.0,
    ):
        super().__init__()
        backbone = checked_backbone(num_classes, input_size, backbone, in_channels, backbone_kwargs)
        if not train_scales or any(s <= 0 for s in train_scales):
            raise ValueError(f"train_scales must be positive multipliers, got {train_scales}")
        if semantic_classes < 0 or semantic_loss_weight < 0:
            raise ValueError(
                f"semantic_classes and semantic_loss_weight must be >= 0, got {semantic_classes}, "
                f"{semantic_loss_weight}"
            )
        # torchvision's GroupNorm(32): kept from 64 channels up; narrower FPNs use 2 channels per group, since
        # one channel per group cannot be normalised on the 1x1 top level of a small image
        norm_groups = min(32, fpn_channels // 2)
        if fpn_channels < 2 or fpn_channels % 2 or fpn_channels % norm_groups:
            raise ValueError(
                f"fpn_channels must be even and, from 64 up, a multiple of 32 (GroupNorm), got {fpn_channels}"
            )
        self.num_classes = num_classes
        self.input_size = (int(input_size[0]), int(input_size[1]))
        body = BackboneWithFPN(backbone, num_levels=fpn_levels, fpn_channels=fpn_channels)
        # FCOS assigns a ground-truth box to a level by the point's distance to the box edges (4x-8x the
        # "anchor" size), so the anchor size must equal the level's real stride.
        anchors = Float32Points(tuple((s,) for s in body.strides), ((1.0,),) * len(body.strides))
        head = Float32OutputHead(
            fpn_channels, 1, num_classes, num_convs=head_convs, norm_layer=partial(nn.GroupNorm, norm_groups)
        )
        short, long = min(self.input_size), max(self.input_size)
        # GeneralizedRCNNTransform draws one of min_size at random per training batch and evaluates at
        # min_size[-1]; forward() swaps in the training or the evaluation sizes.
        scales = sorted(set(train_scales))
        min_sizes = tuple(round(short * s) for s in scales)
        max_size = round(long * max(scales))
        self._train_sizes = (min_sizes, max_size)
        self.detector = FCOS(
            body,
            num_classes,
            min_size=(short,),
            max_size=long,
            image_mean=list(image_mean),
            image_std=list(image_std),
            anchor_generator=anchors,
            head=head,
            center_sampling_radius=center_sampling_radius,
            score_thresh=score_thresh,
            nms_thresh=nms_thresh,
            detections_per_img=detections_per_img,
            topk_candidates=topk_candidates,
        )
        self.detector.transform = FitIntoBox.replacing(self.detector.transform, self.input_size)
        self.semantic_classes = int(semantic_classes)
        self.semantic_loss_weight = float(semantic_loss_weight)
        self.semantic_head = None
        if self.semantic_classes:
            self.semantic_head = nn.Sequential(
                nn.Conv2d(fpn_channels, fpn_channels, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(fpn_channels, self.semantic_classes, 1),
            )

    @property
    def backbone(self) -> Backbone:
        """The registry backbone (for freezing / transfer learning: ``model.backbone``)."""
        return self.detector.backbone.body

    def postprocess_module(self) -> nn.Module:
        return self.detector  # FCOS holds its thresholds itself

    @property
    def evaluation_sizes(self) -> tuple[tuple[int], int]:
        """The transform's (min sizes, max size) at evaluation: the nominal ``input_size``."""
        return (min(self.input_size),), max(self.input_size)

    def forward(self, images: list[torch.Tensor], targets: list[dict] | None = None):
        images = as_image_list(images, self.backbone.in_channels)
        # evaluation at the nominal size; multi-scale training draws from train_scales only
        min_size, max_size = self._train_sizes if self.training else self.evaluation_sizes
        self.detector.transform.min_size, self.detector.transform.max_size = min_size, max_size
        if not self.training:
            return self.detect_by_size(images)
        if targets is None or self.semantic_head is None:
            if targets is not None:
                targets = [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]
            return self.detector(images, targets)
        missing = [i for i, t in enumerate(targets) if "semantic" not in t]
        if missing:
            raise ValueError(
                f"targets {missing} have no 'semantic' map, but the detector has an auxiliary semantic head "
                "(semantic_classes > 0): give the data semantic maps or set semantic_classes 0"
            )
        captured: dict = {}
        hooks = [
            self.detector.transform.register_forward_hook(lambda m, i, out: captured.update(batch=out[0])),
            self.detector.backbone.register_forward_hook(lambda m, i, out: captured.update(features=out)),
        ]
        try:
            losses = self.detector(images, [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets])
        finally:
            for hook in hooks:
                hook.remove()
        semantic = self.semantic_loss(
            captured["features"], captured["batch"], [t["semantic"] for t in targets]
        )
        return {**losses, "semantic": self.semantic_loss_weight * semantic}

    def detect_by_size(self, images: list[torch.Tensor]) -> list[dict]:
        """Detections of each image as if it were alone: one forward pass per image size in the batch.

        torchvision pads a batch to its largest image, and the padding is not inert: squeeze-excitation blocks
        (MobileNetV3's) average over the whole padded map, and convolutions see it at the image's edge. A photo
        had 30 boxes above 0.3 alone and 40 batched with a wider frame, so test and predict on mixed-size sets
        hung on the batch size and the file order. Images of one size pad
        alike, so a uniform batch (the fitted frames of a KITTI-style set) is still one pass; only images of
        another size get a pass of their own. Training keeps the one padded batch: its batch statistics (BN)
        depend on the batch anyway, and its crops are fitted into one ``image_size``."""
        return run_by_size(images, self.detector)

    def semantic_loss(self, features: OrderedDict, batch, maps: list[torch.Tensor]) -> torch.Tensor:
        """Cross-entropy of the semantic head on the finest FPN map against the class maps (255 = void).

        ``batch`` is the transform's ``ImageList``; the logits are upsampled to its padded size and compared
        with :func:`semantic_targets` (each map resized and padded like its image).
        """
        height, width = batch.tensors.shape[-2:]
        target = semantic_targets(maps, batch.image_sizes, (height, width)).to(batch.tensors.device)
        top = int(target.masked_fill(target == VOID, -1).max())  # one device sync checks the whole batch
        if top >= self.semantic_classes:
            raise ValueError(
                f"semantic map values must be < semantic_classes ({self.semantic_classes}) or {VOID} "
                f"(void), found {top}"
            )
        logits = self.semantic_head(next(iter(features.values())))
        logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        if top < 0:  # an all-void batch: nothing to learn, but keep the graph
            return logits.sum() * 0.0
        return F.cross_entropy(logits, target, ignore_index=VOID)


def semantic_targets(
    maps: list[torch.Tensor], image_sizes: list[tuple[int, int]], padded_size: tuple[int, int]
) -> torch.Tensor:
    """(B, H, W) int64 class maps matching a transformed detection batch: each (h, w) map is resized
    (nearest) to its image's resized size and padded at the bottom / right with void, as the images are."""
    device = maps[0].device if maps else None  # built where the maps are: no host round trip on a GPU
    target = torch.full((len(maps), *padded_size), VOID, dtype=torch.long, device=device)
    for i, (label, (h, w)) in enumerate(zip(maps, image_sizes, strict=True)):
        resized = F.interpolate(label[None, None].float(), size=(h, w), mode="nearest")
        target[i, :h, :w] = resized[0, 0].long()
    return target


def run_by_size(images: list[torch.Tensor], run) -> list:
    """``run`` (a list of images -> one output per image) called once per image size among ``images``, its
    outputs back in the input order: what :meth:`RoadDetector.detect_by_size` and the ONNX path share."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault(tuple(image.shape[-2:]), []).append(i)
    if len(groups) <= 1:
        return run(images)
    out: list = [None] * len(images)
    for members in groups.values():
        for i, result in zip(members, run([images[i] for i in members]), strict=True):
            out[i] = result
    return out


def box_in_ignore_fraction(
    boxes: torch.Tensor,
    ignore_boxes: torch.Tensor,
    labels: torch.Tensor | None = None,
    ignore_labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """For each box, the largest fraction of its area covered by any one ignore box (0 when there are none).
    With ``labels`` and ``ignore_labels``, an ignore box of a class (a COCO crowd) covers boxes of that class
    only; -1 (KITTI's DontCare) covers every class.

    Used to drop detections inside KITTI DontCare regions before scoring: torchvision has IoU but not
    intersection-over-own-area, so this is the intersection from ``box_iou``'s formula divided by area.
    """
    if boxes.numel() == 0 or ignore_boxes.numel() == 0:
        return boxes.new_zeros(len(boxes))
    lt = torch.maximum(boxes[:, None, :2], ignore_boxes[None, :, :2])
    rb = torch.minimum(boxes[:, None, 2:], ignore_boxes[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).clamp(min=1e-6)
    fraction = inter / area[:, None]
    if labels is not None and ignore_labels is not None:
        ignore_labels = ignore_labels.to(labels.device)
        fraction = fraction * ((ignore_labels[None, :] < 0) | (ignore_labels[None, :] == labels[:, None]))
    return fraction.max(dim=1).values


__all__ = [
    "BackboneWithFPN",
    "FitIntoBox",
    "Float32OutputHead",
    "Float32Outputs",
    "Float32Points",
    "RoadDetector",
    "box_in_ignore_fraction",
    "semantic_targets",
]
