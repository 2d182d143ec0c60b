"""Bad input (audit s33): a JPEG cut short is refused by every reader, not decoded with a grey lower half (OpenCV
says "Premature end of JPEG file" on stderr only, naming no file)."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from shared.classification.data import ClassificationDataError, read_image, read_image_folder
from shared.images import ImageDecodeError, check_jpeg_whole
from shared.optim import WarmupCosine
from tests.helpers import STRIPE_CLASSES as CLASSES
from tests.helpers import quiet_trainer, stripes_data, stripes_folder, stripes_task

pytestmark = pytest.mark.usefixtures("one_thread")


def _cut_jpeg(path: Path, name: str | None = None) -> Path:
    """A 48 x 64 grey JPEG cut to half its bytes, at ``name`` beside ``path`` (default: ``path`` itself), which
    OpenCV decodes, its lower half grey (checked)."""
    ok, data = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (48, 64), np.uint8))
    out = path.with_name(name or path.name)
    out.write_bytes(data.tobytes()[: len(data) // 2])
    assert ok and cv2.imread(str(out), cv2.IMREAD_GRAYSCALE).shape == (48, 64)
    return out


def test_a_cut_short_jpeg_is_found_by_its_content_whatever_its_name(tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (48, 64), np.uint8)
    _, data = cv2.imencode(".jpg", image)
    whole = data.tobytes()
    for name, content in {"whole.jpg": whole, "trailer.jpg": whole + b"SEFT" + bytes(100)}.items():
        (tmp_path / name).write_bytes(content)
        check_jpeg_whole(tmp_path / name)  # passes
    assert cv2.imwrite(str(tmp_path / "grey.png"), image)
    check_jpeg_whole(tmp_path / "grey.png")  # not a JPEG: nothing to check
    for name in ("cut.jpg", "cut.png", "CUT.JPEG"):  # a JPEG saved under a .png name too
        (tmp_path / name).write_bytes(whole[: len(whole) // 2])
        assert cv2.imread(str(tmp_path / name), cv2.IMREAD_UNCHANGED).shape == (48, 64)  # OpenCV: grey-filled
        with pytest.raises(ImageDecodeError, match=rf"^{tmp_path / name}: cannot decode image \(") as err:
            check_jpeg_whole(tmp_path / name)
        assert err.value.reason.startswith("cannot decode image (")


def test_classification_read_image_refuses_a_cut_short_jpeg(tmp_path):
    stripes_folder(tmp_path, {"train": 1})
    cut = _cut_jpeg(tmp_path / "train" / "h" / "0.png", "0.jpg")
    with pytest.raises(ClassificationDataError, match=rf"^{cut}: cannot decode image \("):
        read_image(cut, 1)
    as_png = _cut_jpeg(tmp_path / "train" / "v" / "0.png")  # a JPEG under a .png name
    with pytest.raises(ClassificationDataError, match=rf"^{as_png}: cannot decode image \("):
        read_image(as_png, 3)


def test_classification_fit_counts_a_cut_short_jpeg_as_other_unreadable_files(tmp_path):
    """Counted at the data check, as a truncated PNG is (its chunks are verified), not trained on grey-filled."""
    root = stripes_folder(tmp_path, {"train": 3, "val": 1})
    cut = _cut_jpeg(root / "train" / "v" / "1.png", "1.jpg")
    (root / "train" / "v" / "1.png").unlink()
    with pytest.warns(UserWarning, match=r"not a readable image file") as caught:
        splits = read_image_folder(root, CLASSES)
    assert str(cut) in " ".join(str(w.message) for w in caught)
    assert sorted(Path(s.path).name for s in splits["train"]) == ["0.png", "0.png", "1.png", "2.png", "2.png"]
    with pytest.raises(ClassificationDataError, match=rf"{cut}: not a readable image file"):
        read_image_folder(root, CLASSES, strict=True)


def test_classification_predict_lists_a_cut_short_jpeg_in_unreadable_csv(tmp_path):
    """It was predicted (probabilities for a grey-filled image) and listed nowhere."""
    torch.manual_seed(0)
    root = stripes_folder(tmp_path / "data", {"train": 2, "val": 1})
    mine = stripes_folder(tmp_path / "mine", {"p": 1}) / "p"
    cut = _cut_jpeg(mine / "v" / "0.png", "cut.jpg")
    task = stripes_task(lr_scheduler=WarmupCosine)
    task.predict_dir = str(tmp_path / "pred")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the task's other warnings
        with pytest.warns(UserWarning, match=r"predict: 1 of 3 images could not be read"):
            quiet_trainer().predict(task, stripes_data(root, predict_path=str(mine)))
    with (tmp_path / "pred" / "unreadable.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [row["path"] for row in rows] == [str(cut)] and "cannot decode image" in rows[0]["error"]
    with (tmp_path / "pred" / "probabilities.csv").open() as f:
        assert sorted(Path(row["path"]).name for row in csv.DictReader(f)) == ["0.png", "0.png"]
