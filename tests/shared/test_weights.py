import gzip
import re
import warnings

import pytest
import torch
import torchvision

from shared.backbones import NothingLoadedError, WeightLoadingError, create_backbone, load_backbone_weights
from shared.backbones.weights import PartialLoadWarning

TINY_VIT = {"in_channels": 3, "patch_size": 16, "hidden_dim": 32, "num_layers": 1, "num_heads": 2, "mlp_dim": 64}


def test_round_trip_gives_identical_outputs(tmp_path):
    src = create_backbone("resnet18", in_channels=3).eval()
    path = tmp_path / "backbone.pt"
    torch.save(src.state_dict(), path)
    dst = create_backbone("resnet18", in_channels=3).eval()
    report = load_backbone_weights(dst, path, strict=True)
    assert report.clean and report.loaded
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(src.forward_features(x), dst.forward_features(x)):
            assert torch.equal(a, b)


def _load_torchvision(tmp_path, name: str, in_channels: int):
    """A torchvision model's state dict saved to a file and loaded into the registry backbone of that name."""
    tv = getattr(torchvision.models, name)(weights=None)
    path = tmp_path / f"{name}.pth"
    torch.save(tv.state_dict(), path)
    net = create_backbone(name, in_channels=in_channels)
    return tv, net, load_backbone_weights(net, path)


def test_torchvision_state_dict_loads_and_adapts_to_one_channel(tmp_path):
    tv, net, report = _load_torchvision(tmp_path, "resnet18", in_channels=1)
    assert report.adapted == ["net.conv1.weight"]
    assert report.head == ["fc.weight", "fc.bias"] and report.unexpected == []  # not part of a backbone
    assert report.missing == [] and report.shape_mismatch == [] and report.clean
    assert "2 of the file's classifier head left out: fc.weight, fc.bias" in report.summary()
    assert torch.allclose(net.net.conv1.weight, tv.conv1.weight.sum(1, keepdim=True))
    assert torch.equal(net.net.layer4[1].conv2.weight, tv.layer4[1].conv2.weight)


def test_torchvision_input_conv_is_tiled_and_rescaled_for_six_channels(tmp_path):
    # 6 input channels from an RGB conv: the 3 filters' channels twice (R G B R G B), each times 3 / 6 = 0.5,
    # so a 6-channel input that repeats an RGB image gives the RGB activations (the channel sum is unchanged)
    tv, net, report = _load_torchvision(tmp_path, "resnet18", in_channels=6)
    assert report.adapted == ["net.conv1.weight"]
    assert report.missing == [] and report.shape_mismatch == []
    weight, rgb = net.net.conv1.weight.detach(), tv.conv1.weight.detach()
    assert weight.shape == (64, 6, 7, 7)
    assert torch.allclose(weight, rgb.repeat(1, 2, 1, 1) * 0.5)
    assert torch.allclose(weight.sum(1), rgb.sum(1), atol=1e-6)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net.net.conv1(x.repeat(1, 2, 1, 1)), tv.conv1(x), atol=1e-5)


def test_torchvision_mobilenet_v3_state_dict_loads(tmp_path):
    tv, net, report = _load_torchvision(tmp_path, "mobilenet_v3_small", in_channels=3)
    assert report.missing == [] and report.shape_mismatch == [] and report.adapted == []
    assert report.head and all(k.startswith("classifier.") for k in report.head) and report.unexpected == []
    assert torch.equal(net.net.features[12][0].weight, tv.features[12][0].weight)


def test_checkpoint_prefix_selects_submodule(tmp_path):
    net = create_backbone("tiny_cnn", in_channels=1)
    ckpt = {"state_dict": {f"model.backbone.{k}": v for k, v in net.state_dict().items()}, "epoch": 3}
    path = tmp_path / "suite.ckpt"
    torch.save(ckpt, path)
    other = create_backbone("tiny_cnn", in_channels=1)
    assert load_backbone_weights(other, path, prefix="model.backbone.", strict=True).clean
    with pytest.raises(WeightLoadingError, match="prefix 'encoder.'"):
        load_backbone_weights(other, path, prefix="encoder.")


