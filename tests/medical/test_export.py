"""ONNX export of the medical segmenters: onnxruntime matches PyTorch (atol 1e-4) at other sizes, batches and
sample counts than the export used; the CLI writes the sidecar and leaves nothing behind when it fails."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from domains.medical.export import HPUNetDecoder, _preprocessing, export_medical, main
from domains.medical.task import MedicalSegmentationTask
from shared.export import run_onnx
from shared.task import CheckpointMismatchError
from tests.helpers import medical_task

ATOL = 1e-4
TINY = {
    "unet": {"channels": [8, 16]},
    "prob_unet": {"channels": [8, 16], "latent_dim": 3},
    "hpu_net": {"channels": [8, 8, 8, 8, 8], "latent_channels": [1, 2, 1, 1], "blocks_per_level": 1},
}


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_task(model: str) -> MedicalSegmentationTask:
    torch.manual_seed(0)
    task = medical_task(model=model, model_kwargs=TINY[model]).eval()
    with torch.no_grad():  # the latent heads start at zero: give the prior a real mean and spread to check
        for name, param in task.model.named_parameters():
            if "head" in name:
                param.normal_(0, 0.3)
    return task


def close(got: np.ndarray, expected: torch.Tensor) -> None:
    assert got.shape == tuple(expected.shape)
    np.testing.assert_allclose(got, expected.numpy(), atol=ATOL, rtol=0)


def test_unet_graph_matches_pytorch_at_another_size_and_batch(tmp_path):
    task = tiny_task("unet")
    sidecar = export_medical(task, tmp_path, size=(32, 32))
    image = torch.rand(3, 1, 48, 40)
    (logits,) = run_onnx(tmp_path / "unet.onnx", {"image": image.numpy()})
    with torch.no_grad():
        close(logits, task.model(image))
    assert sidecar["tolerance"]["max_abs_diff"]["unet.onnx"]["logits"] <= ATOL


def test_prob_unet_feature_net_and_fcomb_sample_like_the_model(tmp_path):
    task = tiny_task("prob_unet")
    net = task.model
    export_medical(task, tmp_path, size=(32, 32))
    image = torch.rand(2, 1, 48, 40)
    features, mu, log_sigma = run_onnx(tmp_path / "prob_unet_features.onnx", {"image": image.numpy()})
    with torch.no_grad():
        prior = net.prior(image)
        close(features, net.features(image))
        close(mu, prior.mean)
        close(np.exp(log_sigma), prior.stddev)
        # 5 samples (the export used 3): the caller draws z from the prior, f_comb runs once for all of them
        eps = torch.randn(2, 5, 3)
        z = torch.from_numpy(mu)[:, None] + torch.from_numpy(np.exp(log_sigma))[:, None] * eps
        (logits,) = run_onnx(tmp_path / "prob_unet_fcomb.onnx", {"features": features, "z": z.numpy()})
        close(logits, net.fcomb(net.features(image), z))
        assert logits.shape == (2, 5, 48, 40)
        # eps = 0 is the model's best guess
        (best,) = run_onnx(tmp_path / "prob_unet_fcomb.onnx", {"features": features, "z": mu[:, None]})
        close(best, net(image))


def test_hpu_net_encoder_and_decoder_reproduce_the_model(tmp_path):
    task = tiny_task("hpu_net")
    net = task.model
    sidecar = export_medical(task, tmp_path, size=(32, 32))
    assert sidecar["graphs"]["hpu_net_decoder.onnx"]["outputs"] == ["logits"]
    image = torch.rand(2, 1, 48, 40)
    encoded = run_onnx(tmp_path / "hpu_net_encoder.onnx", {"image": image.numpy()})
    with torch.no_grad():
        for got, expected in zip(encoded, net.prior.encode(image), strict=True):
            close(got, expected)
        k = len(encoded)
        shapes = [(2, c, *encoded[k - 1 - s].shape[-2:]) for s, c in enumerate(net.prior.latent_channels)]
        feeds = {f"enc{i}": e for i, e in enumerate(encoded)}
        zeros = {f"eps{s}": np.zeros(shape, np.float32) for s, shape in enumerate(shapes)}
        (mean,) = run_onnx(tmp_path / "hpu_net_decoder.onnx", {**feeds, **zeros})
        close(mean, net(image))  # every scale at its prior mean = the model's forward
        noise = {f"eps{s}": torch.randn(shape) for s, shape in enumerate(shapes)}
        (sample,) = run_onnx(
            tmp_path / "hpu_net_decoder.onnx", {**feeds, **{k: v.numpy() for k, v in noise.items()}}
        )
        maps = [torch.from_numpy(e) for e in encoded]
        close(sample, HPUNetDecoder(net)(*maps, *noise.values()))
        # and that is the model's own decoder given the latents z = mu + sigma * eps, scale by scale
        zs = [torch.zeros(shape) for shape in shapes]
        for level in range(len(shapes)):  # a scale's prior depends only on the coarser scales' latents
            _, dists, _ = net.prior.decode_latents(maps, z_given=zs)
            zs[level] = dists[level].mean + dists[level].stddev * noise[f"eps{level}"]
        decoded, _, _ = net.prior.decode_latents(maps, z_given=zs)
        close(sample, net._likelihood(decoded, maps))
        assert not np.allclose(sample, mean, atol=1e-3)  # the noise did something


@pytest.fixture(scope="module")
def medical_ckpt(tmp_path_factory) -> Path:
    from domains.medical.__main__ import main as cli
    from domains.medical.synthetic import generate_lidc_png

    root = tmp_path_factory.mktemp("export_ckpt")
    data = generate_lidc_png(root / "lidc", n_patients=8, images_per_patient=1, size=32)
    cli(
        [
            "fit",
            "--model.network",
            json.dumps(
                {"class_path": "domains.medical.models.ProbabilisticUNet", "init_args": TINY["prob_unet"]}
            ),
            "--data.data_path",
            str(data),
            "--data.crop_size",
            "24",
            "--data.batch_size",
            "2",
            "--data.num_workers",
            "0",
            "--trainer.max_steps",
            "1",
            "--trainer.limit_val_batches",
            "1",
            "--trainer.enable_progress_bar",
            "false",
            "--checkpoint.dirpath",
            str(root / "ckpt"),
            "--trainer.default_root_dir",
            str(root),
            "--trainer.logger",
            json.dumps(
                {"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": str(root)}}
            ),
        ]
    )
    return root / "ckpt" / "last.ckpt"


@pytest.fixture(scope="module")
def exported(medical_ckpt, tmp_path_factory) -> Path:
    """The CLI's export of ``medical_ckpt`` with its default options, read (not changed) by the tests below."""
    out = tmp_path_factory.mktemp("export_cli") / "onnx"
    main(["--ckpt", str(medical_ckpt), "--out", str(out)])
    return out


