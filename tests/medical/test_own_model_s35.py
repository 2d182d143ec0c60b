"""A medical model of one's own: a ``MedicalSegmenter`` subclass trains from Python and from the CLI (its
``class_path``), export refuses it naming it, and the demo routes a checkpoint of a Prob. U-Net subclass to the
Prob. U-Net. Before the base class, the task's type hint (the three models' union) refused any other class."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from domains.medical.__main__ import main
from domains.medical.export import export_medical
from domains.medical.models import MedicalSegmenter, ProbabilisticUNet, model_name
from domains.medical.task import MedicalSegmentationTask
from tests.helpers import quiet_trainer

CONFIGS = Path(__file__).resolve().parents[2] / "domains" / "medical" / "configs"
HERE = __name__  # the module jsonargparse imports the class_path from (already imported: trusted)

pytestmark = pytest.mark.usefixtures("one_thread")


class TinySegmenter(MedicalSegmenter):
    """One 3x3 conv; its samples are its logits plus Gaussian noise. Only forward, loss and sample_logits:
    validation runs on the base class's ``loss_and_sample_logits``."""

    def __init__(self, in_channels: int = 1, noise: float = 2.0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 1, kernel_size=3, padding=1)
        self.in_channels, self.noise = in_channels, noise

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.conv(images)

    def loss(self, images, masks):
        rec = F.binary_cross_entropy_with_logits(self(images), masks.float())
        return rec, {"rec": rec.detach(), "rec_per_pixel": rec.detach()}

    def sample_logits(self, images, num_samples):
        logits = self(images)
        return logits + self.noise * torch.randn(len(images), num_samples, *images.shape[-2:])


class MyProbUNet(ProbabilisticUNet):
    """A Prob. U-Net of one's own (a subclass): routed and named as the Prob. U-Net."""


def test_a_model_of_ones_own_builds_in_python_and_evaluates_by_the_base_classs_default():
    torch.manual_seed(0)
    task = MedicalSegmentationTask(network=TinySegmenter(noise=0.0), num_samples=3, predict_dir=None)
    assert task.model_name is None  # none of MODELS
    assert task.hparams["network"] == {
        "class_path": f"{HERE}.TinySegmenter",
        "init_args": {"in_channels": 1, "noise": 0.0},
    }
    images, masks = torch.rand(2, 1, 8, 8), (torch.rand(2, 1, 8, 8) > 0.5).float()
    loss, terms, logits = task.model.loss_and_sample_logits(images, masks, 3)  # the base's default
    assert torch.equal(loss, task.model.loss(images, masks)[0]) and set(terms) == {"rec", "rec_per_pixel"}
    assert logits.shape == (2, 3, 8, 8) and torch.equal(logits[:, 2:], task.model(images))  # noise 0: its logits


def test_a_model_without_sample_logits_is_refused_when_built_naming_the_method():
    class NoSamples(MedicalSegmenter):
        forward = TinySegmenter.forward
        loss = TinySegmenter.loss

    with pytest.raises(TypeError, match="abstract class NoSamples .*sample_logits"):
        NoSamples()


def test_a_model_of_ones_own_fits_two_steps_from_the_cli_by_class_path(lidc, tmp_path, monkeypatch):
    """``--model.network '{"class_path": ...}'`` on top of a config that names another model."""
    monkeypatch.chdir(tmp_path)
    network = {"class_path": f"{HERE}.TinySegmenter", "init_args": {"noise": 1.0}}
    cli = main([
        "fit", "-c", str(CONFIGS / "unet.yaml"), "--model.network", json.dumps(network),
        "--model.num_samples", "4", "--data.data_path", str(lidc), "--data.crop_size", "32",
        "--data.batch_size", "2", "--data.num_workers", "0", "--data.max_items", "8",
        "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1", "--trainer.val_check_interval", "2",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
    ])  # fmt: skip
    assert type(cli.model.model) is TinySegmenter and cli.trainer.global_step == 2
    assert cli.model.model.init_args == {"in_channels": 1, "noise": 1.0}
    assert cli.model.model.input_size == (32, 32)  # the CLI's link from data.crop_size
    metrics = cli.trainer.callback_metrics
    assert float(metrics["val/num_samples"]) == 4 and float(metrics["val/num_images"]) == 2
    for name in ("val/ged", "val/hungarian_iou", "val/diversity", "val/dice", "val/ece", "val/rec_per_pixel"):
        assert torch.isfinite(metrics[name]), name
    assert float(metrics["val/diversity"]) > 0  # its noisy samples differ
    saved = torch.load(cli.trainer.checkpoint_callback.last_model_path, weights_only=True)
    assert saved["hyper_parameters"]["network"]["class_path"] == f"{HERE}.TinySegmenter"


