"""Grad-CAM of a batch: one MONAI call per explained class, not one forward and backward pass per image (predict
took 14x longer with ``cam`` than without), with each image's own map all the same."""

from __future__ import annotations

import copy
import csv
from contextlib import contextmanager

import pytest
import torch
from monai.visualize import GradCAM

from shared.classification.model import ImageClassifier
from shared.classification.task import ClassificationTask, unit_range
from shared.optim import adamw
from tests.helpers import quiet_trainer, stripes_data, stripes_folder, stripes_task

pytestmark = pytest.mark.usefixtures("one_thread")


@contextmanager
def counted_forwards():
    """Counts the forward passes of every ``ImageClassifier`` (Grad-CAM's runs on a copy of the task's)."""
    calls = []
    hook = torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, output: calls.append(1) if isinstance(module, ImageClassifier) else None
    )
    try:
        yield calls
    finally:
        hook.remove()


def test_a_batch_explaining_several_classes_gets_the_per_image_maps_in_one_pass_per_class():
    torch.manual_seed(0)
    classes = ["a", "b", "c"]
    network = ImageClassifier(len(classes), "tiny_cnn", in_channels=1)
    task = ClassificationTask(network, classes, optimizer=adamw(lr=0.01)).eval()
    for module in network.modules():  # running statistics of a trained network, not the identity's
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    images = torch.randn(6, 1, 32, 32)
    explained = torch.tensor([2, 0, 1, 0, 2, 2])
    with counted_forwards() as forwards:
        cams = task.grad_cam(images, explained)
    assert len(forwards) == 3  # one per distinct class, not 6
    monai_cam = GradCAM(copy.deepcopy(network).eval(), target_layers="cam_layer", postprocessing=unit_range)
    expected = torch.cat([monai_cam(image[None], class_idx=int(c)) for image, c in zip(images, explained)])
    assert cams.shape == (6, 1, 32, 32)
    torch.testing.assert_close(cams, expected.detach(), atol=1e-5, rtol=0)
    # the maps differ between the classes asked, so a map in the wrong image's place would show
    assert float((expected[0] - expected[1]).abs().max()) > 0.1


def test_predict_runs_the_network_once_and_grad_cam_once_per_explained_class_per_batch(tmp_path):
    root = stripes_folder(tmp_path / "data", {"train": 1, "val": 1, "test": 4})
    task = stripes_task()
    task.predict_dir, task.cam = str(tmp_path / "pred"), True
    with counted_forwards() as forwards:
        quiet_trainer().predict(task, stripes_data(root))  # one batch of 8
    with (tmp_path / "pred/probabilities.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and all(r["cam"] for r in rows)
    assert len(list((tmp_path / "pred/cam").glob("*.png"))) == 8
    # the probabilities' forward + one Grad-CAM forward per class explained (9 when it ran per image)
    assert len(forwards) == 1 + len({r["cam_class"] for r in rows}) <= 3