def test_cli_writes_graphs_and_sidecar_with_the_training_crop_size(medical_ckpt, exported):
    out = exported
    assert sorted(p.name for p in out.iterdir()) == [
        "prob_unet.json",
        "prob_unet_fcomb.onnx",
        "prob_unet_features.onnx",
    ]
    sidecar = json.loads((out / "prob_unet.json").read_text())
    assert sidecar["input_size"] == [24, 24] and sidecar["in_channels"] == 1  # crop_size of the run
    # kept with the network (the CLI links data.crop_size to model.input_size), not read from the data module
    checkpoint = torch.load(medical_ckpt, weights_only=True)
    assert checkpoint["hyper_parameters"]["input_size"] == 24
    assert MedicalSegmentationTask.load_checked(medical_ckpt).model.input_size == (24, 24)
    assert sidecar["checked_size"] == [24, 24]
    assert sidecar["classes"] == ["background", "lesion"] and "sigmoid" in sidecar["score"]
    assert sidecar["graphs"]["prob_unet_features.onnx"]["outputs"] == [
        "features",
        "prior_mu",
        "prior_log_sigma",
    ]
    assert 0 <= max(sidecar["tolerance"]["max_abs_diff"]["prob_unet_fcomb.onnx"].values()) <= ATOL


def test_sidecar_says_how_the_training_data_scaled_and_sized_inputs(exported, tmp_path):
    """The sidecar said only input_range [0, 1] and the input size: not how files became that range. It now
    says what the checkpoint's data format did (its data module settings, dataset_kwargs included)."""
    sidecar = json.loads((exported / "prob_unet.json").read_text())
    assert sidecar["preprocessing"] == {
        "data_format": "lidc_png",
        "intensity": "grey PNG: 8-bit / 255; 16-bit: each image's own min..max stretched to 0..1",
        "geometry": "training: centre crop to 24x24 px, no resize; predict: the whole image, padded at the "
        "bottom and right (edge replicated) to a multiple of 2 px, outputs cut back",
    }
    data = {"data_format": "decathlon", "crop_size": 64, "dataset_kwargs": {"modality_index": 1}}
    decathlon = export_medical(tiny_task("unet"), tmp_path / "msd", size=(16, 16), data=data)["preprocessing"]
    assert (
        "NIfTI channel 1; per volume, its 0.5 .. 99.5 percentile range mapped linearly to 0..1"
        in decathlon["intensity"]
    )
    assert (
        "longest side 64 px" in decathlon["geometry"]
        and "zero-padded symmetrically to 64x64" in decathlon["geometry"]
    )
    kwargs = {"percentiles": [1, 99], "crop_size": 96}  # dataset_kwargs win over the data module's crop_size
    decathlon = _preprocessing({**data, "dataset_kwargs": kwargs}, 4)
    assert "its 1 .. 99 percentile range" in decathlon["intensity"] and "96x96" in decathlon["geometry"]
    pickle = _preprocessing({"data_format": "lidc_pickle", "crop_size": 128}, 4)
    assert pickle["intensity"] == "the pickle's float images, in 0..1 as stored"
    assert pickle["geometry"].startswith("training: centre crop to 128x128 px")
    assert _preprocessing(None, 4)["data_format"] is None


