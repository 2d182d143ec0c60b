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


@pytest.mark.parametrize("encoder, fixed", [("vit", True), ("resnet18", False)])
def test_a_graph_that_holds_only_at_its_export_size_gets_that_size_fixed(tmp_path, encoder, fixed):
    """A ViT's graph passed the check at its export size, then failed (or, for Swin, gave wrong numbers) at
    every other size its dynamic height and width allowed."""
    import warnings

    from shared.export import CheckedExport, ExportCheck, run_onnx
    from shared.segmentation import SegmentationNet

    torch.manual_seed(0)
    kwargs = (
        {
            "encoder_kwargs": {
                "image_size": 64,
                "patch_size": 16,
                "hidden_dim": 32,
                "num_layers": 1,
                "num_heads": 2,
                "mlp_dim": 32,
            }
        }
        if encoder == "vit"
        else {}
    )
    net = SegmentationNet(num_classes=2, in_channels=3, encoder=encoder, **kwargs).eval()
    hw = {0: "batch", 2: "height", 3: "width"}
    image = torch.rand(1, 3, 64, 96)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with CheckedExport(tmp_path, ExportCheck(), "test", encoder, None) as export:
            measured = export.graph(
                "seg.onnx", net, {"image": image}, ["logits"], {"image": hw, "logits": hw}
            )
            sidecar = export.finish("seg.json", {}, measured, "random images")
    said = [str(w.message) for w in caught if "exact at 64x96" in str(w.message)]
    assert (sidecar.get("fixed_input_size") == {"seg.onnx": [64, 96]}) is fixed and bool(said) is fixed
    with torch.no_grad():
        assert torch.allclose(
            torch.from_numpy(run_onnx(tmp_path / "seg.onnx", {"image": image.numpy()})[0]),
            net(image),
            atol=1e-4,
        )
    assert torch.backends.mha.get_fastpath_enabled()  # the export gave attention's fast path back
    import onnx

    dims = [[d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim] for i in onnx.load(tmp_path / "seg.onnx").graph.input]
    assert dims[0][2:] == ([64, 96] if fixed else ["height", "width"]) and dims[0][0] == "batch"
    other = torch.rand(2, 3, 128, 192)
    if fixed:
        with pytest.raises(Exception, match="(?i)dimension|shape"):  # onnxruntime refuses the other size
            run_onnx(tmp_path / "seg.onnx", {"image": other.numpy()})
    else:
        with torch.no_grad():
            assert torch.allclose(
                torch.from_numpy(run_onnx(tmp_path / "seg.onnx", {"image": other.numpy()})[0]),
                net(other),
                atol=1e-4,
            )


def test_rounding_at_twice_the_size_is_no_fixed_shape_but_a_wrong_graph_is(tmp_path, monkeypatch):
    """A fully convolutional anomaly U-Net missed the accuracy bound by a tenth at 384x1280 (fp32 rounding over
    longer sums) and was exported with its height and width fixed at 192x640."""
    import shared.export as ex

    torch.manual_seed(0)
    net = nn.Conv2d(3, 2, 3, padding=1).eval()
    check = ex.ExportCheck()
    axes = {0: "batch", 2: "height", 3: "width"}

    def graph_off_by(delta):
        def run(path, feeds):
            with torch.no_grad():
                return [net(torch.from_numpy(feeds["image"])).numpy() + delta]

        return run

    with ex.CheckedExport(tmp_path, check, "test", "conv", None) as export:
        monkeypatch.setattr(ex, "run_onnx", graph_off_by(3 * check.atol))  # past the bound, rounding's size
        assert export._wrong_at_another_size(tmp_path / "g.onnx", net, torch.rand(1, 3, 8, 8), axes) is None
        monkeypatch.setattr(ex, "run_onnx", graph_off_by(0.5))  # baked-in shapes: wrong by the values' size
        said = export._wrong_at_another_size(tmp_path / "g.onnx", net, torch.rand(1, 3, 8, 8), axes)
        assert said == "its first output differs from PyTorch by up to 0.5"


def test_largest_difference_reads_flat_and_per_graph_tolerances():
    from shared.export import largest_difference

    assert largest_difference({"tolerance": {"max_abs_diff": {"logits": 2e-6, "scores": 5e-6}}}) == 5e-6
    nested = {"tolerance": {"max_abs_diff": {"a.onnx": {"x": 1e-6}, "b.onnx": {"y": 7e-6, "z": 0.0}}}}
    assert largest_difference(nested) == 7e-6
