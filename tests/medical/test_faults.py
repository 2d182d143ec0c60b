"""Medical training that survives faults: hard kill + resume, NaN losses, foreign checkpoints, DDP on 2 CPUs.

All on tiny generated LIDC data (32 px, 8 patients) and tiny networks; the kill/resume and DDP tests drive
``python -m domains.medical`` in subprocesses, the others run the CLI in-process.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import pytest
import torch

from domains.medical.__main__ import main
from domains.medical.task import MedicalSegmentationTask
from shared.task import CheckpointMismatchError, NonFiniteLossError
from tests.helpers import (
    assert_one_batch_skipped,
    configs_missing,
    kill_and_resume,
    poisoned_fit_args,
    quiet_trainer,
    run_ddp_fit,
    tiny_medical_args,
)

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "domains" / "medical" / "configs"
MODELS = ["unet", "prob_unet", "hpu_net"]
# A parameter whose NaN poisons one loss term only (the prior nets enter the KL, not the reconstruction).
POISON = {
    "unet": ("model.net.head.bias", ["loss", "rec", "rec_per_pixel"]),
    "prob_unet": ("model.prior.head.bias", ["loss", "kl"]),
    "hpu_net": ("model.prior.heads.0.bias", ["loss", "kl", "kl_scale0"]),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_args(data: Path, *extra: str, model: str = "prob_unet") -> list[str]:
    quick = ("--data.augment", "false", "--trainer.limit_val_batches", "1")
    return [*tiny_medical_args(data, CONFIGS / f"{model}.yaml", model, 2, *quick), *extra]


@pytest.fixture(scope="module")
def prob_unet_ckpt(lidc, tmp_path_factory) -> Path:
    """A real one-step medical checkpoint (tiny Prob U-Net)."""
    out = tmp_path_factory.mktemp("medical_ckpt")
    with contextlib.chdir(out):  # logs land there, not in the repository
        main(["fit", *tiny_args(lidc), "--trainer.max_steps", "1", "--checkpoint.dirpath", str(out)])
    return out / "last.ckpt"


@pytest.fixture(scope="module")
def tiny_task_ckpt(tmp_path_factory) -> Path:
    """A checkpoint of another suite task (the squares task of tests/shared), saved by Lightning."""
    from tests.shared.tiny_task import SquaresDataModule, TinySegTask

    out = tmp_path_factory.mktemp("tiny_ckpt") / "tiny.ckpt"
    trainer = quiet_trainer(max_steps=1)
    trainer.fit(TinySegTask(), SquaresDataModule(n_train=4, n_val=4))
    trainer.save_checkpoint(out)
    return out


# --------------------------------------------------------------------------------------------------- resume


def test_a_resume_with_other_network_settings_takes_the_checkpoints_naming_them(lidc, tmp_path):
    """fit --ckpt_path last built the config's network: with other channels the saved weights did not fit and
    the run ended in a 48-line size-mismatch traceback. A resume continues the saved run, with its network (as
    an explicit path always did), and names the setting it did not take."""
    args = ["--checkpoint.dirpath", str(tmp_path), "--trainer.max_steps", "1"]
    with contextlib.chdir(tmp_path):
        main(["fit", *tiny_args(lidc), *args])
        wider = ["--model.network.init_args.channels", "[8, 16, 32]"]
        with pytest.warns(UserWarning, match=r"resumes the saved model with its own settings, not this command's: "
                          r"model\.network\.init_args\.channels \[8, 16, 32\] \(the checkpoint's: \[8, 16\]\)"):
            cli = main(["fit", *tiny_args(lidc), *args, *wider, "--trainer.max_steps", "2", "--ckpt_path", "last"])
    assert cli.trainer.global_step == 2 and list(cli.model.hparams.network["init_args"]["channels"]) == [8, 16]
    # a truncated last.ckpt: one error naming it, as an explicit path gets (it was a 56-line traceback)
    data = (tmp_path / "last.ckpt").read_bytes()
    (tmp_path / "last.ckpt").write_bytes(data[: len(data) // 2])
    with contextlib.chdir(tmp_path), pytest.raises(CheckpointMismatchError, match=r"last\.ckpt: not a weights-only"):
        main(["fit", *tiny_args(lidc), *args, "--trainer.max_steps", "3", "--ckpt_path", "last"])


@pytest.mark.slow  # real `python -m` processes, 20-30 s; make test: test_resume.py (a forked child killed)
def test_hard_killed_run_resumes_at_the_same_step_and_finishes_all_epochs(lidc, tmp_path):
    # 12 train images / batch 2 = 6 steps per epoch, 2 epochs = 12 steps. Step saves write last.ckpt at every
    # step (the best-k are chosen at validations); SIGKILL at step 9 (mid-epoch 2): the last file holds step 8.
    args = tiny_args(lidc, "--trainer.max_epochs", "2")
    killed, resumed = kill_and_resume("domains.medical", args, tmp_path / "ckpt", tmp_path, kill_step=9)
    assert killed["global_step"] == 8
    assert killed["loops"]["fit_loop"]["epoch_progress"]["current"]["completed"] == 1  # inside epoch 2
    assert resumed["global_step"] == 12  # 4 more steps, not a fresh 12: resumed where it stopped
    # written at the end of epoch 2 (as Lightning's epoch-end checkpoints are: processed, not yet marked completed)
    assert resumed["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"] == 2
    assert resumed["lr_schedulers"][0]["last_epoch"] == 12  # the cosine schedule continued too
    assert resumed["suite_task"] == {
        "task": "domains.medical.task.MedicalSegmentationTask",
        "model": "ProbabilisticUNet",
    }


# ----------------------------------------------------------------------------------------- numerical faults


@pytest.mark.parametrize("model", MODELS)
def test_nan_parameter_stops_the_run_naming_step_and_loss_term(model, lidc, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name, terms = POISON[model]
    poison = {"class_path": "tests.helpers.PoisonParameter", "init_args": {"name": name, "step": 1}}
    fault = poisoned_fit_args(poison, tmp_path / "ckpt")
    args = tiny_args(lidc, "--trainer.max_steps", "3", *fault, model=model)
    with pytest.raises(NonFiniteLossError) as err:
        main(["fit", *args])
    assert str(err.value).startswith(
        f"non-finite loss at global step 1 (epoch 0) in term(s): {', '.join(terms)} "
    )
    assert "nonfinite_loss: skip" in str(err.value)  # says how to skip instead


@pytest.mark.parametrize("model", ["prob_unet", "hpu_net"])
def test_weights_blown_up_stop_validation_naming_the_step_not_deep_in_torch_normal(model, lidc, tmp_path, monkeypatch):
    """A learning rate of 1e30 left finite weights whose outputs overflow: validation then failed inside
    torch.normal ("normal expects all elements of std >= 0.0"), before any loss guard looked."""
    monkeypatch.chdir(tmp_path)
    args = tiny_args(
        lidc, "--model.optimizer.init_args.lr", "1e30", "--trainer.max_steps", "1", "--trainer.val_check_interval", "1",
        "--trainer.num_sanity_val_steps", "0", model=model,
    )  # fmt: skip
    with pytest.raises(NonFiniteLossError, match=r"^val at global step 1 \(epoch 0\): a latent Gaussian's sigma"):
        main(["fit", *args])


@pytest.mark.parametrize("model", MODELS)
def test_skip_mode_skips_and_counts_bad_batches(model, lidc, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    poison = {"class_path": "tests.helpers.PoisonBatch", "init_args": {"batch_idx": 2}}
    args = tiny_args(
        lidc,
        "--model.nonfinite_loss",
        "skip",
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "3",
        *poisoned_fit_args(poison, tmp_path / "ckpt"),
        model=model,
    )
    assert_one_batch_skipped(main(["fit", *args]), batches=3)


def test_every_config_states_gradient_clipping():
    missing = configs_missing(CONFIGS, "trainer", "gradient_clip_val")
    assert not missing, f"trainer.gradient_clip_val not stated in {missing}"


def test_cli_applies_the_gradient_clipping_setting(lidc, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = main(
        ["fit", *tiny_args(lidc, "--trainer.gradient_clip_val", "0.25", "--trainer.fast_dev_run", "1")]
    )
    assert math.isclose(cli.trainer.gradient_clip_val, 0.25)


# ------------------------------------------------------------------------------------------- safe loading


def test_load_checked_names_the_model_a_checkpoint_holds(prob_unet_ckpt, tiny_task_ckpt):
    task = MedicalSegmentationTask.load_checked(prob_unet_ckpt)
    assert task.model_name == "prob_unet" and torch.equal(
        task.state_dict()["model.fcomb.out.bias"],
        torch.load(prob_unet_ckpt, weights_only=True)["state_dict"]["model.fcomb.out.bias"],
    )
    # same task, another model: the error names both
    unet = {"class_path": "domains.medical.models.UNetSegmenter", "init_args": {"channels": [8, 16]}}
    with pytest.raises(
        CheckpointMismatchError, match=r"holds model 'ProbabilisticUNet'.*built as 'UNetSegmenter'"
    ):
        MedicalSegmentationTask.load_checked(prob_unet_ckpt, network=unet)
    # another task: the error names the task and model in the file
    with pytest.raises(CheckpointMismatchError, match=r"tests\.shared\.tiny_task\.TinySegTask checkpoint"):
        MedicalSegmentationTask.load_checked(tiny_task_ckpt)


def test_cli_refuses_another_tasks_checkpoint_naming_what_it_holds(
    lidc, tiny_task_ckpt, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    for subcommand in ("test", "predict"):
        with pytest.raises(CheckpointMismatchError) as err:
            main([subcommand, *tiny_args(lidc), "--ckpt_path", str(tiny_task_ckpt)])
        assert "TinySegTask" in str(err.value) and "MedicalSegmentationTask" in str(err.value)
        assert str(tiny_task_ckpt) in str(err.value)
    assert not (tmp_path / "predictions").exists()  # refused before anything ran


def test_cli_refuses_a_foreign_checkpoint_without_a_suite_record(lidc, tiny_task_ckpt, tmp_path, monkeypatch):
    """A checkpoint written by other code: its hyperparameters are not this task's arguments."""
    monkeypatch.chdir(tmp_path)
    checkpoint = torch.load(tiny_task_ckpt, weights_only=True)
    del checkpoint["suite_task"]
    foreign = tmp_path / "foreign.ckpt"
    torch.save(checkpoint, foreign)
    with pytest.raises(
        CheckpointMismatchError, match=r"hyperparameters \['encoder'\].*MedicalSegmentationTask"
    ):
        main(["test", *tiny_args(lidc), "--ckpt_path", str(foreign)])


