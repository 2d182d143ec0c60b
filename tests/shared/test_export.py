"""shared.export on a graph small enough to check by hand: nn.Linear(4, 2)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from shared.export import check_against_pytorch, export_onnx


def test_check_against_pytorch_fails_when_one_output_element_is_off(tmp_path):
    """Every element must be within tolerance, not just some: a graph off in one output column is refused."""
    torch.manual_seed(0)
    linear = nn.Linear(4, 2)
    inputs = {"x": torch.randn(3, 4)}
    path = export_onnx(linear, (inputs["x"],), tmp_path / "linear.onnx", ["x"], ["y"])
    assert check_against_pytorch(path, linear, inputs, ["y"], atol=1e-5, rtol=1e-4)["y"] < 1e-5
    with torch.no_grad():
        linear.bias[0] += 1.0  # PyTorch's column 0 now differs from the graph's by exactly 1; column 1 agrees
    with pytest.raises(ValueError, match=r"linear\.onnx: onnxruntime differs from PyTorch in y by up to 1"):
        check_against_pytorch(path, linear, inputs, ["y"], atol=1e-5, rtol=1e-4)