def test_safetensors_weights_load_by_prefix_as_float32(tmp_path):
    """The demo's shipped weights (fp16 safetensors of a whole network) give a backbone by key prefix."""
    from safetensors.torch import save_file

    net = create_backbone("tiny_cnn", in_channels=1)
    state = {
        f"detector.backbone.body.{k}": v.half() if v.is_floating_point() else v
        for k, v in net.state_dict().items()
    }
    save_file(state, str(tmp_path / "detector.safetensors"))
    other = create_backbone("tiny_cnn", in_channels=1)
    assert load_backbone_weights(
        other, tmp_path / "detector.safetensors", prefix="detector.backbone.body."
    ).clean
    first = next(k for k, v in net.state_dict().items() if v.is_floating_point())
    assert other.state_dict()[first].dtype == torch.float32
    assert torch.equal(other.state_dict()[first], net.state_dict()[first].half().float())
    (tmp_path / "detector.safetensors").rename(tmp_path / "DETECTOR.SAFETENSORS")  # read as safetensors too
    assert load_backbone_weights(other, tmp_path / "DETECTOR.SAFETENSORS", prefix="detector.backbone.body.").clean
    (tmp_path / "junk.safetensors").write_bytes(b"nope")
    with pytest.raises(WeightLoadingError, match="junk.safetensors: not a readable safetensors file"):
        load_backbone_weights(other, tmp_path / "junk.safetensors")


def test_mismatches_are_reported_by_name(tmp_path):
    path = tmp_path / "w.pt"
    torch.save(create_backbone("tiny_cnn", in_channels=1, width=16).state_dict(), path)
    net = create_backbone("tiny_cnn", in_channels=1, width=8)
    with pytest.raises(NothingLoadedError) as err:  # batch norms' step counters alone are not a load
        load_backbone_weights(net, path)
    report = err.value.report
    assert report.loaded == [] and not any("prefix=" in note for note in report.notes)
    assert any(
        m.startswith("stages.0.0.weight (file (16, 1, 3, 3), model (8, 1, 3, 3))")
        for m in report.shape_mismatch
    )
    # width 16 into width 8: all 36 tensors differ in shape but the 6 scalar num_batches_tracked, and a key
    # reported as a shape mismatch is not listed again as missing
    assert len(report.shape_mismatch) == 30 and report.missing == []
    with pytest.raises(WeightLoadingError, match="shape mismatch: .*stages.0.0.weight"):
        load_backbone_weights(net, path, strict=True)


def test_rgb_conv_with_another_kernel_size_is_a_mismatch_not_adapted(tmp_path):
    """Only an RGB conv of the model's kernel size is adapted to its input channels: a 5x5 RGB first conv
    in a file for a 3x3 one-channel model is a shape mismatch, reported by name and not loaded."""
    state = create_backbone("tiny_cnn", in_channels=1).state_dict()
    state["stages.0.0.weight"] = torch.randn(8, 3, 5, 5)
    torch.save(state, tmp_path / "w.pt")
    net = create_backbone("tiny_cnn", in_channels=1)
    before = net.stages[0][0].weight.detach().clone()
    report = load_backbone_weights(net, tmp_path / "w.pt")
    assert report.shape_mismatch == ["stages.0.0.weight (file (8, 3, 5, 5), model (8, 1, 3, 3))"]
    assert report.adapted == [] and report.missing == [] and report.unexpected == []
    assert torch.equal(net.stages[0][0].weight, before)


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        load_backbone_weights(create_backbone("tiny_cnn"), tmp_path / "nowhere.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(
        WeightLoadingError, match=r"junk\.pt: not a PyTorch weights file: a text file \(it starts 'not a torch file'\)"
    ):
        load_backbone_weights(create_backbone("tiny_cnn"), junk)


