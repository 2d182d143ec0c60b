"""Same seed, same bytes: the generator's output is pinned by SHA-256 digests.

The digests below were recorded with the single-module generator (``domains/driving/synthetic.py``) at commit
7fcc165, before it was split into the ``domains.driving.synthetic`` package. Moving code between modules must
not change a random draw, so every file of a tiny KITTI set and a tiny anomaly set, and the arrays of a few
``render_scene`` frames (seeds, lightings, weathers, anomalies), still hash to these values. A mismatch means
the random draws or the maths changed; if that was intended, record the new values and say why in the commit.
(PNG bytes also depend on OpenCV's encoder: an OpenCV upgrade may change the image digests alone.)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from domains.driving import synthetic as S

SIZE = (320, 96)

# generate_kitti(root, n_images=6, size=SIZE, frames_per_sequence=3, seed=3); meta.json without "seconds"
KITTI_SHA256 = {
    ".complete": "aecdae3dc5b102c83e7cf526412ad875d46f6000ed1cfdac639c45219819720d",
    ".synthetic_generator": "aecdae3dc5b102c83e7cf526412ad875d46f6000ed1cfdac639c45219819720d",
    "meta.json": "42ed4053973d97207e9b30af75a61f12c7b5838054345a3b4228b8bfbe64d6ff",
    "sequences.txt": "aeb314f22cb728ad21f1738dfa0936e21b09957e52af4e45d6a9c5ef4f894530",
    "training/calib/000000.txt": "ef997e2639286acbcace463ec248c1faeeb5bfad4c6e14ba63c19f8604f57ea0",
    "training/calib/000001.txt": "4a144e886bd8cd392da3fe9c07d75f0d55f4e1aa4f098df889947ba451f41f8a",
    "training/calib/000002.txt": "9e01837fe4b41e199f2ebceae8ec5a3ff843bb3e20263d5c54a3873bebd19a2e",
    "training/calib/000003.txt": "2dd7ed4f6fb11744a06edc6615904a5305c5dee62e9d8e424639e0ee5ed66d5e",
    "training/calib/000004.txt": "4b5b2685e9b3b5d5befd519276103412e3fd80f9e793b724e6a7f4a886c25a05",
    "training/calib/000005.txt": "617cfe392c0ec0695a35ae414495d2a23ea9ca992bde06e2d7ce3df8568f45d9",
    "training/image_2/000000.png": "9a40bf172cb003c1c1bd4ed49bfde4a616f0f1aaae5d46df10d2e1b8a8a25cf7",
    "training/image_2/000001.png": "bad5312c917b3a477ef52d496ec57aaf0a5d6904e548bcc18dac7ad5abc26d2d",
    "training/image_2/000002.png": "9bbb93bea12513d09965af64153710deab5c7cc52d06e2c7f01c6b3b3bb4dcee",
    "training/image_2/000003.png": "e1bb6e3d587735089b211ab9240ac74095f2055829fd04e934499fe9e2820665",
    "training/image_2/000004.png": "b4294a52852bfe34c4b666ffaa01026626beed01b26f036265059d4abfd519ef",
    "training/image_2/000005.png": "3f18ed61ace67a6e20b765ea1e17419fd84c204728da6c256b0460703c036335",
    "training/instance/000000.png": "1dcbc0366e11e300e239621649c56831f6ec946f04e097cda95d2ac8096fbedd",
    "training/instance/000001.png": "a7e026374be78903fbcd798a4554e593db11cf3191206f3800cd01570ea5a650",
    "training/instance/000002.png": "f6083a754a31f563c4072c1163de94a3ccc149a6654234d58fd672787cfa149a",
    "training/instance/000003.png": "bef2b34cfc6bd33b9ed2e3cc84c8ac11385dcb6b47d198da1c6ec513c8fa0fd2",
    "training/instance/000004.png": "a0d9619c86c033680c0ec1e99129dd14099999d70abfa3d457c70bfe3f60cfba",
    "training/instance/000005.png": "9f15ffa07ec13cf70d35fa70823375a927278111e210a680bca134a2ff2ddf71",
    "training/label_2/000000.txt": "955535c8792c985e553a2cb6464dfa11874799250719ab5f0a8a3d0edfe81d59",
    "training/label_2/000001.txt": "501207a72eba191bd5a2c110e66c988fb66332c01b48010be83695ddea67b529",
    "training/label_2/000002.txt": "2bd03100017056ab7acb07391d34bdc601efacdee84f3f6a3db09b1e8db168f7",
    "training/label_2/000003.txt": "75be98f16d69b617a5be224c6d936d5e72521f416de2464e8c30cb1ec2a51b68",
    "training/label_2/000004.txt": "6cb32b690ddc7268e2503bc7f807bbfd6fc332568e9d9477a177e54b14b8e885",
    "training/label_2/000005.txt": "7d517b52a69f99849ea295e3ad0377704e4b6f84c26d9cec616390410077de67",
    "training/semantic/000000.png": "753991e489d54e706f0189463031fe0e469f006a5ad5ed2209ae3139c3682fa2",
    "training/semantic/000001.png": "cf4966c6ec8cfc47df7842f177f416f82081236f546da6ecaed63e49675e03c4",
    "training/semantic/000002.png": "a0af304e8d99427947d4e7f3b71e0dcc102d83a067ffe289a9547b43710be65e",
    "training/semantic/000003.png": "9587ab59e4866ddee7fbc5269eaf3b92c9d352e3bc5038e199eeab1ce9617901",
    "training/semantic/000004.png": "d77f319a49d2d2eb11149a705d0d7999fec426d1eede286c9695d0180170849a",
    "training/semantic/000005.png": "79609240a0ffebacdfe90b65c15945aeae5d08355b41f3b0a21fe80d1fc8369a",
}

# generate_anomaly(root, n_images=3, size=SIZE, seed=1, void_width=2) (the void band was the default until
# 2026-12-06); meta.json without "seconds" (its "labels" line re-recorded then: "(0: none)" added)
ANOMALY_SHA256 = {
    ".complete": "4f3e96fd6d5717e5b8e0079885a804336c2abbb49f7689564594867b89265b6c",
    ".synthetic_generator": "4f3e96fd6d5717e5b8e0079885a804336c2abbb49f7689564594867b89265b6c",
    "images/synthetic_00000.png": "964c44ec81b7f69032345e6793d9baca61880f89e05db0efa1d0784a636de611",
    "images/synthetic_00001.png": "ddf17b85ca21a56e38ead13c0496c62fa21905202fd11be30dbd2ac5221f62b7",
    "images/synthetic_00002.png": "4f20a9e851bae1a2bb8032103cf89d67577fd7cddb38bc54f29deaa1357739b8",
    "labels_masks/synthetic_00000_labels_semantic.png": "0592e4f8c06abe58653bd26150e53e22aeae5b48ddbe1b3084e60cf2b499cdfd",
    "labels_masks/synthetic_00001_labels_semantic.png": "37d9190de4f91acac837402b51bb04b9409a36f4f89d6b0ec4f59321f8604974",
    "labels_masks/synthetic_00002_labels_semantic.png": "3c6de2f709709a66cce2fd896e6ba6136c13f53e74181ca9e3e84663c4e1fa97",
    "meta.json": "a4927fce893b029ed210a4ba7d7d02067ad309892e56fe15bd8aa3b33addddd3",
    "semantic/synthetic_00000.png": "92d13602ce79d6589d3850315d88cf48be1836bbe53ff513940661287b2c07e8",
    "semantic/synthetic_00001.png": "0dc107fd22d1732ebe443521d28af5f01c4d4729810bbb40f9f91c17c46fe3fc",
    "semantic/synthetic_00002.png": "3b4136434f9cd8394573f7e420800ff38b097c6300b1c40e2e3736e04f89b956",
}

# render_scene(seed, SIZE, **kw): image, semantic, instance, ground_semantic, anomaly_mask(void_width=2), calib,
# KITTI lines
SCENE_SHA256 = [
    (0, {}, "6f38f4137af38939c75477b7b0dc9fb62cfe0e16e6046c3150c25415f776d746"),
    (
        5,
        {"lighting": "night", "weather": "rain"},
        "c0ab4154b094a6d876f8496bc4cc5a05a84b65cfd551eb752f54a410edb7cdc1",
    ),
    (
        7,
        {"lighting": "dusk", "weather": "fog"},
        "b2e9ed35610e78ae8c0166b94b471d1bf4d86bca54549a30ae4b8565fce1896b",
    ),
    (
        2,
        {"anomalies": 2, "lighting": "day", "weather": "clear"},
        "2c295a2b4b8d92ea707d9e733b3a3705d6431094137de51fe6d43a83bda31460",
    ),
    (
        9,
        {"anomalies": True, "density": 1.5, "apply_weather": False},
        "1e692116ff7b755c0dd04d07d8fa261a41b41b4e97a069f61720f9d1d84e013b",
    ),
]


def _tree_digests(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            if p.name == "meta.json":  # wall-clock time is the one field that may differ between runs
                meta = json.loads(data)
                meta.pop("seconds")
                data = json.dumps(meta, sort_keys=True).encode()
            out[p.relative_to(root).as_posix()] = hashlib.sha256(data).hexdigest()
    return out


def _frame_digest(frame: S.Frame) -> str:
    h = hashlib.sha256()
    arrays = (
        frame.image,
        frame.semantic,
        frame.instance,
        frame.ground_semantic,
        frame.anomaly_mask(void_width=2),
        frame.calib,
    )
    for a in arrays:
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    h.update("\n".join(frame.kitti_lines()).encode())
    return h.hexdigest()


def test_kitti_set_bytes_are_unchanged(tmp_path):
    root = S.generate_kitti(
        tmp_path / "kitti", n_images=6, size=SIZE, frames_per_sequence=3, seed=3, verbose=False
    )
    assert _tree_digests(root) == KITTI_SHA256


def test_anomaly_set_bytes_are_unchanged(tmp_path):
    root = S.generate_anomaly(tmp_path / "anomaly", n_images=3, size=SIZE, seed=1, void_width=2, verbose=False)
    assert _tree_digests(root) == ANOMALY_SHA256


@pytest.mark.parametrize(("seed", "kw", "digest"), SCENE_SHA256, ids=[f"seed{c[0]}" for c in SCENE_SHA256])
def test_render_scene_bytes_are_unchanged(seed, kw, digest):
    assert _frame_digest(S.render_scene(seed, SIZE, **kw)) == digest
