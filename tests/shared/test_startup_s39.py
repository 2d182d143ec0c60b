"""Start cost (s39): ``--data.max_items N`` checks only the ImageFolder files its cut keeps, and keeps the very
items (and order) that checking every file and cutting after gave."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from shared.classification import data as classification_data
from shared.classification.data import ClassificationDataError, ClassificationDataModule, interleave_classes
from tests.helpers import STRIPE_CLASSES, stripes_folder


@pytest.fixture
def checked(monkeypatch) -> list[str]:
    """The files ``_is_image`` opened (``<split>/<class>/<name>``), in order."""
    opened = []
    original = classification_data._is_image
    def spy(path: Path, *args) -> bool:
        opened.append("/".join(path.parts[-3:]))
        return original(path, *args)

    monkeypatch.setattr(classification_data, "_is_image", spy)
    return opened


def _setup(root: Path, max_items: int | None) -> ClassificationDataModule:
    data = ClassificationDataModule(
        "imagefolder", str(root), STRIPE_CLASSES, in_channels=1, image_size=(16, 16), num_workers=0,
        max_items=max_items,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data.setup("fit")
    return data


def _paths(splits) -> dict[str, list[str]]:
    return {name: [item.path for item in items] for name, items in splits.items()}


def _folder(tmp_path: Path) -> Path:
    """12 / 4 / 4 images per class and split; the first training image of class h does not decode, and the first
    of v's is a text file with an image's name."""
    root = stripes_folder(tmp_path / "folder")
    (root / "train/h/0.png").write_bytes(b"\x89PNG\r\n\x1a\ncut short")
    (root / "train/v/0.png").write_text("not an image")
    return root


@pytest.mark.parametrize("max_items", [1, 3, 8])
def test_max_items_checks_only_the_files_it_keeps_and_keeps_what_the_whole_read_kept(tmp_path, checked, max_items):
    """Every one of the 40 files was opened and verified to keep N of each split (2.0 s for 6,000 64 px PNGs at
    N = 8; 0.3 s now)."""
    root = _folder(tmp_path)
    whole = classification_data.read_image_folder(root, STRIPE_CLASSES)  # every file checked: the reference
    assert len(checked) == 40
    before = {name: interleave_classes(items)[:max_items] for name, items in whole.items()}
    checked.clear()
    kept = _setup(root, max_items).splits
    assert _paths(kept) == _paths(before)
    # each split's kept files, the 2 broken ones met on the way, and with N = 1 class v's first image (its
    # presence is checked as before), nothing more
    probed = 1 if max_items == 1 else 0
    assert len(checked) == 3 * max_items + 2 + 3 * probed
    if max_items == 3:  # round-robin over h and v, each in name order (0, 1, 10, ...); train's 0.png are broken
        assert checked == [
            "train/h/0.png", "train/h/1.png", "train/v/0.png", "train/v/1.png", "train/h/10.png",
            "val/h/0.png", "val/v/0.png", "val/h/1.png", "test/h/0.png", "test/v/0.png", "test/h/1.png",
        ]  # fmt: skip


def test_max_items_still_refuses_a_training_class_without_a_readable_image(tmp_path, checked):
    root = _folder(tmp_path)
    for path in (root / "train/v").iterdir():
        path.write_text("not an image")
    with pytest.raises(ClassificationDataError, match=r"train/v: class 'v' has no images"):
        _setup(root, 1)
    # h's first two (0.png broken, 1.png kept), then every one of v's, looking for one
    assert checked[:2] == ["train/h/0.png", "train/h/1.png"]
    assert sorted(checked[2:]) == sorted(f"train/v/{path.name}" for path in (root / "train/v").iterdir())