def test_export_of_a_model_of_ones_own_names_it_and_what_export_supports(tmp_path):
    task = MedicalSegmentationTask(network=TinySegmenter(), predict_dir=None)
    out = tmp_path / "onnx"
    with pytest.raises(TypeError) as err:
        export_medical(task, out, size=(16, 16))
    assert str(err.value) == (
        f"no ONNX export for {HERE}.TinySegmenter: export writes the graphs of UNetSegmenter, ProbabilisticUNet, "
        "HierarchicalProbUNet and of their subclasses (exported as the model they extend); export a model of "
        "one's own with torch.onnx.export"
    )
    assert not out.exists()  # nothing left behind


def test_the_task_and_the_demo_name_a_subclass_by_the_model_it_extends():
    """One rule for a network, its class and a checkpoint's class_path."""
    net = MyProbUNet(channels=(4, 8), latent_dim=2)
    assert MedicalSegmentationTask(network=net, predict_dir=None).model_name == "prob_unet"
    assert model_name(MyProbUNet) == model_name(f"{HERE}.MyProbUNet") == "prob_unet"
    assert model_name("domains.medical.models.UNetSegmenter") == "unet"
    assert model_name(f"{HERE}.TinySegmenter") is None and model_name(TinySegmenter()) is None
    assert model_name("not_imported_module.Net") is None  # outside the suite, not imported: not imported here


def test_the_demo_routes_a_checkpoint_of_a_prob_unet_subclass_to_the_prob_unet(tmp_path, monkeypatch):
    """A checkpoint whose class_path is MyProbUNet was refused as "not one of UNetSegmenter, ...": the page
    matched the class name exactly."""
    from apps import demo_models as dm
    from domains.medical.synthetic import generate_lidc_png
    from tests.apps.pages import page, page_ok, texts
    from tests.apps.tiny import _ListDataset, medical_items

    torch.manual_seed(0)
    task = MedicalSegmentationTask(
        network=MyProbUNet(channels=(4, 8), latent_dim=2), num_samples=4, predict_dir=None, lr_scheduler=None
    )
    trainer = quiet_trainer(max_steps=1)
    trainer.fit(task, train_dataloaders=DataLoader(_ListDataset(medical_items(2, 32)), batch_size=2))
    own = tmp_path / "my_prob_unet.ckpt"
    trainer.save_checkpoint(own)
    empty = tmp_path / "no_checkpoints"
    empty.mkdir()
    monkeypatch.setenv(dm.ENV_CHECKPOINTS, str(empty))
    monkeypatch.setenv(dm.ENV_WEIGHTS, str(empty))
    monkeypatch.setenv(dm.ENV_MEDICAL_DATA, str(generate_lidc_png(tmp_path / "lidc", n_patients=7, images_per_patient=1, size=128)))
    at = page("medical")
    at.text_input(key="own_path_medical_unet").set_value(str(own)).run()
    page_ok(at)
    assert not at.sidebar.error
    assert at.selectbox(key="medical_model").value == "medical_prob_unet"
    assert "Used as the Probabilistic U-Net." in texts(at.sidebar.caption)
