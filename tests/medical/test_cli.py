"""``python -m domains.medical`` end to end on tiny generated data: every config fits, predict writes."""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from pathlib import Path

import cv2
import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from pytorch_lightning.callbacks import ModelCheckpoint
from torch.utils.data import default_collate

from domains.medical.__main__ import main
from domains.medical.data import DecathlonSliceDataset
from domains.medical.predict import MedicalPredictionWriter
from domains.medical.task import MedicalSegmentationTask
from shared.cli import instantiate_from_config
from tests.helpers import tiny_medical_args

CONFIGS = Path(__file__).resolve().parents[2] / "domains" / "medical" / "configs"

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_args(data: Path, config: str) -> list[str]:
    network = yaml.safe_load((CONFIGS / f"{config}.yaml").read_text())["model"]["network"]["class_path"]
    model = {"UNetSegmenter": "unet", "ProbabilisticUNet": "prob_unet", "HierarchicalProbUNet": "hpu_net"}[
        network.rsplit(".", 1)[-1]
    ]
    return tiny_medical_args(data, CONFIGS / f"{config}.yaml", model, 4, "--data.max_items", "8")


@pytest.mark.parametrize("config", ["unet", "prob_unet", "hpu_net", "quick"])
def test_fit_fast_dev_run_every_config(config, lidc, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = main(["fit", *tiny_args(lidc, config), "--trainer.fast_dev_run", "1"])
    assert cli.trainer.state.finished and cli.trainer.global_step == 1
    metrics = cli.trainer.callback_metrics
    for name in ("val/ged", "val/hungarian_iou", "val/diversity", "val/dice", "val/dice_majority", "val/ece"):
        assert torch.isfinite(metrics[name]), name
    # their values by hand: tests/medical/test_task_metrics.py
    if config == "unet":  # deterministic: its samples are one prediction repeated
        assert float(metrics["val/diversity"]) == 0.0
    assert float(metrics["val/num_samples"]) == 4
    assert torch.isfinite(metrics["train/loss"])


@pytest.fixture(scope="module")
def fitted(lidc, tmp_path_factory) -> Path:
    """A working folder where unet.yaml then quick.yaml were fitted one step each (their checkpoints read by
    the two tests below; the quick one's checkpoint is only read)."""
    root = tmp_path_factory.mktemp("fitted")
    step = ["--trainer.max_steps", "1", "--trainer.limit_val_batches", "2"]
    with contextlib.chdir(root):
        for config in ("unet", "quick"):
            main(["fit", *tiny_args(lidc, config), *step])
    return root


def test_each_model_config_checkpoints_into_its_own_folder_and_another_network_is_named(
    lidc, fitted, monkeypatch, caplog
):
    """unet.yaml then quick.yaml used to share one folder, so `test -c unet.yaml --ckpt_path last` took the
    Prob. U-Net's newer file and reported its figures as the U-Net's."""
    tmp_path = fitted
    monkeypatch.chdir(tmp_path)
    for config in ("unet", "quick"):
        assert (tmp_path / f"lightning_logs/medical/{config}/checkpoints/last.ckpt").is_file()
    unet_last = "lightning_logs/medical/unet/checkpoints/last.ckpt"
    test = ["--trainer.limit_test_batches", "1"]
    with caplog.at_level(logging.INFO), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli = main(["test", *tiny_args(lidc, "unet"), *test, "--ckpt_path", "last"])
    assert f"--ckpt_path last: {unet_last}" in caplog.text
    # its own network, recorded where it is defined (models.unet.UNetSegmenter): no warning
    assert not [w for w in caught if "holds another network" in str(w.message)]
    assert type(cli.model.model).__name__ == "UNetSegmenter"
    quick_last = str(tmp_path / "lightning_logs/medical/quick/checkpoints/last.ckpt")
    with pytest.warns(UserWarning, match=r"ProbabilisticUNet, not the config's domains\.medical\.models\.UNetSegmenter"):
        cli = main(["test", *tiny_args(lidc, "unet"), *test, "--ckpt_path", quick_last])
    assert type(cli.model.model).__name__ == "ProbabilisticUNet"  # Lightning builds the checkpoint's network


def test_configs_name_their_model():
    expected = {
        "unet": "UNetSegmenter",
        "prob_unet": "ProbabilisticUNet",
        "hpu_net": "HierarchicalProbUNet",
        "quick": "ProbabilisticUNet",
    }
    for config, network in expected.items():
        cfg = yaml.safe_load((CONFIGS / f"{config}.yaml").read_text())
        assert cfg["model"]["network"]["class_path"] == f"domains.medical.models.{network}"
        with torch.device("meta"):  # the sizes build; no memory to fill with the full-size initial weights
            task = instantiate_from_config(MedicalSegmentationTask, cfg["model"])
        assert type(task.model).__name__ == network and task.hparams.network["class_path"].endswith(network)


def test_fit_checkpoint_then_predict_writes_samples_mean_and_uncertainty(lidc, fitted, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = tiny_args(lidc, "quick")
    ckpt = fitted / "lightning_logs/medical/quick/checkpoints/last.ckpt"  # fit: the module fixture
    assert ckpt.is_file()
    out = tmp_path / "pred"
    cli = main(
        [
            "predict",
            *args,
            "--ckpt_path",
            str(ckpt),
            "--model.predict_dir",
            str(out),
            "--model.predict_uncertainty",
            "variance",
        ]
    )
    test_ids = cli.datamodule.dataset("test").base.ids
    assert len(test_ids) >= 1
    for item_id in test_ids:
        folder = out / item_id
        names = sorted(p.name for p in folder.iterdir())
        assert names == [
            "mean_prob.png",
            "sample_00.png",
            "sample_01.png",
            "sample_02.png",
            "sample_03.png",
            "uncertainty.png",
        ], names
        sample = cv2.imread(str(folder / "sample_00.png"), cv2.IMREAD_UNCHANGED)
        assert sample.shape == (32, 32) and set(np.unique(sample)) <= {0, 255}
        assert cv2.imread(str(folder / "mean_prob.png"), cv2.IMREAD_UNCHANGED).shape == (32, 32)
    assert cli.trainer.predict_loop.predictions == []  # written as it goes, not kept in memory

    # test and predict under bf16 autocast (CPU here; the same path a GPU takes): metrics and files in float32
    bf16 = ["--ckpt_path", str(ckpt), "--trainer.precision", "bf16-mixed"]
    cli = main(["test", *args, *bf16])
    for name in ("test/ged", "test/hungarian_iou", "test/dice", "test/ece"):
        assert torch.isfinite(cli.trainer.callback_metrics[name]), name
    main(["predict", *args, *bf16, "--model.predict_dir", str(tmp_path / "pred_bf16")])
    mean = cv2.imread(str(tmp_path / "pred_bf16" / test_ids[0] / "mean_prob.png"), cv2.IMREAD_UNCHANGED)
    assert mean.shape == (32, 32) and mean.dtype == np.uint8


def _decathlon(root: Path, shape=(24, 20, 3)) -> tuple[np.ndarray, np.ndarray]:
    """One tiny Decathlon case: a labelled rectangle on slice 1, an oblique affine."""
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    image = rng.random(shape).astype(np.float32)
    label = np.zeros(shape, np.uint8)
    label[5:15, 3:9, 1] = 1
    label[2:4, 12:18, 1] = 1
    affine = np.array([[0.0, -0.8, 0.0, 10.0], [0.7, 0.0, 0.0, -5.0], [0.0, 0.0, 2.5, 30.0], [0, 0, 0, 1]])
    nib.save(nib.Nifti1Image(image, affine), root / "imagesTr" / "case_0.nii.gz")
    nib.save(nib.Nifti1Image(label, affine), root / "labelsTr" / "case_0.nii.gz")
    meta = {
        "training": [{"image": "./imagesTr/case_0.nii.gz", "label": "./labelsTr/case_0.nii.gz"}],
        "modality": {"0": "CT"},
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return label, affine


@pytest.mark.parametrize("shape", [(24, 20, 3), (30, 20, 3)])
def test_nifti_predictions_land_on_the_source_slice(tmp_path, shape):
    """Write a slice's own label back: it must match the source volume's voxels at the source slice."""
    label, affine = _decathlon(tmp_path / "msd", shape)
    dataset = DecathlonSliceDataset(tmp_path / "msd", "all", crop_size=24)
    index = next(i for i, (_, z) in enumerate(dataset.slices) if z == 1)
    item = dataset[index]
    mask = item["masks"][0]  # (24, 24) on the model's grid
    prediction = {
        "id": [item["id"]],
        "samples": torch.stack([mask, torch.zeros_like(mask)])[None].bool(),
        "mean": mask[None].float(),
        "uncertainty": torch.zeros(1, 24, 24),
        "source": default_collate([item])["source"],
    }
    writer = MedicalPredictionWriter(str(tmp_path / "out"))
    writer.write_on_batch_end(None, None, prediction, None, None, 0, 0)
    folder = tmp_path / "out" / item["id"]
    assert (folder / "mean_prob.png").is_file()
    mean_img = nib.load(folder / "mean_prob.nii.gz")
    samples_img = nib.load(folder / "samples.nii.gz")
    assert mean_img.shape == (shape[0], shape[1], 1) and samples_img.shape == (shape[0], shape[1], 1, 2)
    truth = label[:, :, 1].astype(bool)
    written = np.asarray(samples_img.dataobj)[:, :, 0, 0].astype(bool)
    if shape == (24, 20, 3):  # no resize, only padding: exact
        np.testing.assert_array_equal(written, truth)
        np.testing.assert_allclose(mean_img.get_fdata()[:, :, 0], truth.astype(float))
    else:  # (30, 20) -> (24, 16): read back from the pixel whose label was read nearest to each voxel
        assert (
            written >= truth
        ).all()  # every labelled voxel comes back; skipped rows/columns go to a neighbour
        assert (written & truth).sum() / (written | truth).sum() > 0.75
    assert not np.asarray(samples_img.dataobj)[:, :, 0, 1].any()
    voxel = np.array([3, 4, 0])  # voxel (i, j, 0) of the output is voxel (i, j, 1) of the source volume
    np.testing.assert_allclose(
        nib.affines.apply_affine(mean_img.affine, voxel), nib.affines.apply_affine(affine, voxel + [0, 0, 1])
    )


def test_validation_logs_kl_per_scale_and_warns_once_when_a_scale_collapses(lidc, tmp_path, monkeypatch):
    """The HPU-Net's per-scale KL is logged in nats per image; a scale whose KL falls below collapse_kl is
    named once, with the step (here latent scale 1 is forced to zero KL)."""
    from domains.medical.models.hpu_net import HierarchicalProbUNet

    original = HierarchicalProbUNet._loss  # under ``loss`` and validation's ``loss_and_sample_logits``

    def collapsed_scale_1(self, images, masks):
        loss, terms, encoded = original(self, images, masks)
        return loss, {**terms, "kl_scale1": terms["kl_scale1"] * 0.0}, encoded

    monkeypatch.setattr(HierarchicalProbUNet, "_loss", collapsed_scale_1)
    monkeypatch.chdir(tmp_path)
    # One training batch per epoch from the data itself (2 images, batch 2), not from limit_train_batches=1:
    # how "1" is typed there (int: one batch, float: 100 %) was seen to differ between runs of the suite.
    args = [*tiny_args(lidc, "hpu_net"), "--data.max_items", "2", "--trainer.max_epochs", "2"]
    args += [
        "--trainer.logger",
        "false",
        "--trainer.num_sanity_val_steps",
        "0",
        "--model.collapse_grace_steps",  # the default 200 would keep this 2-step fit from judging
        "1",
    ]
    with pytest.warns(
        UserWarning, match=r"posterior collapse: latent scale 1 \(kl_scale1\).*global step 1\b"
    ) as seen:
        cli = main(["fit", *args])
    assert sum("posterior collapse" in str(w.message) for w in seen) == 1  # once, not at every validation
    metrics = cli.trainer.callback_metrics
    assert float(metrics["val/kl_scale1_nats"]) == 0.0 and float(metrics["val/kl_scale0_nats"]) > 0.01
    assert "val/diversity" in metrics
    # validate of that checkpoint: the step it was trained to (a new trainer's own step is 0)
    with pytest.warns(UserWarning, match=r"kl_scale1\).* in the checkpoint of global step 2\b"):
        main(["validate", *args, "--ckpt_path", "last"])


def test_compile_loss_compiles_the_loss_once_and_stays_out_of_checkpoints(lidc, tmp_path, monkeypatch):
    """``--model.compile_loss true`` trains through ``torch.compile(network.loss, dynamic=False)``, built once
    for the first batch's shapes; the epoch's short last batch and validation run the eager loss, and the
    checkpoint does not carry the switch (a resumed or tested model decides anew). ``torch.compile`` is
    replaced by a recorder: a real compilation takes minutes (slow test below)."""
    monkeypatch.chdir(tmp_path)
    compiled, calls = [], []

    def fake_compile(fn, dynamic=None):
        assert dynamic is False
        compiled.append(fn)

        def run(*args, **kwargs):
            calls.append(args[0].shape)
            return fn(*args, **kwargs)

        return run

    monkeypatch.setattr(torch, "compile", fake_compile)
    ckpt = tmp_path / "ckpt"
    args = [*tiny_args(lidc, "prob_unet"), "--model.compile_loss", "true", "--checkpoint.dirpath", str(ckpt)]
    steps = ["--trainer.max_steps", "3", "--trainer.limit_val_batches", "1"]
    cli = main(["fit", *args, "--data.batch_size", "3", *steps])  # 8 training images: batches of 3, 3, 2
    task = cli.model
    assert cli.trainer.global_step == 3
    assert len(compiled) == 1 and compiled[0].__self__ is task.model and compiled[0].__name__ == "loss"
    assert [shape[0] for shape in calls] == [3, 3]  # not the batch of 2, not the validation batch
    saved = torch.load(ckpt / "last.ckpt", map_location="cpu", weights_only=False)["hyper_parameters"]
    assert "compile_loss" not in saved


def test_compile_loss_builds_for_the_largest_batch_so_far(monkeypatch):
    """A run that starts on a short batch (resumed at an epoch's end) compiles again for the first full one;
    smaller batches after that run eager."""
    from domains.medical.models import UNetSegmenter
    from tests.medical.test_models import TINY

    compiled, calls = [], []

    def fake_compile(fn, dynamic=None):
        compiled.append(fn)
        return lambda images, masks: calls.append(len(compiled)) or fn(images, masks)

    monkeypatch.setattr(torch, "compile", fake_compile)
    task = MedicalSegmentationTask(network=UNetSegmenter(**TINY["unet"]), compile_loss=True, predict_dir=None)
    for size in (2, 3, 3, 2, 3):
        images = torch.rand(size, 1, 16, 16)
        task.training_loss(images, (images > 0.5).float())
    assert len(compiled) == 2  # for the batch of 2, then for the batch of 3
    assert calls == [1, 2, 2, 2]  # the later batch of 2 ran eager


@pytest.mark.slow
@pytest.mark.parametrize("model", ["prob_unet", "hpu_net_geco"])
def test_compiled_loss_matches_the_eager_loss(model):
    """A real inductor compilation of a tiny network's loss: same value, gradients and (HPU-Net) GECO state as
    eager (with eager's random numbers: inductor draws the posterior sample from its own generator otherwise;
    GECO's in-place buffer updates must survive compilation)."""
    import torch._inductor.config as inductor_config

    from domains.medical.models import HierarchicalProbUNet, ProbabilisticUNet
    from tests.medical.test_models import TINY

    build = {
        "prob_unet": lambda: ProbabilisticUNet(**TINY["prob_unet"]),
        "hpu_net_geco": lambda: HierarchicalProbUNet(**TINY["hpu_net"], geco=True),
    }[model]
    images = torch.randn(2, 1, 16, 16)
    masks = (torch.rand(2, 1, 16, 16) < 0.3).float()
    tasks = {}
    for compile_loss in (False, True):
        torch.manual_seed(0)
        tasks[compile_loss] = MedicalSegmentationTask(
            network=build(), compile_loss=compile_loss, predict_dir=None
        )
    losses = {}
    for compile_loss, task in tasks.items():
        for step in range(2):  # GECO's moving average starts on the first step, then moves
            torch.manual_seed(step + 1)  # the same posterior sample
            with inductor_config.patch(fallback_random=True):
                losses[compile_loss], _ = task.training_loss(images, masks)
        losses[compile_loss].backward()
    torch.testing.assert_close(losses[True], losses[False], rtol=1e-4, atol=1e-4)
    for a, b in zip(tasks[False].parameters(), tasks[True].parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-3, atol=1e-4)
    for a, b in zip(tasks[False].buffers(), tasks[True].buffers()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    assert tasks[True]._compiled_loss is not None and tasks[False]._compiled_loss is None


def test_fit_without_checkpointing_keeps_no_checkpoint_callback(lidc, tmp_path, monkeypatch):
    """``--trainer.enable_checkpointing false`` drops the suite's checkpoint group (Lightning refused it)."""
    monkeypatch.chdir(tmp_path)
    no_checkpoints = ["--trainer.enable_checkpointing", "false"]
    # a real step and validation (fast_dev_run would skip saving whatever the callbacks)
    steps = ["--trainer.max_steps", "1", "--trainer.limit_val_batches", "2", "--trainer.logger", "false"]
    cli = main(["fit", *tiny_args(lidc, "unet"), *steps, *no_checkpoints])
    assert cli.trainer.state.finished and cli.trainer.global_step == 1
    assert not [c for c in cli.trainer.callbacks if isinstance(c, ModelCheckpoint)]
    assert not list(tmp_path.rglob("*.ckpt"))
