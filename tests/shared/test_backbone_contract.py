"""A backbone's declaration (feature_channels / feature_strides, finest first) is checked against what it returns,
its registration against what create_backbone needs, and a partial weight file is said; tiny inputs only."""

import doctest
import warnings

import pytest
import torch
from torch import nn

import shared.backbones
from shared.backbones import (
    Backbone,
    PartialLoadWarning,
    create_backbone,
    load_backbone_weights,
    register_backbone,
)
from shared.backbones import base as backbone_base
from shared.backbones.base import _REGISTRY


class TwoStages(Backbone):
    """Two stride-2 convolutions: maps at strides 2 and 4 with ``width`` and ``2 * width`` channels, unless the
    declaration given says otherwise."""

    def __init__(self, in_channels: int = 1, width: int = 4, channels=None, strides=None, reverse: bool = False):
        super().__init__()
        self.in_channels = in_channels
        self.stages = nn.ModuleList([nn.Conv2d(in_channels, width, 3, 2, 1), nn.Conv2d(width, 2 * width, 3, 2, 1)])
        self.feature_channels = list(channels or [width, 2 * width])
        self.feature_strides = list(strides or [2, 4])
        self.reverse = reverse

    def _forward_features(self, x):
        feats = self.run_stages(self.stages, x)
        return feats[::-1] if self.reverse else feats


@pytest.fixture
def registered():
    """Register backbones for one test (``registered(name, factory, family="cnn")``); removed after it."""
    names = []

    def add(name, factory, family="cnn"):
        names.append(name)
        return register_backbone(name, family)(factory)

    yield add
    for name in names:
        _REGISTRY.pop(name, None)


X = torch.zeros(1, 1, 16, 16)


def test_a_map_with_other_channels_than_declared_names_the_class_and_its_declaration():
    """It was torch's "mat1 and mat2 shapes cannot be multiplied" (or a conv's) in the head that sat on it."""
    net = TwoStages(channels=[4, 16])
    with pytest.raises(
        ValueError,
        match=r"backbone TwoStages declares feature_channels=\[4, 16\], feature_strides=\[2, 4\] \(finest first\), "
        r"but for a 16x16 input its forward_features returned \[\(4, 8, 8\), \(8, 4, 4\)\] .*: map 1 has 8 "
        r"channels, declared 16",
    ):
        net.forward_features(X)


def test_a_map_at_another_stride_than_declared_is_refused():
    """A stride-4 map declared 8 was taken: the FCOS detector then placed its points at twice the distance."""
    with pytest.raises(ValueError, match=r"map 1 is 4x4, which is not a 16x16 input at the declared stride 8 \(its "
                       r"stride is about 4; 2x2 expected\)"):
        TwoStages(strides=[2, 8]).forward_features(X)

    class HalfWidth(TwoStages):  # right in height, half as wide as declared
        def _forward_features(self, x):
            return [f[..., ::2] for f in super()._forward_features(x)]

    with pytest.raises(ValueError, match=r"map 0 is 8x4, which is not a 16x16 input at the declared stride 2"):
        HalfWidth().forward_features(X)


def test_more_or_fewer_maps_than_declared_are_refused():
    with pytest.raises(ValueError, match=r"2 maps, 3 declared"):
        TwoStages(channels=[4, 8, 16], strides=[2, 4, 8]).forward_features(X)


