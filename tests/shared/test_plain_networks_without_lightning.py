"""The README's promise that plain networks work without Lightning: a slim inference image (torch, torchvision,
MONAI) imports every task's network and builds it from a checkpoint's ``network`` entry. A Lightning import at
the top of the backbones' weight module had made all of them fail."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import importlib, sys

class NoLightning:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pytorch_lightning", "lightning", "lightning_fabric"):
            raise ImportError(f"blocked {name}")

sys.meta_path.insert(0, NoLightning())
import torch

networks = {
    "domains.medical.models.UNetSegmenter": {"channels": [4, 8]},
    "domains.medical.models.ProbabilisticUNet": {"channels": [4, 8], "latent_dim": 2},
    "domains.medical.models.HierarchicalProbUNet": {},
    "domains.driving.detection.model.RoadDetector": {"num_classes": 2, "backbone": "tiny_cnn"},
    "domains.driving.instances.model.RoadInstanceSegmenter": {"num_classes": 2, "backbone": "tiny_cnn", "fpn_levels": 3},
    "domains.driving.anomaly.model.AnomalySegmenter": {"num_classes": 3, "encoder": "tiny_cnn"},
    "domains.driving.accident.model.AccidentAnticipator": {"backbone": "tiny_cnn"},
    "shared.classification.model.ImageClassifier": {"num_classes": 2, "backbone": "tiny_cnn"},
}
for class_path, init_args in networks.items():
    module, _, name = class_path.rpartition(".")
    net = getattr(importlib.import_module(module), name)(**init_args).eval()
    assert sum(p.numel() for p in net.parameters()) > 0, class_path
from shared.backbones import create_backbone, load_backbone_weights  # the library's entry points too
assert not [m for m in sys.modules if m.split(".")[0] in ("pytorch_lightning", "lightning")]
print("built", len(networks))
"""


def test_every_plain_network_imports_and_builds_without_lightning():
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=300,
                          check=False, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "built 8"


def test_the_freeze_unfreeze_callback_is_still_importable_from_the_package():
    from shared.backbones import BackboneFreezeUnfreeze
    from shared.backbones.finetuning import BackboneFreezeUnfreeze as moved

    assert BackboneFreezeUnfreeze is moved