def test_cli_failures_leave_nothing_behind(medical_ckpt, tmp_path, monkeypatch):
    import shared.export

    out = tmp_path / "onnx"
    earlier = tmp_path / "earlier"  # a good export, then a failed one into the same folder
    (earlier / ".export-staging").mkdir(parents=True)  # what a killed export leaves: cleared by the next
    (earlier / ".export-staging" / "prob_unet_features.onnx").write_text("half")
    main(["--ckpt", str(medical_ckpt), "--out", str(earlier)])
    before = {p.name: p.read_bytes() for p in earlier.iterdir()}
    assert sorted(before) == ["prob_unet.json", "prob_unet_fcomb.onnx", "prob_unet_features.onnx"]
    real = shared.export.onnx_session

    class OffOnFcomb:
        """A runtime that is off by 0.01 on the second graph: the first graph, already written, is removed again."""

        def __init__(self, path):
            self.path, self.session = str(path), real(path)

        def run(self, names, feeds):
            return [o + 0.01 if "fcomb" in self.path else o for o in self.session.run(names, feeds)]

    monkeypatch.setattr(shared.export, "onnx_session", OffOnFcomb)
    with pytest.raises(ValueError, match=re.escape(str(out / "prob_unet_fcomb.onnx")) + ": onnxruntime differs from PyTorch in logits"):
        main(["--ckpt", str(medical_ckpt), "--out", str(out)])  # its final name, not the staged copy's
    assert not out.exists()  # the folder it made is gone too
    with pytest.raises(ValueError, match=r"prob_unet_fcomb\.onnx: onnxruntime differs"):
        main(["--ckpt", str(medical_ckpt), "--out", str(earlier)])
    # the earlier export whole: its graphs had been replaced by the new ones, then deleted beside its sidecar
    assert {p.name: p.read_bytes() for p in earlier.iterdir()} == before
    # options torch would take in and fail on deep in the graph (a 1,000-line dump) are usage errors
    for bad in (["--opset", "99"], ["--opset", "21"], ["--opset", "7"], ["--size", "0", "0"], ["--atol", "-1"], ["--rtol", "-1"]):
        with pytest.raises(SystemExit) as exit_:
            main(["--ckpt", str(medical_ckpt), "--out", str(out), *bad])
        assert exit_.value.code == 2 and not out.exists(), bad
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(NotADirectoryError, match=r"--out .*a_file: is a file; give a folder"):
        main(["--ckpt", str(medical_ckpt), "--out", str(tmp_path / "a_file")])
    other = tmp_path / "other.ckpt"
    checkpoint = torch.load(medical_ckpt, weights_only=True)
    checkpoint["suite_task"] = {"task": "domains.driving.detection.task.DetectionTask", "model": "resnet18"}
    torch.save(checkpoint, other)
    with pytest.raises(
        CheckpointMismatchError, match=r"holds a domains\.driving\.detection\.task\.DetectionTask"
    ):
        main(["--ckpt", str(other), "--out", str(tmp_path / "x")])
    with pytest.raises(FileNotFoundError, match=r"missing\.ckpt"):
        main(["--ckpt", str(tmp_path / "missing.ckpt"), "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()


def test_size_option_sizes_the_check_not_the_recorded_training_size(medical_ckpt, tmp_path):
    """--size only sizes the random inputs of the check: the sidecar's input_size stays the training crop
    (it had recorded --size, telling a deployer the network was trained at a size it never saw)."""
    out = tmp_path / "onnx"
    main(["--ckpt", str(medical_ckpt), "--out", str(out), "--size", "32", "48"])
    sidecar = json.loads((out / "prob_unet.json").read_text())
    assert sidecar["input_size"] == [24, 24]
    assert sidecar["checked_size"] == [32, 48]
    assert sidecar["graphs"]["prob_unet_features.onnx"]["inputs"]["image"][2:] == [32, 48]
    assert sidecar["tolerance"]["measured_on"] == "random inputs at checked_size"
