"""ONNX export of the classifier: a PNG on disk, prepared only as ``classifier.json`` says and run in
onnxruntime, gives the probabilities and the class ``predict`` writes for the same file, grey and RGB; the
graph at another size; the sidecar's fields by value, the fitted two-class threshold among them."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
import torch

from shared.backbones import IMAGENET_MEAN, IMAGENET_STD
from shared.classification.export import data_steps, export_classification, main
from shared.classification.model import ImageClassifier
from shared.classification.task import ClassificationTask
from shared.export import run_onnx
from tests.helpers import STRIPE_CLASSES, quiet_trainer, stripes, stripes_data, stripes_folder, stripes_task

pytestmark = pytest.mark.usefixtures("one_thread")

TRAINED = (16, 24)  # H != W: a sidecar that swapped them would resize wrongly


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A grey tiny_cnn fitted two steps at 16x24, its Youden threshold fitted at validation: (checkpoint,
    data folder)."""
    torch.manual_seed(0)
    tmp = tmp_path_factory.mktemp("fitted")
    root = stripes_folder(tmp / "data", {"train": 2, "val": 2})
    task = stripes_task(decision_threshold="youden")
    trainer = quiet_trainer(max_steps=2, limit_val_batches=1.0)
    trainer.fit(task, stripes_data(root, image_size=TRAINED))
    trainer.save_checkpoint(tmp / "classifier.ckpt")
    return tmp / "classifier.ckpt", root


def _photos(folder) -> list:
    """Two PNGs unlike the training images: a colour photo (channels differ, so grey conversion and channel
    order count) of another size and aspect, and a grey one."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 256, (30, 37, 3), dtype=np.uint8)
    colour[..., 2] //= 3  # a tint: equal channels would hide a wrong luma or BGR / RGB
    assert cv2.imwrite(str(folder / "colour.png"), colour)
    return [folder / "colour.png", stripes(folder / "grey.png", vertical=True, seed=3, size=40)]


def _predicted(task, root, folder, tmp_path, **data) -> dict[str, dict]:
    """``predict``'s probabilities.csv rows for the images in ``folder``, by file name."""
    task.predict_dir, task.cam = str(tmp_path / "pred"), False
    quiet_trainer().predict(task, stripes_data(root, predict_path=str(folder), **data))
    with (tmp_path / "pred/probabilities.csv").open() as f:
        return {row["path"].rsplit("/", 1)[-1]: row for row in csv.DictReader(f)}


def _prepared(path, sidecar: dict) -> np.ndarray:
    """``path`` as the sidecar's ``read``, ``resize`` and ``input`` say, by hand with OpenCV: (1, C, H, W)."""
    if sidecar["in_channels"] == 1:
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH)[..., None]
    else:
        image = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH), cv2.COLOR_BGR2RGB)
    height, width = sidecar["input_size"]
    flag = getattr(cv2, sidecar["resize"]["interpolation"].removeprefix("cv2."))
    image = cv2.resize(image, (width, height), interpolation=flag).reshape(height, width, -1)
    return (image.astype(np.float32) / 255).transpose(2, 0, 1)[None]


def _decide(probabilities: np.ndarray, rule: dict, classes: list[str]) -> str:
    if rule["rule"] == "threshold":
        return classes[1] if probabilities[1] >= rule["threshold"] else classes[0]
    return classes[int(np.argmax(probabilities))]


def _agrees_with_predict(onnx, sidecar: dict, photos: list, rows: dict) -> None:
    for path in photos:
        logits, probabilities = run_onnx(onnx, {"image": _prepared(path, sidecar)})
        row = rows[path.name]
        expected = [float(row[f"p_{name}"]) for name in sidecar["classes"]]
        np.testing.assert_allclose(probabilities[0], expected, atol=1e-5, rtol=0)
        np.testing.assert_allclose(probabilities[0], torch.tensor(logits[0]).softmax(0).numpy(), atol=1e-6)
        assert _decide(probabilities[0], sidecar["decision"], sidecar["classes"]) == row["predicted"]