@pytest.mark.parametrize(
    ("content", "what"),
    [
        (b"resnet18 weights: see https://example.org\n", r"a text file \(it starts 'resnet18 weights: see https"),
        (b"", "an empty file"),
        (b"\x93NUMPY\x01\x00v\x00{'descr': '<f8'}", r"a NumPy \.npy array"),
        (b"\x89HDF\r\n\x1a\n" + bytes(40), r"an HDF5 file \(Keras / TensorFlow \.h5 weights\?\)"),
        (gzip.compress(b"weights", mtime=0), r"a gzip archive \(unpack it first\)"),  # mtime 0: ids stay alike
        (b"PK\x03\x04" + bytes(40), r"a zip archive, truncated or not written by torch\.save \(RuntimeError: "),
        (bytes(range(256)), r"in an unknown format \(UnpicklingError: Unsupported operand 0\)"),
    ],
    ids=["text", "empty", "numpy", "hdf5", "gzip", "zip", "unknown"],  # pytest-xdist workers must collect alike
)
def test_a_file_that_is_no_weights_file_says_what_it_is_not_how_to_load_it_unsafely(tmp_path, content, what):
    """torch's message advised re-running with weights_only=False (running the file's code) and filing an
    issue, for a text file given as weights."""
    path = tmp_path / "w.pth"
    path.write_bytes(content)
    with pytest.raises(WeightLoadingError) as caught:
        load_backbone_weights(create_backbone("tiny_cnn"), path)
    message = str(caught.value)
    assert message.startswith(f"{path}: not a PyTorch weights file: "), message
    assert re.search(what, message), message
    assert message.endswith("a state dict saved with torch.save (.pth / .pt / .ckpt) or a .safetensors file is read")
    assert "weights_only" not in message and "file an issue" not in message and len(message) - len(str(path)) < 300


def test_a_whole_pickled_model_is_told_to_save_its_state_dict(tmp_path):
    path = tmp_path / "model.pth"
    torch.save(create_backbone("tiny_cnn"), path)  # the module, not its state_dict()
    with pytest.raises(WeightLoadingError) as caught:
        load_backbone_weights(create_backbone("tiny_cnn"), path)
    message = str(caught.value)
    assert message.startswith(f"{path}: holds pickled Python objects (shared.backbones."), message
    assert "not a state dict of tensors: a whole pickled model? Save model.state_dict() instead" in message
    assert "weights_only" not in message and "add_safe_globals" not in message


def test_a_training_scripts_checkpoint_loads_from_its_model_entry(tmp_path):
    """{"model": state_dict, "optimizer": ..., "epoch": ...} is the common training-script layout: no prefix
    reached into it."""
    net = create_backbone("tiny_cnn", in_channels=1)
    torch.save({"model": net.state_dict(), "optimizer": {"lr": 0.1}, "epoch": 7}, tmp_path / "script.pt")
    other = create_backbone("tiny_cnn", in_channels=1)
    assert load_backbone_weights(other, tmp_path / "script.pt", strict=True).clean
    assert all(torch.equal(other.state_dict()[k], v) for k, v in net.state_dict().items())


def test_the_strict_error_counts_what_would_have_loaded(tmp_path):
    state = create_backbone("tiny_cnn", in_channels=1).state_dict()
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(
        WeightLoadingError, match=r"36 tensors loaded; 1 unexpected in the file: extra.weight"
    ):
        load_backbone_weights(create_backbone("tiny_cnn", in_channels=1), tmp_path / "w.pt", strict=True)


