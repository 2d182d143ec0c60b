"""Label types: a drawn object's exact labels (:class:`LabeledObject`) and a rendered :class:`Frame`.

Boxes are in continuous pixel-edge coordinates (``right = last column + 1``); truncation is the fraction of
the full silhouette box outside the image and occlusion comes from the visible fraction of the in-image
silhouette (>= 0.9 -> 0, >= 0.5 -> 1, > 0 -> 2; level 3, "unknown", is never produced). Boxes lower than
``DONTCARE_MIN_HEIGHT`` px become KITTI ``DontCare`` lines. :class:`Frame` also builds the SegmentMeIfYouCan
anomaly mask (0 normal, 1 anomaly, 255 void on an optional band around each anomaly). Kept apart from the renderer so
the label formats can be read (and tested) without the drawing code.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from domains.driving.classes import ANOMALY_MASK_ANOMALY, ANOMALY_MASK_VOID, DONTCARE

DONTCARE_MIN_HEIGHT = 10.0  # px: smaller (clipped) boxes are written as DontCare


@dataclass
class LabeledObject:
    """A drawn object with exact labels. Boxes are (left, top, right, bottom) in continuous pixel coordinates."""

    kind: str
    instance_id: (
        int  # value in Frame.instance; 0 when fully hidden. Visible objects are 1..K in drawing order
    )
    is_anomaly: bool
    full_box: tuple[float, float, float, float]  # tight box of the whole silhouette, may leave the image
    box: tuple[float, float, float, float]  # full_box clipped to the image
    truncation: float
    in_image_pixels: int  # silhouette pixels inside the image, before occlusion
    visible_pixels: int  # pixels of this instance in the final instance map
    dims: tuple[float, float, float]  # h, w, l (m)
    location: tuple[float, float, float]  # bottom centre, camera coordinates (m)
    rotation_y: float
    alpha: float
    ground_point: tuple[float, float]  # pixel of the bottom centre
    source: int = -1  # index of the drawn ObjectSpec in layout.objects (the clips' track id)

    @property
    def visible_fraction(self) -> float:
        return self.visible_pixels / max(1, self.in_image_pixels)

    @property
    def occlusion(self) -> int:
        v = self.visible_fraction
        return 0 if v >= 0.9 else 1 if v >= 0.5 else 2

    @property
    def hidden(self) -> bool:
        return self.visible_pixels == 0

    @property
    def dontcare(self) -> bool:
        return self.box[3] - self.box[1] < DONTCARE_MIN_HEIGHT

    def kitti_line(self) -> str:
        """The 15-field KITTI label line (DontCare with KITTI's placeholder values for small objects)."""
        l_, t_, r_, b_ = self.box
        if self.dontcare:
            return f"{DONTCARE} -1 -1 -10 {l_:.2f} {t_:.2f} {r_:.2f} {b_:.2f} -1 -1 -1 -1000 -1000 -1000 -10"
        h, w, le = self.dims
        x, y, z = self.location
        return (
            f"{self.kind} {self.truncation:.2f} {self.occlusion:d} {self.alpha:.2f} "
            f"{l_:.2f} {t_:.2f} {r_:.2f} {b_:.2f} {h:.2f} {w:.2f} {le:.2f} {x:.2f} {y:.2f} {z:.2f} {self.rotation_y:.2f}"
        )


@dataclass
class Frame:
    """One rendered frame: RGB image, id maps and exact object labels."""

    image: np.ndarray  # (H, W, 3) uint8 RGB, lighting and weather applied
    semantic: np.ndarray  # (H, W) uint8 ids into SEMANTIC_CLASSES; anomalies are VOID (255)
    instance: np.ndarray  # (H, W) uint16, 0 = no object, else LabeledObject.instance_id
    ground_semantic: np.ndarray  # (H, W) uint8: the ground and sky only, before anything standing was drawn
    objects: list[LabeledObject]
    calib: np.ndarray  # 3x4 P2
    lighting: str
    weather: str
    layout_seed: int
    t: int
    stats: dict

    @property
    def anomaly(self) -> np.ndarray:
        """Boolean map of visible anomaly pixels."""
        ids = [o.instance_id for o in self.objects if o.is_anomaly and o.instance_id > 0]
        return np.isin(self.instance, ids) if ids else np.zeros(self.instance.shape, bool)

    def anomaly_mask(self, void_width: int = 0) -> np.ndarray:
        """SegmentMeIfYouCan label: 0 normal, 1 anomaly, 255 void on a band ``void_width`` px around anomalies
        (none by default: a band all round an anomaly would cut every predicted component at its edge)."""
        anom = self.anomaly.astype(np.uint8)
        out = anom * ANOMALY_MASK_ANOMALY
        if void_width > 0 and anom.any():
            k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * void_width + 1, 2 * void_width + 1))
            band = (cv2.dilate(anom, k) > 0) & (anom == 0)
            out[band] = ANOMALY_MASK_VOID
        return out.astype(np.uint8)

    def kitti_lines(self) -> list[str]:
        """Label lines of the visible detection objects (anomalies and fully hidden objects excluded)."""
        return [o.kitti_line() for o in self.objects if not o.is_anomaly and not o.hidden]