def test_a_png_prepared_as_the_sidecar_says_gives_predicts_probabilities_and_the_fitted_threshold(
    fitted, tmp_path
):
    ckpt, root = fitted
    out = tmp_path / "export"
    sidecar = main(["--ckpt", str(ckpt), "--out", str(out), "--size", "20", "28"])
    assert json.loads((out / "classifier.json").read_text()) == sidecar
    fitted_threshold = float(torch.load(ckpt, weights_only=True)["state_dict"]["fitted_threshold"])
    assert 0 < fitted_threshold < 1
    assert sidecar["decision"] == {
        "rule": "threshold",
        "threshold": fitted_threshold,
        "positive_class": "v",
        "source": "fitted at validation (Youden's J)",
        "text": "'v' where probabilities[:, 1] >= threshold, else 'h'",
    }
    # the trained size from the checkpoint; --size only sized the check
    assert sidecar["input_size"] == [16, 24] and sidecar["checked_size"] == [20, 28]
    assert sidecar["classes"] == STRIPE_CLASSES and sidecar["in_channels"] == 1
    assert sidecar["inputs"] == {"image": ["batch", 1, "height", "width"]}
    assert sidecar["outputs"] == ["logits", "probabilities"] and "fixed_input_size" not in sidecar
    # grey: the mean of ImageNet's per-channel statistics, applied inside the graph
    assert sidecar["normalisation"]["mean"] == pytest.approx([0.449], abs=1e-12)
    assert sidecar["normalisation"]["std"] == pytest.approx([0.226], abs=1e-12)
    assert sidecar["resize"]["interpolation"] == "cv2.INTER_LINEAR"
    assert sidecar["resize"]["opencv"] == "cv2.resize(image, (24, 16), interpolation=cv2.INTER_LINEAR)"
    assert sidecar["read"].startswith("grey: cv2.imread(path, cv2.IMREAD_GRAYSCALE | cv2.IMREAD_ANYDEPTH)")
    assert sidecar["data"]["data_format"] == "imagefolder" and sidecar["domain"] == "classification"
    assert sidecar["model"] == "image_classifier/tiny_cnn" and sidecar["checkpoint"] == str(ckpt)
    assert 0 <= max(sidecar["tolerance"]["max_abs_diff"].values()) < 1e-4
    photos = _photos(tmp_path / "photos")
    task = ClassificationTask.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
    rows = _predicted(task, root, tmp_path / "photos", tmp_path, image_size=TRAINED)
    _agrees_with_predict(out / "classifier.onnx", sidecar, photos, rows)


def test_an_rgb_classifier_normalises_per_channel_and_its_graph_takes_another_size(tmp_path):
    """Randomly initialised, exported without data settings: the data module's default size, the argmax; the
    graph at another size and batch is the network on the normalised image."""
    torch.manual_seed(0)
    task = ClassificationTask(ImageClassifier(2, "tiny_cnn", in_channels=3), STRIPE_CLASSES).eval()
    with torch.no_grad():  # logits near 0 at random: spread them, so a wrong mean or std shows far above 1e-5
        task.model.head.weight.mul_(30)
    sidecar = export_classification(
        task, tmp_path / "export", data={"image_size": [12, 20], "data_format": "kitti"}
    )
    assert sidecar["decision"] == {
        "rule": "argmax",
        "threshold": None,
        "text": "classes[argmax(probabilities)]",
    }
    assert sidecar["input_size"] == sidecar["checked_size"] == [12, 20]
    assert sidecar["normalisation"]["mean"] == list(IMAGENET_MEAN)
    assert sidecar["normalisation"]["std"] == list(IMAGENET_STD)
    assert sidecar["inputs"] == {"image": ["batch", 3, "height", "width"]} and sidecar["read"].startswith(
        "RGB: "
    )
    assert "crops the domain's data module cut from its kitti source" in sidecar["data"]["note"]
    photos = _photos(tmp_path / "photos")
    root = stripes_folder(tmp_path / "data", {"train": 1, "val": 1})
    rows = _predicted(task, root, tmp_path / "photos", tmp_path, in_channels=3, image_size=(12, 20))
    _agrees_with_predict(tmp_path / "export/classifier.onnx", sidecar, photos, rows)
    # another size and batch: dynamic, and the normalisation inside is the network's input
    image = torch.rand(3, 3, 40, 32, generator=torch.Generator().manual_seed(1))
    logits, probabilities = run_onnx(tmp_path / "export/classifier.onnx", {"image": image.numpy()})
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = task.model((image - mean) / std)
    np.testing.assert_allclose(logits, expected.numpy(), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(probabilities, expected.softmax(1).numpy(), atol=1e-6)


def test_without_data_settings_the_default_size_and_a_fitted_threshold_are_written(tmp_path):
    task = stripes_task().eval()
    task.fitted_threshold.fill_(0.25)
    sidecar = export_classification(task, tmp_path)
    assert sidecar["input_size"] == [64, 64] and sidecar["data"]["data_format"] is None
    assert "not recorded" in sidecar["data"]["note"]
    assert sidecar["decision"]["rule"] == "threshold" and sidecar["decision"]["threshold"] == 0.25


def test_a_transform_the_sidecar_cannot_describe_is_refused_naming_the_files(monkeypatch):
    import albumentations as A

    from shared.classification import export

    monkeypatch.setattr(
        export,
        "classification_transforms",
        lambda *a, **k: A.Compose([A.CenterCrop(8, 8), A.Resize(8, 8), A.Normalize()]),
    )
    with pytest.raises(
        NotImplementedError, match=r"classification_transforms .* shared/classification/export\.py"
    ):
        data_steps((8, 8), 3)
