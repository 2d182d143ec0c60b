"""Each anomaly kind's random spec (size, colour, style, heading), pinned by SHA-256 digests.

``_anomaly_spec`` draws from the layout's generator, so a draw more or less, or another order, shifts every
scene after it. The whole-set digests (``test_synthetic_bytes``) cover the kinds a 3-image set happens to hold;
these pin every kind over 40 seeds, with the generator's next draw (the number of draws made). Recorded with the
if-chain of task clismall (s41); a mismatch means a spec's draws changed.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from domains.driving.classes import ANOMALY_KINDS
from domains.driving.synthetic.anomalies import _PRIMITIVES, _anomaly_spec

SPEC_SHA256 = {
    "cardboard_box": "9d704e62a46800e908ed9fdf7b0233e7d643a50c9f99e6f4143902a7900ea64d",
    "tyre": "d0a16c78833d447438fa1692c5c2c26f9d2fba31c9827f18d03fb2134f561f1b",
    "rock": "450ff6307fa3a19798567a70bce9ce2e4aaae7a73d64945211f05438d4b4289f",
    "animal": "11dd4b4428627c59e443e46ba2042ad083c9e519bcce3d659217590dbf20f0b9",
    "cone": "9c21db53ea6617166531bcc077d79308761ab18218b911d5d02eeff1b44f80d7",
    "odd_shape": "6b3038ae32353c15e1c5dd571a6ebf829356ebc008de5872f0e2ae28c5ea18f4",
}


def _spec_digest(kind: str) -> str:
    """The specs of ``kind`` for seeds 0-39 as plain numbers (no numpy reprs), each followed by the next draw."""
    h = hashlib.sha256()
    for seed in range(40):
        rng = np.random.default_rng(seed)
        s = _anomaly_spec(rng, kind, 1.5, 9.0)
        fields = (s.kind, s.x, s.z, float(s.heading), tuple(float(d) for d in s.dims), float(s.speed),
                  tuple(int(c) for c in s.color), int(s.style))  # fmt: skip
        h.update(repr(fields).encode())
        h.update(repr(float(rng.random())).encode())
    return h.hexdigest()


@pytest.mark.parametrize("kind", ANOMALY_KINDS)
def test_each_kinds_spec_draws_are_unchanged(kind):
    assert _spec_digest(kind) == SPEC_SHA256[kind]


def test_every_kind_has_a_spec_and_a_drawing_and_an_unknown_one_is_named():
    assert set(SPEC_SHA256) == set(ANOMALY_KINDS) == set(_PRIMITIVES)
    with pytest.raises(ValueError, match=r"unknown anomaly kind 'sofa'; expected one of \('cardboard_box'"):
        _anomaly_spec(np.random.default_rng(0), "sofa", 0.0, 5.0)