def test_googlenet_from_a_torchvision_file_sees_its_input_as_torchvision_does(tmp_path):
    """torchvision turns transform_input on whenever it loads its ImageNet GoogLeNet; the backbone had it off,
    so the same weights gave features 124 % off torchvision's."""
    tv = torchvision.models.googlenet(
        weights=None, aux_logits=False, init_weights=True, transform_input=True
    ).eval()
    torch.save(tv.state_dict(), tmp_path / "googlenet.pth")
    with pytest.warns(
        UserWarning, match=r"googlenet\.pth: torchvision's GoogLeNet weights expect transform_input"
    ):
        load_backbone_weights(create_backbone("googlenet", in_channels=3), tmp_path / "googlenet.pth")
    # an option (backbone_kwargs), so a checkpoint keeps it: the network's saved init_args hold it
    from shared.classification.model import ImageClassifier
    from shared.classification.task import ClassificationTask

    task = ClassificationTask(
        ImageClassifier(2, "googlenet", backbone_kwargs={"transform_input": True}), ["a", "b"]
    )
    assert task.hparams["network"]["init_args"]["backbone_kwargs"] == {"transform_input": True}
    assert task.model.backbone.net.transform_input
    net = create_backbone("googlenet", in_channels=3, transform_input=True).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        load_backbone_weights(net, tmp_path / "googlenet.pth")
    x = torch.randn(1, 3, 64, 64)
    with (
        torch.no_grad()
    ):  # the first map (deeper ones of random weights shrink towards 0 and would all agree)
        expected, untransformed = tv.conv1(tv._transform_input(x)), tv.conv1(x)
        first = net(x)[0]
    assert torch.allclose(first, expected, atol=1e-5) and not torch.allclose(first, untransformed, atol=1e-2)
    # a grey GoogLeNet cannot apply it (it scales R, G and B apart): said, with transform_input asked or not
    for asked in (True, False):
        with pytest.warns(UserWarning, match=r"works on RGB only: with 1 input channel\(s\) it is left out"):
            load_backbone_weights(create_backbone("googlenet", in_channels=1, transform_input=asked), tmp_path / "googlenet.pth")
    assert not create_backbone("googlenet", in_channels=1).net.transform_input  # defined for RGB only
    torch.save(create_backbone("googlenet").state_dict(), tmp_path / "suite.pt")  # the suite's own keys
    other = create_backbone("googlenet")
    load_backbone_weights(other, tmp_path / "suite.pt")
    assert not other.net.transform_input  # a network trained without it keeps it off


def test_a_vit_file_of_another_image_size_loads_with_its_positions_resampled(tmp_path):
    """Its position embedding differs in shape only because the grid does: refused as another network's file
    (or left random) before; torchvision's interpolate_embeddings resamples it."""
    small = create_backbone("vit", image_size=32, **TINY_VIT)
    torch.save(small.state_dict(), tmp_path / "vit32.pt")
    large = create_backbone("vit", image_size=64, **TINY_VIT)
    report = load_backbone_weights(large, tmp_path / "vit32.pt", strict=True)
    assert report.adapted == ["net.encoder.pos_embedding"] and report.clean
    pos = large.net.encoder.pos_embedding
    assert pos.shape == (1, 1 + 4 * 4, 32) and torch.equal(pos[:, :1], small.net.encoder.pos_embedding[:, :1])


def test_a_file_of_which_nothing_fits_is_an_error_that_guesses_the_prefix(tmp_path):
    """A Lightning checkpoint read without its prefix, or with the prefix missing its final dot, loaded 0 tensors
    and returned normally: the run went on with the random backbone."""
    net = create_backbone("tiny_cnn", in_channels=1)
    torch.save(
        {"state_dict": {f"model.backbone.{k}": v for k, v in net.state_dict().items()}}, tmp_path / "run.ckpt"
    )
    other = create_backbone("tiny_cnn", in_channels=1)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    for prefix in ("", "model.backbone"):
        with pytest.raises(
            NothingLoadedError, match=r"no tensor of the file fits .*with prefix='model\.backbone\.'"
        ) as err:
            load_backbone_weights(other, tmp_path / "run.ckpt", prefix=prefix)
        assert err.value.report.loaded == [] and isinstance(err.value, WeightLoadingError)
    assert all(torch.equal(v, before[k]) for k, v in other.state_dict().items())
    assert load_backbone_weights(other, tmp_path / "run.ckpt", prefix="model.backbone.").clean


