"""The one place that defines driving classes: KITTI object types, detector classes, semantic ids, anomaly kinds.

Decisions (so that readers, the synthetic generator, the detector and the demos agree):

* The detector trains on the three KITTI benchmark classes, ``DETECTION_CLASSES = (Car, Pedestrian,
  Cyclist)``. Vans are trained as cars (``DETECTION_CLASS_MAP``): KITTI's evaluation treats Van as a
  *neighbour* of Car (a Car detection on a van is ignored, neither a hit nor a false positive), so merging
  costs nothing there and gives the car head more data. ``Person_sitting`` is trained as Pedestrian. Truck,
  Tram and Misc are not trained on (the dataset drops and counts them); ``DontCare`` boxes are ignore
  regions. A five-class detector keeping every generated type apart takes ``GENERATED_TYPES`` as its classes.
  (This matches ``DetectionDataModule``'s defaults ``class_names`` / ``class_map``.)
* Detection labels are 0-based indices into the class tuple; models that reserve 0 for background
  (torchvision's Faster R-CNN / RetinaNet / FCOS) add 1 themselves.
* Semantic ids are 0..11 with 255 = void. "truck" covers vans and trucks, "pole" covers poles, street lamps
  and sign plates, "vegetation" covers trees, hedges and grass. Road anomalies have no semantic class: they are
  void (255) in the anomaly set's semantic maps.
"""

from __future__ import annotations

# --- KITTI object types --------------------------------------------------------------------------------------
KITTI_TYPES = ("Car", "Van", "Truck", "Pedestrian", "Person_sitting", "Cyclist", "Tram", "Misc", "DontCare")
DONTCARE = "DontCare"

# Types the synthetic generator draws (and labels); the other KITTI types are only read from real data.
GENERATED_TYPES = ("Car", "Van", "Truck", "Pedestrian", "Cyclist")

# --- detector classes ----------------------------------------------------------------------------------------
DETECTION_CLASSES = ("Car", "Pedestrian", "Cyclist")
# Renames applied to KITTI types before they are matched to DETECTION_CLASSES.
DETECTION_CLASS_MAP = {"Van": "Car", "Person_sitting": "Pedestrian"}


