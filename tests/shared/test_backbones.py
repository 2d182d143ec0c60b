import pytest
import torch

from shared.backbones import UNet, create_backbone, list_backbones, upsample_nearest

# vit_b_16 is the full 86M-parameter ViT-B preset (for loading real weights): too slow for every-case tests.
FAST = [n for n in list_backbones() if n != "vit_b_16"]


def _kwargs(name):
    return {"image_size": 64, "patch_size": 16} if name == "vit" else {}


@pytest.mark.parametrize("name", FAST)
@pytest.mark.parametrize("in_channels", [1, 3])
def test_backbone_returns_declared_features(name, in_channels):
    net = create_backbone(name, in_channels=in_channels, **_kwargs(name)).eval()
    assert len(net.feature_channels) == len(net.feature_strides)
    for size in (64, 96):
        with torch.no_grad():
            # one image: eval mode, so the batch size changes no shape (two had doubled the VGGs' 2-3 s each)
            feats = net.forward_features(torch.randn(1, in_channels, size, size))
        assert [f.shape[1] for f in feats] == net.feature_channels
        assert [tuple(f.shape[-2:]) for f in feats] == [(size // s, size // s) for s in net.feature_strides]
        assert net.feature_strides == sorted(net.feature_strides), "features must be finest first"


def test_vit_b_16_preset_builds_with_torchvision_shapes():
    net = create_backbone("vit_b_16", in_channels=3)
    assert net.net.encoder.pos_embedding.shape == (1, 197, 768)
    assert net.feature_strides == [4, 8, 16, 32]


def test_unknown_backbone_lists_available_names():
    with pytest.raises(KeyError) as err:
        create_backbone("resnet1000")
    assert "resnet18" in str(err.value) and "vit" in str(err.value)


def test_an_option_a_backbone_does_not_take_is_named_with_the_ones_it_does():
    """backbone_kwargs {channels: [...]} for the unet ended in a 40-line TypeError traceback from its __init__."""
    with pytest.raises(ValueError, match=r"backbone 'unet' takes no option 'channels' \(backbone_kwargs\); its options: encoder, encoder_kwargs, decoder_channels"):
        create_backbone("unet", channels=[8, 16])
    with pytest.raises(ValueError, match=r"backbone 'resnet18' takes no option '_d' \(backbone_kwargs\); its options: none"):
        create_backbone("resnet18", _d=1)  # a registration lambda's bound default is no option
    assert create_backbone("tiny_cnn", width=4).feature_channels[0] == 4


def test_channel_mismatch_says_what_was_expected():
    net = create_backbone("resnet18", in_channels=1)
    with pytest.raises(ValueError, match="in_channels=1 .* 3 channels"):
        net.forward_features(torch.zeros(1, 3, 64, 64))


def test_bad_in_channels_argument():
    with pytest.raises(ValueError, match="in_channels"):
        create_backbone("tiny_cnn", in_channels=0)


def test_asking_for_downloaded_weights_or_an_unknown_family_says_what_to_do():
    """pretrained=True failed with "<lambda>() got an unexpected keyword argument"; family="CNN" gave []."""
    from shared.backbones import list_backbones

    with pytest.raises(ValueError, match=r"not downloaded here; .*load_backbone_weights"):
        create_backbone("resnet18", pretrained=True)
    with pytest.raises(ValueError, match=r"unknown backbone family 'CNN'; the families are cnn, transformer, unet"):
        list_backbones(family="CNN")
    assert "resnet18" in list_backbones(family="cnn") and "resnet18" not in list_backbones(family="unet")


@pytest.mark.parametrize(
    "encoder,kw", [("resnet18", {}), ("vit", {"image_size": 64, "patch_size": 16}), ("unet_encoder", {})]
)
def test_unet_decoder_on_cnn_and_transformer_encoders(encoder, kw):
    net = UNet(in_channels=3, encoder=encoder, encoder_kwargs=kw).eval()
    with torch.no_grad():
        feats = net.forward_features(torch.randn(1, 3, 64, 64))
    assert net.feature_strides[0] == 1 and feats[0].shape[-2:] == (64, 64)
    assert [f.shape[1] for f in feats] == net.feature_channels
    assert [f.shape[-1] for f in feats] == [64 // s for s in net.feature_strides]


@pytest.mark.parametrize(
    "shape, size", [((2, 3, 4, 5), (8, 10)), ((1, 2, 3, 3), (9, 6)), ((1, 1, 4, 4), (7, 9))]
)
def test_upsample_nearest_broadcast_equals_interpolate(monkeypatch, shape, size):
    """The compiled path (a broadcast, used for whole factors) gives F.interpolate's values and gradients."""
    x = torch.randn(*shape, requires_grad=True)
    expected = torch.nn.functional.interpolate(x, size=size, mode="nearest")
    (expected * torch.arange(expected.numel()).view_as(expected)).sum().backward()
    expected_grad, x.grad = x.grad.clone(), None

    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    out = upsample_nearest(x, size)
    (out * torch.arange(out.numel()).view_as(out)).sum().backward()
    assert out.shape == expected.shape
    assert torch.equal(out, expected)
    assert torch.equal(x.grad, expected_grad)
    whole_factors = size[0] % shape[2] == 0 and size[1] % shape[3] == 0
    took_interpolate = out.grad_fn.name() == "UpsampleNearest2DBackward0"
    assert took_interpolate != whole_factors  # the broadcast for whole factors, F.interpolate otherwise


def test_upsample_nearest_under_torch_compile_takes_the_broadcast_and_matches():
    """Really compiled (dynamic shapes, one graph): no interpolation left in the graph for whole factors,
    F.interpolate's values, gradients equal up to rounding; a 7 -> 9 resize keeps the interpolation."""
    graphs = []

    def capture(gm, example_inputs):  # the graph dynamo traced, run as it is
        graphs.append(str(gm.graph))
        return gm.forward

    torch._dynamo.reset()
    try:
        compiled = torch.compile(upsample_nearest, backend=capture, fullgraph=True, dynamic=True)
        x = torch.randn(2, 3, 4, 5, requires_grad=True)
        weights = torch.randn(2, 3, 8, 15)
        out = compiled(x, (8, 15))
        (grad,) = torch.autograd.grad((out * weights).sum(), x)
        expected = torch.nn.functional.interpolate(x, size=(8, 15), mode="nearest")
        (expected_grad,) = torch.autograd.grad((expected * weights).sum(), x)
        assert torch.equal(out, expected)
        torch.testing.assert_close(grad, expected_grad)
        assert "interpolate" not in graphs[-1] and "expand" in graphs[-1]

        compiled(torch.randn(1, 1, 7, 7), (9, 9))
        assert "interpolate" in graphs[-1]
    finally:
        torch._dynamo.reset()


def test_a_folder_given_as_the_weight_file_is_named_a_folder(tmp_path):
    from shared.backbones import load_backbone_weights

    with pytest.raises(IsADirectoryError, match=r"is a folder: give the \.pth"):  # it said "not found"
        load_backbone_weights(create_backbone("tiny_cnn"), tmp_path)


def test_a_backbone_registered_again_by_the_same_factory_replaces_itself_another_is_refused():
    """Re-running a notebook cell (or reloading a module) that registers a backbone raised "registered twice"."""
    from shared.backbones import register_backbone
    from shared.backbones.base import _REGISTRY

    def make_factory():
        def tiny_again(in_channels: int = 3):
            return create_backbone("tiny_cnn", in_channels=in_channels)

        return tiny_again

    try:
        register_backbone("test_tiny_again", "cnn")(make_factory())
        register_backbone("test_tiny_again", "cnn")(make_factory())  # the cell run again: a new function object
        assert create_backbone("test_tiny_again", in_channels=1).feature_channels
        def another(in_channels: int = 3):
            return create_backbone("resnet18", in_channels=in_channels)

        with pytest.raises(ValueError, match=r"registered twice: .*\.tiny_again and .*\.another"):
            register_backbone("test_tiny_again", "cnn")(another)
    finally:
        _REGISTRY.pop("test_tiny_again", None)


def test_a_same_named_factory_from_another_module_is_refused():
    from shared.backbones import create_backbone, register_backbone
    from shared.backbones.base import _REGISTRY

    def tiny(in_channels: int = 3):
        return create_backbone("tiny_cnn", in_channels=in_channels)

    def tiny_elsewhere(in_channels: int = 3):
        return create_backbone("resnet18", in_channels=in_channels)

    tiny_elsewhere.__qualname__, tiny_elsewhere.__module__ = tiny.__qualname__, "someone_elses_module"
    try:
        register_backbone("test_same_name", "cnn")(tiny)
        with pytest.raises(ValueError, match="registered twice"):
            register_backbone("test_same_name", "cnn")(tiny_elsewhere)
    finally:
        _REGISTRY.pop("test_same_name", None)


def test_mobilenet_eval_mode_follows_training_statistics_after_a_short_run():
    """torchvision's MobileNetV3 BatchNorm momentum 0.01 left the running statistics far from the data after a
    short run, so eval mode drifted from what training saw (an audit's 160-step Mask R-CNN: box AP50 0.0 in
    eval, 1.0 with 0.1). After 100 training-mode passes over one batch, eval mode gives training mode's
    stride-8 features (0.01: a gap of about the features' own size)."""
    for name in ("mobilenet_v3_small", "mobilenet_v3_large"):
        momenta = {m.momentum for m in create_backbone(name).modules() if isinstance(m, torch.nn.BatchNorm2d)}
        assert momenta == {0.1}, name
    torch.manual_seed(0)
    net = create_backbone("mobilenet_v3_small", in_channels=3)
    x = 3.0 + 2.0 * torch.randn(4, 3, 64, 64)  # far from the initial running statistics (mean 0, variance 1)
    with torch.no_grad():
        net.train()
        for _ in range(100):
            trained = net.forward_features(x)[2]
        evaluated = net.eval().forward_features(x)[2]
    gap = float((evaluated - trained).abs().mean() / trained.abs().mean())
    assert gap < 0.05, f"eval mode is {gap:.2f} of the features away from training mode"
