"""The README's promise that plain networks work without Lightning: a slim inference image (torch, torchvision,
MONAI) imports every task's network and builds it from a checkpoint's ``network`` entry. A Lightning import at
the top of the backbones' weight module had made all of them fail."""

from __future__ import annotations

import ast
import functools
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

#: each task's plain network (class path: the init args the real-process test builds it with)
NETWORKS = {
    "domains.medical.models.UNetSegmenter": {"channels": [4, 8]},
    "domains.medical.models.ProbabilisticUNet": {"channels": [4, 8], "latent_dim": 2},
    "domains.medical.models.HierarchicalProbUNet": {},
    "domains.driving.detection.model.RoadDetector": {"num_classes": 2, "backbone": "tiny_cnn"},
    "domains.driving.instances.model.RoadInstanceSegmenter": {"num_classes": 2, "backbone": "tiny_cnn", "fpn_levels": 3},
    "domains.driving.anomaly.model.AnomalySegmenter": {"num_classes": 3, "encoder": "tiny_cnn"},
    "domains.driving.accident.model.AccidentAnticipator": {"backbone": "tiny_cnn"},
    "shared.classification.model.ImageClassifier": {"num_classes": 2, "backbone": "tiny_cnn"},
}  # fmt: skip
LIGHTNING = ("pytorch_lightning", "lightning", "lightning_fabric")
PROJECT = ("shared", "domains")

SCRIPT = f"""
import importlib, sys

class NoLightning:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {LIGHTNING!r}:
            raise ImportError(f"blocked {{name}}")

sys.meta_path.insert(0, NoLightning())
import torch

networks = {NETWORKS!r}
for class_path, init_args in networks.items():
    module, _, name = class_path.rpartition(".")
    net = getattr(importlib.import_module(module), name)(**init_args).eval()
    assert sum(p.numel() for p in net.parameters()) > 0, class_path
from shared.backbones import create_backbone, load_backbone_weights  # the library's entry points too
assert not [m for m in sys.modules if m.split(".")[0] in ("pytorch_lightning", "lightning")]
print("built", len(networks))
"""


def _module_file(root: Path, module: str) -> Path | None:
    base = root.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _run_at_import(body: list[ast.stmt]):
    """The import statements that run when a module is imported: not those in functions (run when called) nor
    under ``if TYPE_CHECKING:``; those in class bodies, ``if``/``try``/``with`` blocks do (one guarded by
    ``except ImportError`` counts too: stricter than the slim image needs)."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if "TYPE_CHECKING" not in ast.unparse(node.test):
                yield from _run_at_import(node.body)
            yield from _run_at_import(node.orelse)
        elif isinstance(node, ast.Try | ast.TryStar):
            for block in (node.body, *(h.body for h in node.handlers), node.orelse, node.finalbody):
                yield from _run_at_import(block)
        elif isinstance(node, ast.With | ast.ClassDef):
            yield from _run_at_import(node.body)


@functools.cache
def _imports_at_import(path: Path) -> list[ast.Import | ast.ImportFrom]:
    return list(_run_at_import(ast.parse(path.read_text(), str(path)).body))  # each file parsed once


def lightning_imported_on_import(root: Path, start: str) -> list[str] | None:
    """The chain of the project's own module-level imports (packages under ``root``: shared, domains) by which
    importing ``start`` imports Lightning, or None when none does. Importing a module runs its packages'
    ``__init__`` first; ``from package import name`` imports the submodule ``name`` where there is one."""
    seen: set[str] = set()
    todo: list[tuple[str, list[str]]] = [(start, [])]
    while todo:
        module, chain = todo.pop()
        parts = module.split(".")
        wanted = [".".join(parts[: i + 1]) for i in range(len(parts))]  # the packages above, then the module
        for name in wanted:
            if name in seen:
                continue
            seen.add(name)
            path = _module_file(root, name)
            if path is None:
                continue
            package = name if path.name == "__init__.py" else name.rpartition(".")[0]
            for node in _imports_at_import(path):
                if isinstance(node, ast.Import):
                    targets = [alias.name for alias in node.names]
                else:
                    if node.level:
                        anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                        base = ".".join([*anchor, node.module] if node.module else anchor)
                    else:
                        base = node.module or ""
                    targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
                for target in targets:
                    step = [*chain, f"{name} imports {target}"]
                    if target.split(".")[0] in LIGHTNING:
                        return step
                    if target.split(".")[0] in PROJECT and _module_file(root, target) is not None:
                        todo.append((target, step))
    return None


def test_no_plain_network_module_imports_lightning_when_imported():
    """The static twin of the real-process test below (marked slow: a fresh interpreter importing torch, MONAI and
    every task's network costs 8 s): the project's own module-level imports, followed from each network's
    module and from the backbones package, reach no Lightning module. Not seen here: imports inside functions
    or constructors, ``importlib`` calls and a third-party package that imports Lightning (the slow twin's)."""
    starts = [path.rpartition(".")[0] for path in NETWORKS] + ["shared.backbones"]
    found = {start: lightning_imported_on_import(REPO, start) for start in starts}
    assert not {start: chain for start, chain in found.items() if chain}
    assert all(_module_file(REPO, start) for start in starts)  # the walk started from files that exist


def test_the_import_walk_finds_lightning_behind_a_package_init_and_a_relative_import(tmp_path):
    """The walk above must be able to fail: a Lightning import two relative imports and a package
    ``__init__`` away is found (and one inside a function or under TYPE_CHECKING is not an import-time one)."""
    files = {
        "shared/__init__.py": "",
        "shared/nets/__init__.py": "from .model import Net\n",
        "shared/nets/model.py": "import torch\nfrom ..helpers import tools\n",
        "shared/helpers/__init__.py": "",
        "shared/helpers/tools.py": "import os\n\nclass Tools:\n    import pytorch_lightning as pl\n",
        "shared/lazy.py": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import lightning\n"
            "def f():\n    import pytorch_lightning\n"
        ),
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert lightning_imported_on_import(tmp_path, "shared.nets") == [
        "shared.nets imports shared.nets.model",
        "shared.nets.model imports shared.helpers.tools",
        "shared.helpers.tools imports pytorch_lightning",
    ]
    assert lightning_imported_on_import(tmp_path, "shared.lazy") is None


@pytest.mark.slow
def test_every_plain_network_imports_and_builds_without_lightning():
    """The real thing: a fresh interpreter with Lightning blocked imports and builds every network."""
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, capture_output=True, text=True, timeout=300,
                          check=False, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "built 8"


def test_the_freeze_unfreeze_callback_is_still_importable_from_the_package():
    from shared.backbones import BackboneFreezeUnfreeze
    from shared.backbones.finetuning import BackboneFreezeUnfreeze as moved

    assert BackboneFreezeUnfreeze is moved