@pytest.mark.parametrize("tokens", [1 + 4 * 4 + 1, 4 * 4], ids=["distillation token", "no class token"])
def test_a_vit_position_embedding_that_is_no_class_token_and_square_grid_is_a_mismatch(tmp_path, tokens):
    """A DeiT file (class + distillation token) or one without a class token crashed the loader in torchvision
    ("seq_length is not a perfect square"), naming no file, with strict=False too."""
    state = create_backbone("vit", image_size=64, **TINY_VIT).state_dict()
    state["net.encoder.pos_embedding"] = torch.zeros(1, tokens, 32)
    torch.save(state, tmp_path / "deit.pt")
    report = load_backbone_weights(create_backbone("vit", image_size=32, **TINY_VIT), tmp_path / "deit.pt")
    assert [m.split(" ")[0] for m in report.shape_mismatch] == ["net.encoder.pos_embedding"] and report.loaded


def test_a_frozen_vit_keeps_its_feature_pyramid_training():
    """The pyramid on a torchvision ViT is in no pretrained file: frozen with the ViT, it stayed random."""
    from shared.backbones import FreezableBackbone

    class Network(FreezableBackbone, torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = create_backbone("vit", image_size=32, **TINY_VIT)

    network = Network()
    network.set_backbone_frozen(True)
    network.train()
    pyramid = [m for adapter in network.backbone.adapter_modules() for m in adapter.modules()]
    assert all(p.requires_grad for m in pyramid for p in m.parameters()) and all(m.training for m in pyramid)
    assert not any(p.requires_grad for p in network.backbone.net.parameters())
    assert not network.backbone.net.training
    network.eval()
    assert not any(m.training for m in pyramid)


def test_a_wrong_prefix_is_nothing_loaded_naming_the_prefix_that_fits(tmp_path):
    """`prefix="backbone."` for a checkpoint's `model.backbone.` raised a bare WeightLoadingError with no hint (the
    README promises NothingLoadedError naming the prefix that would fit)."""
    net = create_backbone("tiny_cnn", in_channels=1)
    torch.save({"state_dict": {f"model.backbone.{k}": v for k, v in net.state_dict().items()}}, tmp_path / "r.ckpt")
    with pytest.raises(NothingLoadedError, match=r"no key starts with the prefix 'backbone\.': 0 tensors loaded; "
                       r"with prefix='model\.backbone\.' .* 36 tensors would load") as err:  # fmt: skip
        load_backbone_weights(create_backbone("tiny_cnn", in_channels=1), tmp_path / "r.ckpt", prefix="backbone.")
    assert err.value.report.loaded == []


def test_a_shallower_networks_file_is_a_partial_load_but_an_encoders_file_in_a_unet_is_not(tmp_path):
    """A ResNet-18 file in a ResNet-34 reported '80 missing' and left its extra blocks random, with no warning
    (and the CLI trained on). Here a TinyCNN file without its last stage's second convolution: the tensors
    missing inside a stage the file filled are warned of; a U-Net's decoder, which an encoder's file has nothing
    for, is not."""
    full = create_backbone("tiny_cnn", in_channels=1).state_dict()
    shallow = {k: v for k, v in full.items() if not k.startswith(("stages.2.3.", "stages.2.4."))}
    torch.save(shallow, tmp_path / "shallow.pth")
    with pytest.warns(PartialLoadWarning, match=r"5 of TinyCNN's tensors are missing among those it filled "
                      r"\(stages\.2\.3\.weight, stages\.2\.4\.weight, stages\.2\.4\.bias"):  # fmt: skip
        report = load_backbone_weights(create_backbone("tiny_cnn", in_channels=1), tmp_path / "shallow.pth")
    assert report.missing_in_part == report.missing and len(report.missing) == 5
    torch.save({f"encoder.{k}": v for k, v in full.items()}, tmp_path / "encoder.pth")
    unet = create_backbone("unet", in_channels=1, encoder="tiny_cnn")
    with warnings.catch_warnings():
        warnings.simplefilter("error", PartialLoadWarning)
        report = load_backbone_weights(unet, tmp_path / "encoder.pth")
    assert report.missing and all(k.startswith("decoder.") for k in report.missing) and not report.missing_in_part
