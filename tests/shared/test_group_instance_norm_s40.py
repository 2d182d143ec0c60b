"""A U-Net whose instance norms run as ``GroupNorm(C, C)`` (the Prob. U-Net's faster CPU step) names the input
size it takes, as the plain one does: a map of one pixel at the coarsest stride failed deep in torch instead
("Expected more than 1 value per channel when training")."""

from __future__ import annotations

import pytest
import torch

from domains.medical.models.common import instance_norm_as_group_norm
from shared.backbones import create_backbone


def test_a_unet_with_its_instance_norms_as_group_norms_names_the_size_it_takes():
    net = instance_norm_as_group_norm(create_backbone("unet_encoder", in_channels=1, channels=(4, 8, 16)))
    problem = net.input_size_problem(4, 4)
    assert problem is not None and "instance norms need more than one pixel" in problem
    with pytest.raises(ValueError, match=r"takes an input over \d+ pixels high or wide"):
        net(torch.zeros(1, 1, 4, 4))
    assert net.input_size_problem(64, 64) is None
