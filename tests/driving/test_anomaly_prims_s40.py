"""Every anomaly kind and drawing variant gives the same primitives: pinned by SHA-256 digests.

``test_synthetic_bytes.py`` pins whole scenes, but its few anomalies are boxes, lying tyres, rocks and spotted
animals only; the cases here draw each kind and variant of ``_anomaly_prims`` (printed box, standing and lying
tyre, spotted and plain animal, slab / star / blob odd shape) in front of the camera and too near to draw.
The digests were recorded with the 163-line if-chain, before it became one function per kind (task R8).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from domains.driving.classes import ANOMALY_KINDS
from domains.driving.synthetic import FOCAL_PER_WIDTH, Camera, ObjectSpec
from domains.driving.synthetic.anomalies import _PRIMITIVES, _anomaly_prims
from domains.driving.synthetic.primitives import _Ctx, _Local

_CAM = Camera(width=320, height=96, f=320 * FOCAL_PER_WIDTH, cx=160.0, cy=44.0, yaw=0.02)
_CTX = _Ctx(sun=np.array([0.3, 0.8, 0.5]), lighting="day")

# (kind, style, dims (h, w, le), colour): the style picks the variant, as in _anomaly_prims
_CASES = {
    "box_plain": ("cardboard_box", 1, (0.5, 0.55, 0.7), (170, 125, 80)),
    "box_printed": ("cardboard_box", 3, (0.5, 0.55, 0.7), (170, 125, 80)),
    "tyre_standing": ("tyre", 7, (0.8, 0.22, 0.8), (22, 22, 24)),
    "tyre_lying": ("tyre", 8, (0.22, 0.8, 0.8), (22, 22, 24)),
    "rock": ("rock", 11, (0.4, 0.6, 0.5), (130, 120, 110)),
    "animal_spotted": ("animal", 9, (0.5, 0.35, 1.4), (150, 140, 130)),
    "animal_plain": ("animal", 10, (0.5, 0.35, 1.4), (120, 80, 45)),
    "cone": ("cone", 2, (0.6, 0.3, 0.3), (255, 100, 10)),
    "odd_slab": ("odd_shape", 1, (0.8, 0.9, 1.2), (40, 160, 200)),
    "odd_star": ("odd_shape", 5, (0.8, 0.9, 1.2), (40, 160, 200)),
    "odd_blob": ("odd_shape", 10, (0.8, 0.9, 1.2), (40, 160, 200)),
}

DIGESTS = {
    "box_plain-visible": "071034a2a02dfcb1a6289095e0844454d516597a3574c9c12b96c42346ff59c3",
    "box_plain-too_near": "4f83b3b8837ae46f0f96d6f65b3f56a20979edbb69907cbc24064a2a9eaad273",
    "box_printed-visible": "777c1847a9613bba74d06b77315a5998cc3ead862fdd120293505231b46b39f0",
    "box_printed-too_near": "315a140118185210b166b4b1f70fb0b98edc5dcec9becab096744821ba47c056",
    "tyre_standing-visible": "405415507419cf7b4fb9368667b19f35250e054509921975ab7d28c4cfa8aa26",
    "tyre_standing-too_near": "679067bd77a54ae5dedf0c22eb3e9c83e85ead2048f1b64c91e1180fa4ff0a5b",
    "tyre_lying-visible": "112c97911f5de23c91cacff4e4d01092a6b0bcc8e47d748a0179927d6a917070",
    "tyre_lying-too_near": "679067bd77a54ae5dedf0c22eb3e9c83e85ead2048f1b64c91e1180fa4ff0a5b",
    "rock-visible": "ad9508d819d9a62ae7cfffa6caa9704efa9cb824159769ef53ceb4ee2bddfdd9",
    "rock-too_near": "679067bd77a54ae5dedf0c22eb3e9c83e85ead2048f1b64c91e1180fa4ff0a5b",
    "animal_spotted-visible": "42c083f8487502cd8c4e8fc723aeb40fcc84a1bb6fd5ada1839d7dbb2db72161",
    "animal_spotted-too_near": "679067bd77a54ae5dedf0c22eb3e9c83e85ead2048f1b64c91e1180fa4ff0a5b",
    "animal_plain-visible": "0efe16d03501edf9229bfacd9617e429bca6921082e42dd65d8f3b5cc9451891",
    "animal_plain-too_near": "679067bd77a54ae5dedf0c22eb3e9c83e85ead2048f1b64c91e1180fa4ff0a5b",
    "cone-visible": "815f51767fcaec91aa518921c5c457dfae4043a0ac9a6a178c69c48f93341a94",
    "cone-too_near": "679067bd77a54ae5dedf0c22eb3e9c83e85ead2048f1b64c91e1180fa4ff0a5b",
    "odd_slab-visible": "3eb6a9c5b82c7a0ae3a7c44856a5c85842423de555bf2228048d9c7c057e3c3a",
    "odd_slab-too_near": "62d6cf70b3e1ce118b25683d80d712b41bfe4870f8359dd15bc93d35a7d911d0",
    "odd_star-visible": "c45a5f7a8a382cc6eca5cb255750891409ea04b0d7b24292ca39da7822d060a1",
    "odd_star-too_near": "679067bd77a54ae5dedf0c22eb3e9c83e85ead2048f1b64c91e1180fa4ff0a5b",
    "odd_blob-visible": "a127b0d97f929150f3b0b322f8a4ad5360ef8350a08032776a1f443f0b14f903",
    "odd_blob-too_near": "679067bd77a54ae5dedf0c22eb3e9c83e85ead2048f1b64c91e1180fa4ff0a5b",
}


def _feed(h, value) -> None:
    """Hash a primitive list exactly: arrays by dtype, shape and bytes, numbers by repr."""
    if isinstance(value, np.ndarray):
        h.update(f"{value.dtype}{value.shape}".encode())
        h.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, (list, tuple)):
        h.update(f"{type(value).__name__}{len(value)}(".encode())
        for v in value:
            _feed(h, v)
        h.update(b")")
    else:
        h.update(f"{type(value).__name__}:{value!r};".encode())


def _prims_digest(case: str, z: float) -> tuple[list, str]:
    kind, style, dims, color = _CASES[case]
    spec = ObjectSpec(kind, 0.4, z, 0.6, dims, 0.0, color, style)
    out: list = []
    _anomaly_prims(_Local(_CAM, spec, 0.0), spec, _CTX, out)
    h = hashlib.sha256()
    _feed(h, out)
    return out, h.hexdigest()


@pytest.mark.parametrize("where", ["visible", "too_near"])
@pytest.mark.parametrize("case", list(_CASES))
def test_anomaly_prims_are_unchanged(case, where):
    out, digest = _prims_digest(case, 7.0 if where == "visible" else 0.3)
    if where == "visible":
        assert out, f"{case}: nothing drawn in front of the camera"
    assert digest == DIGESTS[f"{case}-{where}"]


def test_every_anomaly_kind_has_a_drawing_function_and_is_drawn_here():
    assert set(_PRIMITIVES) == set(ANOMALY_KINDS)
    assert {c[0] for c in _CASES.values()} == set(ANOMALY_KINDS)


def test_unknown_anomaly_kind_names_the_known_ones():
    spec = ObjectSpec("sofa", 0.0, 7.0, 0.0, (0.8, 0.9, 2.0))
    with pytest.raises(ValueError, match=r"unknown anomaly kind 'sofa'.*cardboard_box.*odd_shape"):
        _anomaly_prims(_Local(_CAM, spec, 0.0), spec, _CTX, [])