def test_odd_input_sizes_pass_with_floor_or_ceil_rounding():
    """Strided convs round up (17 -> 9 at stride 2), max-pools down (VGG: 33 -> 16): both are a map within one
    pixel of input / stride, and pass; the registry's backbones at odd sizes too."""

    class Pooled(TwoStages):
        def __init__(self, in_channels: int = 1):
            super().__init__(in_channels)
            self.stages = nn.ModuleList([nn.MaxPool2d(2), nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(1, 8, 1))])
            self.feature_channels = [1, 8]

    for h, w in ((17, 19), (33, 47), (7, 9)):
        x = torch.zeros(1, 1, h, w)
        assert [f.shape[-1] for f in TwoStages().forward_features(x)] == [-(-w // 2), -(-w // 4)]  # ceil
        assert [f.shape[-1] for f in Pooled().forward_features(x)] == [w // 2, w // 4]  # floor
    with torch.no_grad():
        for name in ("tiny_cnn", "resnet18", "alexnet", "vgg11", "mobilenet_v3_small", "unet"):
            create_backbone(name, in_channels=1).eval().forward_features(torch.zeros(1, 1, 33, 47))


def test_coarse_first_is_refused_declared_so_or_returned_so(registered):
    """Maps returned coarse-first ran silently (a U-Net decoder upsampled the wrong way round)."""
    with pytest.raises(ValueError, match=r"TwoStages declares feature_strides=\[4, 2\]: they must be strictly ascending"):
        TwoStages(channels=[8, 4], strides=[4, 2], reverse=True).forward_features(X)
    registered("test_coarse_first", lambda in_channels=1: TwoStages(in_channels, channels=[8, 4], strides=[4, 2]))
    with pytest.raises(ValueError, match=r"strictly ascending, the maps finest first"):
        create_backbone("test_coarse_first", in_channels=1)  # at construction, before any forward pass
    with pytest.raises(ValueError, match=r"map 0 has 8 channels, declared 4"):  # declared finest first, returned not
        TwoStages(reverse=True).forward_features(X)


def test_a_declaration_missing_an_attribute_or_unequal_in_length_is_refused_at_construction(registered):
    class NoStrides(TwoStages):
        def __init__(self, in_channels: int = 3):
            super().__init__(in_channels)
            del self.feature_strides

    registered("test_no_strides", NoStrides)
    with pytest.raises(ValueError, match=r"backbone NoStrides does not set feature_strides: a Backbone sets"):
        create_backbone("test_no_strides")  # a bare AttributeError, later, from whatever read it
    registered("test_unequal", lambda in_channels=3: TwoStages(in_channels, strides=[2, 4, 8]))
    with pytest.raises(ValueError, match=r"declares 2 feature_channels but 3 feature_strides"):
        create_backbone("test_unequal")
    registered("test_not_ints", lambda in_channels=3: TwoStages(in_channels, channels=[4.0, 8.0]))
    with pytest.raises(ValueError, match=r"feature_channels must be a non-empty list of positive integers"):
        create_backbone("test_not_ints")
    registered("test_equal_strides", lambda in_channels=3: TwoStages(in_channels, strides=[4, 4]))
    with pytest.raises(ValueError, match=r"feature_strides=\[4, 4\]: they must be strictly ascending"):
        create_backbone("test_equal_strides")
    registered("test_fixed_input", lambda in_channels=3: TwoStages(3))  # a factory that ignores in_channels
    with pytest.raises(ValueError, match=r"asked for in_channels=1 but sets in_channels=3"):
        create_backbone("test_fixed_input", in_channels=1)


def test_a_backbone_without_forward_features_says_what_to_return(registered):
    """It raised NotImplementedError('')."""

    class NoForward(Backbone):
        def __init__(self, in_channels: int = 3):
            super().__init__()
            self.in_channels, self.feature_channels, self.feature_strides = in_channels, [4], [2]

    said = r"NoForward does not implement _forward_features\(x\): a Backbone's _forward_features returns a list of"
    with pytest.raises(NotImplementedError, match=said):
        NoForward().forward_features(torch.zeros(1, 3, 8, 8))
    registered("test_no_forward", NoForward)
    with pytest.raises(NotImplementedError, match=said):
        create_backbone("test_no_forward")


def test_registration_checks_the_factory(registered):
    """A factory without in_channels failed at create_backbone with a raw TypeError."""

    class NoInChannels(Backbone):
        def __init__(self, channels: int = 3):
            super().__init__()

    with pytest.raises(TypeError, match=r"register_backbone\('test_no_in'\): .*NoInChannels must accept in_channels"):
        registered("test_no_in", NoInChannels)
    with pytest.raises(TypeError, match=r"decorates a class or function that builds the backbone, got 'tiny_cnn'"):
        registered("test_not_callable", "tiny_cnn")
    assert "test_no_in" not in _REGISTRY
    registered("test_kwargs_factory", lambda **kw: TwoStages(**kw))  # **kwargs takes in_channels too
    assert create_backbone("test_kwargs_factory", in_channels=1).in_channels == 1
    registered("test_own_family", TwoStages, family="mine")  # a new family of one's own is fine
    assert shared.backbones.list_backbones("mine") == ["test_own_family"]


def test_an_unknown_backbone_says_a_users_module_registers_when_imported():
    with pytest.raises(KeyError, match=r"unknown backbone 'my_tiny'; available backbones: .*registered when its module "
                       r"is imported: define there a subclass of the task's network and name it in the config's "
                       r"class_path"):
        create_backbone("my_tiny")


def test_outputs_are_checked_once_per_input_size_and_not_inside_compiled_graphs(monkeypatch):
    """A few integer comparisons per map, only when the input size changes (resnet18 at 64x64: 10 us a check,
    0.6 us a call without one, of about 11 ms a forward pass on one CPU thread)."""
    checked = []
    check = backbone_base.check_features
    monkeypatch.setattr(backbone_base, "check_features", lambda *a: checked.append(tuple(a[2])) or check(*a))
    net = TwoStages()
    for size in (16, 16, 16, 24, 24, 16):
        net.forward_features(torch.zeros(2, 1, size, size))
    assert checked == [(16, 16), (24, 24), (16, 16)]
    torch._dynamo.reset()
    try:
        compiled = torch.compile(net.forward_features, backend="eager", fullgraph=True, dynamic=True)
        checked.clear()
        assert [f.shape[-1] for f in compiled(torch.zeros(1, 1, 20, 20))] == [10, 5]
        assert checked == []
    finally:
        torch._dynamo.reset()


def _tiny_file(tmp_path, edit):
    state = create_backbone("tiny_cnn", in_channels=1).state_dict()
    edit(state)
    torch.save(state, tmp_path / "w.pt")
    return tmp_path / "w.pt"


def test_a_file_loaded_in_part_warns_once_with_counts_and_names(tmp_path):
    """A ResNet-50 file loaded into a ResNet-18 without a word (97 tensors, 23 convolutions left random)."""

    def another_network(state):
        state["stages.0.0.weight"] = torch.zeros(8, 1, 5, 5)
        state["stages.3.0.weight"] = torch.zeros(8, 8, 3, 3)

    path = _tiny_file(tmp_path, another_network)
    net = create_backbone("tiny_cnn", in_channels=1)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        report = load_backbone_weights(net, path)
    assert [w.category for w in said] == [PartialLoadWarning]
    message = str(said[0].message)
    assert "1 of the file's tensors differ in shape (stages.0.0.weight (file (8, 1, 5, 5), model (8, 1, 3, 3)))" in message
    assert "1 of the file's tensors have no place in TinyCNN (stages.3.0.weight)" in message
    assert "1 of TinyCNN's tensors keep their initial values" in message and "warn_partial=False" in message
    assert report.shape_mismatch and report.unexpected and len(report.loaded) == len(net.state_dict()) - 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_backbone_weights(create_backbone("tiny_cnn", in_channels=1), path, warn_partial=False).unexpected


def test_a_file_of_this_backbone_with_a_head_loads_without_a_warning_one_missing_a_tensor_with_one(tmp_path):
    def head(state):
        state["fc.weight"] = torch.zeros(10, 32)  # a classifier head: left out quietly

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = load_backbone_weights(create_backbone("tiny_cnn", in_channels=1), _tiny_file(tmp_path, head))
    assert report.head == ["fc.weight"] and report.clean

    def one_left_out(state):
        state.pop("stages.2.4.weight")  # inside a stage the file fills: that tensor stays at its initial value

    with pytest.warns(PartialLoadWarning, match=r"1 of TinyCNN's tensors are missing among those it filled"):
        report = load_backbone_weights(create_backbone("tiny_cnn", in_channels=1), _tiny_file(tmp_path, one_left_out))
    assert report.missing == report.missing_in_part == ["stages.2.4.weight"]


def test_fpn_levels_beyond_the_backbones_maps_names_the_option():
    from domains.driving.detection.model import BackboneWithFPN

    with pytest.raises(
        ValueError,
        match=r"num_levels must be in 1\.\.3 for TinyCNN, got 4 \(the option --model\.network\.init_args\.fpn_levels\)",
    ):
        BackboneWithFPN(create_backbone("tiny_cnn"), num_levels=4)


def test_the_package_docstring_examples_run():
    """They failed with NameError: torch, and had no expected output."""
    result = doctest.testmod(shared.backbones, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 5 and result.failed == 0


def test_the_backbone_speed_benchmark_runs_a_backbone_of_ones_own(tmp_path, monkeypatch, capsys):
    """benchmarks/backbones.py fixed its choices before any module of the user's was imported: a backbone of
    one's own was an 'invalid choice'."""
    from benchmarks.backbones import main

    (tmp_path / "speed_mybb.py").write_text(
        "from torch import nn\n"
        "from shared.backbones import Backbone, register_backbone\n"
        "@register_backbone('speed_test_tiny', family='cnn')\n"
        "class SpeedTiny(Backbone):\n"
        "    def __init__(self, in_channels=3):\n"
        "        super().__init__()\n"
        "        self.in_channels = in_channels\n"
        "        self.stages = nn.ModuleList([nn.Conv2d(in_channels, 4, 3, 2, 1)])\n"
        "        self.feature_channels, self.feature_strides = [4], [2]\n"
        "    def _forward_features(self, x):\n"
        "        return self.run_stages(self.stages, x)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    quick = ["--sizes", "32", "--batch", "1", "--iters", "1", "--accelerator", "cpu"]
    with pytest.raises(SystemExit):
        main([*quick, "--names", "speed_test_tiny"])  # not imported: an unknown name, said
    assert "unknown backbone(s) speed_test_tiny; registered: " in capsys.readouterr().err
    try:
        lines = main([*quick, "--import", "speed_mybb", "--names", "speed_test_tiny"])
        assert lines[-1].startswith("| speed_test_tiny | 0.00 | ")
    finally:
        shared.backbones.base._REGISTRY.pop("speed_test_tiny", None)