# Mean and standard deviation of (height, width, length) in metres per type, from KITTI training statistics.
OBJECT_DIMENSIONS: dict[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = {
    "Car": ((1.53, 0.14), (1.63, 0.10), (3.88, 0.43)),
    "Van": ((2.21, 0.32), (1.90, 0.13), (5.08, 0.60)),
    "Truck": ((3.25, 0.45), (2.59, 0.19), (10.1, 2.80)),
    "Pedestrian": ((1.76, 0.11), (0.66, 0.14), (0.84, 0.23)),
    "Person_sitting": ((1.27, 0.13), (0.59, 0.10), (0.80, 0.18)),
    "Cyclist": ((1.74, 0.09), (0.60, 0.12), (1.76, 0.18)),
    "Tram": ((3.53, 0.17), (2.54, 0.11), (16.1, 5.50)),
}

# --- semantic segmentation -----------------------------------------------------------------------------------
# Each class with its RGB colour (Cityscapes palette where Cityscapes has the class), in label order.
_SEMANTIC_TABLE = (
    ("road", (128, 64, 128)),  # 0
    ("lane_marking", (255, 255, 255)),  # 1
    ("sidewalk", (244, 35, 232)),  # 2
    ("kerb", (102, 102, 156)),  # 3
    ("building", (70, 70, 70)),  # 4
    ("vegetation", (107, 142, 35)),  # 5 (trees, hedges, grass)
    ("sky", (70, 130, 180)),  # 6
    ("pole", (153, 153, 153)),  # 7 (poles, street lamps, sign plates)
    ("car", (0, 0, 142)),  # 8
    ("truck", (0, 0, 70)),  # 9 (vans and trucks)
    ("person", (220, 20, 60)),  # 10
    ("cyclist", (255, 0, 0)),  # 11 (rider and bicycle)
)
SEMANTIC_CLASSES = tuple(name for name, _ in _SEMANTIC_TABLE)
SEMANTIC_COLORS = tuple(color for _, color in _SEMANTIC_TABLE)
SEMANTIC_ID = {name: i for i, name in enumerate(SEMANTIC_CLASSES)}


# Cityscapes' classes in id order (cityscapesscripts' ``labels.py``): the 19 train ids (``*_labelTrainIds.png``,
# also the BDD100K and Mapillary-19 protocols) and the 34 label ids (``*_labelIds.png``).
CITYSCAPES_TRAIN_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip
CITYSCAPES_LABEL_CLASSES = (
    "unlabeled", "ego vehicle", "rectification border", "out of roi", "static", "dynamic", "ground", "road",
    "sidewalk", "parking", "rail track", "building", "wall", "fence", "guard rail", "bridge", "tunnel", "pole",
    "polegroup", "traffic light", "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
    "truck", "bus", "caravan", "trailer", "train", "motorcycle", "bicycle",
)  # fmt: skip
# Each label id's train id, 255 for the void classes Cityscapes neither trains on nor scores (``ignoreInEval``):
# the ``trainId`` column of cityscapesscripts' ``helpers/labels.py`` (not a dependency), in label-id order 0..33.
# License plate (id -1) is never in a labelIds map: json2labelImg draws no negative id.
CITYSCAPES_LABEL_TO_TRAIN_ID = (
    255, 255, 255, 255, 255, 255, 255, 0, 1, 255, 255, 2, 3, 4, 255, 255, 255, 5, 255, 6, 7, 8, 9, 10, 11, 12, 13,
    14, 15, 255, 255, 16, 17, 18,
)  # fmt: skip


def semantic_class_names(num_classes: int) -> list[str]:
    """Names of a segmenter's ``num_classes`` outputs: the synthetic scenes' classes when it has as many,
    Cityscapes' train ids (19) or label ids (34), else ``class_0`` ... (a model trained on one's own label ids:
    another set's names would mislabel them)."""
    for names in (SEMANTIC_CLASSES, CITYSCAPES_TRAIN_CLASSES, CITYSCAPES_LABEL_CLASSES):
        if num_classes == len(names):
            return list(names)
    return [f"class_{i}" for i in range(num_classes)]
VOID = 255
VOID_COLOR = (0, 0, 0)

# --- road anomalies ------------------------------------------------------------------------------------------
# Objects the anomaly generator puts on the road and the training generator must never draw.
ANOMALY_KINDS = ("cardboard_box", "tyre", "rock", "animal", "cone", "odd_shape")
# Background "stuff" drawn as separate items in both generators (no boxes, no instances).
STUFF_KINDS = ("tree", "streetlight", "sign")
# SegmentMeIfYouCan labels_masks values.
ANOMALY_MASK_ANOMALY, ANOMALY_MASK_VOID = 1, 255

assert len(SEMANTIC_COLORS) == len(SEMANTIC_CLASSES)
assert {CITYSCAPES_LABEL_CLASSES[i]: t for i, t in enumerate(CITYSCAPES_LABEL_TO_TRAIN_ID) if t != VOID} == {
    name: i for i, name in enumerate(CITYSCAPES_TRAIN_CLASSES)
}, "the labelId -> trainId table must agree with the class names"
assert not set(ANOMALY_KINDS) & (set(KITTI_TYPES) | set(STUFF_KINDS)), "anomaly kinds must be unknown classes"


def semantic_palette() -> list[tuple[int, int, int]]:
    """256-entry RGB palette (void and unused ids black) for colouring a semantic id map by indexing."""
    pal = [VOID_COLOR] * 256
    for i, c in enumerate(SEMANTIC_COLORS):
        pal[i] = c
    return pal
