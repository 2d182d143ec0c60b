"""A backbone's weights file (torchvision's layout: the state dict itself) given where a checkpoint is read."""

import pytest
import torch
from torch import nn

from shared.task import BaseTask, CheckpointMismatchError, check_checkpoint_file


def test_a_plain_state_dict_given_as_a_checkpoint_says_what_it_is_and_where_it_loads(tmp_path):
    """``test --ckpt_path resnet18.pth`` said only "not a Lightning checkpoint (no state_dict)"; a file wrapped
    as ``{"state_dict": ...}`` was already told it is a torch.save state dict and where a backbone's loads."""
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(nn.Conv2d(3, 4, 3).state_dict(), path)  # as torchvision's files: keys straight to tensors
    with pytest.raises(CheckpointMismatchError, match=r"resnet18-f37072fd.pth: a state dict saved with torch.save, "
                       r"not a checkpoint that Lightning wrote .*--model.pretrained_backbone"):  # fmt: skip
        check_checkpoint_file(path, BaseTask, option="--ckpt_path")


def test_a_dict_of_other_things_is_still_no_checkpoint(tmp_path):
    torch.save({"epoch": 3, "note": "x"}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointMismatchError, match=r"other.ckpt: not a Lightning checkpoint \(no state_dict\)"):
        check_checkpoint_file(tmp_path / "other.ckpt", BaseTask)
