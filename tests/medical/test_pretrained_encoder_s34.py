"""Medical fine-tuning from local weights: the U-Net's and the Prob. U-Net's encoder from a torchvision file or
from a medical checkpoint (``--model.pretrained_backbone``); the HPU-Net, without a registry encoder, refused."""

from __future__ import annotations

import pytest
import torch
import torchvision

from domains.medical.models import HierarchicalProbUNet, ProbabilisticUNet, UNetSegmenter
from domains.medical.task import MedicalSegmentationTask
from tests.medical.test_models import TINY

pytestmark = pytest.mark.usefixtures("one_thread")


def test_a_torchvision_resnet_file_fills_a_grey_unets_encoder(tmp_path):
    torch.manual_seed(0)
    weights = torchvision.models.resnet18(weights=None).state_dict()  # an ImageNet file's layout, made here
    path = tmp_path / "resnet18.pth"
    torch.save(weights, path)
    task = MedicalSegmentationTask(
        network=UNetSegmenter(in_channels=1, encoder="resnet18"), predict_dir=None, pretrained_backbone=str(path)
    )
    encoder = task.model.backbone.state_dict()  # the registry ResNet-18 keeps torchvision's under "net."
    torch.testing.assert_close(encoder["net.layer4.1.conv2.weight"], weights["layer4.1.conv2.weight"])
    # one grey channel: the RGB filters summed, as for every grey model of the suite
    torch.testing.assert_close(encoder["net.conv1.weight"], weights["conv1.weight"].sum(1, keepdim=True))
    assert "pretrained_backbone" not in task.hparams  # a moved file must not break loading the checkpoint


def test_a_prob_unet_checkpoints_encoder_starts_a_fine_tune_and_the_rest_starts_fresh(tmp_path):
    torch.manual_seed(0)
    trained = MedicalSegmentationTask(network=ProbabilisticUNet(**TINY["prob_unet"]), predict_dir=None)
    path = tmp_path / "lidc.ckpt"
    torch.save({"state_dict": trained.state_dict()}, path)
    torch.manual_seed(1)
    task = MedicalSegmentationTask(
        network=ProbabilisticUNet(**TINY["prob_unet"]), predict_dir=None, pretrained_backbone=str(path),
        pretrained_prefix="model.unet.encoder.",
    )  # fmt: skip
    mine, theirs = task.model.state_dict(), trained.model.state_dict()
    encoder = [k for k in mine if k.startswith("unet.encoder.")]
    assert encoder and all(torch.equal(mine[k], theirs[k]) for k in encoder)
    prior = [k for k in mine if k.startswith("prior.encoder.") and k.endswith("conv.weight")]
    assert prior and not any(torch.equal(mine[k], theirs[k]) for k in prior)  # its own encoder: from scratch


def test_the_hpu_net_is_refused_saying_which_networks_take_one(tmp_path):
    path = tmp_path / "any.pth"
    torch.save({"w": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match=r"HierarchicalProbUNet has no backbone property: .* UNetSegmenter, "
                       r"ProbabilisticUNet and models of one's own with a backbone"):  # fmt: skip
        MedicalSegmentationTask(
            network=HierarchicalProbUNet(**TINY["hpu_net"]), predict_dir=None, pretrained_backbone=str(path)
        )


def test_a_file_of_other_widths_is_not_sent_to_another_prefix(tmp_path):
    """A Prob. U-Net trained at other widths, given the U-Net encoder's prefix: the hint advised the prior net's
    prefix (its names fit as badly), which advised the U-Net's back."""
    narrow = MedicalSegmentationTask(network=ProbabilisticUNet(channels=(4, 8), latent_dim=3), predict_dir=None)
    path = tmp_path / "narrow.ckpt"
    torch.save({"state_dict": narrow.state_dict()}, path)
    with pytest.raises(ValueError, match="shape") as err:
        MedicalSegmentationTask(
            network=ProbabilisticUNet(**TINY["prob_unet"]), predict_dir=None, pretrained_backbone=str(path),
            pretrained_prefix="model.unet.encoder.",
        )  # fmt: skip
    assert "prior" not in str(err.value)