# --------------------------------------------------------------------------------------------------- DDP


@pytest.mark.slow  # several processes: about 20-30 s; test_resume.py / test_ddp_sync_s38.py keep the paths in make test
def test_fit_under_ddp_on_two_cpu_processes_splits_data_and_reduces_metrics(lidc, tmp_path):
    args = tiny_args(
        lidc,
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "2",
        "--trainer.num_sanity_val_steps",
        "0",
        "--checkpoint.dirpath",
        str(tmp_path / "ckpt"),
    )
    ranks = run_ddp_fit(
        "domains.medical", args, tmp_path / "ranks", tmp_path, "val_metrics", "num_images_sum"
    )
    assert [r["rank"] for r in ranks] == [0, 1] and {r["world_size"] for r in ranks} == {2}
    assert {r["backend"] for r in ranks} == {"gloo"}
    ids = [set(r["train_ids"]) for r in ranks]
    assert len(ranks[0]["train_ids"]) == len(ranks[1]["train_ids"]) == 4  # 2 batches of 2 on each rank
    assert not ids[0] & ids[1]  # DistributedSampler gave each rank its own images
    # val: 2 images, one per rank; the synced count is the sum of the ranks' local counts on both ranks
    local = [r["local"][0] for r in ranks]
    assert local == [1.0, 1.0]
    assert [r["synced"][0] for r in ranks] == [sum(local)] * 2
    # the logged loss is the mean over both ranks' images (sync_dist), not each rank's own image's
    assert "val/loss" in ranks[0]["logged"]
    for name in ("val/loss", "val/rec_per_pixel", "val/kl", "val/kl_nats"):
        assert ranks[0]["logged"][name] == pytest.approx(ranks[1]["logged"][name]), name
    assert (tmp_path / "ckpt" / "last.ckpt").is_file()


def test_sample_latent_draws_as_sample():
    from domains.medical.models.common import diagonal_gaussian, sample_latent
    d = diagonal_gaussian(torch.zeros(2, 3), torch.full((2, 3), 0.5), 1)
    torch.manual_seed(0)
    a = sample_latent(d, (4,))
    torch.manual_seed(0)
    assert torch.equal(a, d.sample((4,)))
