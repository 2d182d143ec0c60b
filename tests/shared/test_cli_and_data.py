import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from shared.classification.model import ImageClassifier
from shared.cli import ConfigError, _best_model_path, config_run_name, run_cli
from shared.data import (
    SeededShuffle,
    SplitLoaders,
    default_num_workers,
    group_split,
    repeat_factors,
    seed_worker_transforms,
    segmentation_augmentations,
)
from shared.task import BaseTask
from tests.shared.tiny_task import SquaresDataModule, TinySegTask


def test_cli_fast_dev_run(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli = run_cli(
            TinySegTask,
            SquaresDataModule,
            domain="tiny",
            monitor="val/loss",
            args=["fit", "--trainer.fast_dev_run", "1"],
        )
    assert cli.trainer.state.finished and cli.trainer.global_step == 1
    # library notes that concern no user stay out of the run's output (every run printed them)
    assert not [w for w in caught if "LeafSpec" in str(w.message)]
    logging.getLogger("pytorch_lightning.utilities.rank_zero").info("💡 Tip: For seamless cloud logging, try X")
    assert "seamless cloud logging" not in caplog.text


def test_limit_batches_written_1_means_one_batch_and_1_point_0_all(tmp_path, monkeypatch):
    """Lightning types limit_*_batches ``float | int``: jsonargparse made ``1`` into 1.0 (= all batches)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "limits.yaml").write_text("trainer:\n  limit_val_batches: 1\n")
    common = ["fit", "--trainer.logger", "false", "--trainer.max_epochs", "1", "--trainer.enable_checkpointing"]
    common += ["false", "-c", "limits.yaml"]
    one = run_cli(
        TinySegTask, SquaresDataModule, domain="tiny", monitor="val/loss", args=[*common, "--trainer.limit_train_batches", "1"]
    )
    assert one.trainer.global_step == 1  # 16 images in batches of 4: 4 steps if read as 100 %
    assert one.trainer.num_val_batches == [1]  # the config file's 1 is one batch too
    everything = run_cli(
        TinySegTask, SquaresDataModule, domain="tiny", monitor="val/loss", args=[*common, "--trainer.limit_train_batches", "1.0"]
    )
    assert everything.trainer.global_step == 4


def test_cli_fit_without_logger_drops_the_learning_rate_monitor(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [
        "fit",
        "--trainer.logger",
        "false",
        "--trainer.max_steps",
        "2",
        "--trainer.limit_val_batches",
        "1",
    ]
    cli = run_cli(TinySegTask, SquaresDataModule, domain="tiny", monitor="val/loss", args=args)
    assert cli.trainer.global_step == 2 and not cli.trainer.loggers
    assert not any(type(c).__name__ == "LearningRateMonitor" for c in cli.trainer.callbacks)


def test_cli_short_fit_lowers_loss_and_writes_last_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [
        "fit",
        "--trainer.max_epochs",
        "6",
        "--trainer.enable_progress_bar",
        "false",
        "--model.optimizer.init_args.lr",
        "0.02",
    ]
    args += ["--trainer.log_every_n_steps", "1"]
    cli = run_cli(TinySegTask, SquaresDataModule, domain="tiny", monitor="val/loss", args=args)
    metrics = cli.trainer.callback_metrics
    assert (tmp_path / "lightning_logs/tiny/checkpoints/last.ckpt").is_file()
    import csv

    with open(next((tmp_path / "lightning_logs/tiny/csv").glob("version_*/metrics.csv"))) as f:
        rows = list(csv.DictReader(f))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert losses[-1] < 0.5 * losses[0], losses
    assert torch.isfinite(metrics["val/loss"])


def test_group_split_keeps_groups_whole_and_is_deterministic(caplog):
    with caplog.at_level(logging.INFO):  # the table goes through rank_zero_info: logged, rank 0 only
        groups = [f"patient{i // 3}" for i in range(60)]
        a = group_split(groups, seed=1)
        b = group_split(list(reversed(groups)), seed=1, verbose=False)
    assert sum("| train |" in record.getMessage() for record in caplog.records) == 1  # verbose=False: silent
    seen = {}
    for name, idx in a.items():
        for i in idx:
            assert seen.setdefault(groups[i], name) == name
    assert sorted(i for v in a.values() for i in v) == list(range(60))
    assert {groups[i] for i in a["test"]} == {list(reversed(groups))[i] for i in b["test"]}
    assert len({groups[i] for i in a["train"]}) == 14  # 70 % of 20 patients


def test_group_split_bad_fractions():
    with pytest.raises(ValueError, match="sum to 1"):
        group_split(["a", "b"], fractions=(0.5, 0.6, 0.1))
    with pytest.raises(ValueError, match="sum to 1"):  # was "cannot convert float NaN to integer"
        group_split(["a", "b"], fractions=(float("nan"), 0.5, 0.5))


def test_group_split_does_not_depend_on_item_order_when_ids_print_alike():
    """1 and "1" share a digest: their order came from a set's iteration, which the item order and the
    process's PYTHONHASHSEED changed, so one data set split two ways."""
    groups = [1, "1", 2, "2", 3, "3", 4, "4", 5, "5", 6, "6"]

    def by_name(items):
        split = group_split(items, (0.25, 0.5, 0.25), verbose=False)
        return {name: sorted(repr(items[i]) for i in indices) for name, indices in split.items()}

    assert by_name(groups) == by_name(groups[::-1]) == by_name(groups[1::2] + groups[::2])


def test_group_split_rounds_cumulative_cut_points():
    """The cumulative fractions pick up float error: 0.7 + 0.2 + 0.1 == 0.9999999999999999, so the last cut
    is 9.999999999999998 groups of 10; truncating it would drop the 10th group from every split."""
    split = group_split([f"p{i}" for i in range(10)], (0.7, 0.2, 0.1), verbose=False)
    assert [len(split[name]) for name in ("train", "val", "test")] == [7, 2, 1]  # round(7.0, 9.0, 9.99..)
    assert sorted(i for v in split.values() for i in v) == list(range(10))


def test_vertical_flip_flips_rows_of_image_and_mask():
    """vertical_flip=True must flip rows (up-down), not columns, and move the mask the same way."""
    import numpy as np

    image = np.arange(1024, dtype=np.float32).reshape(32, 32)
    mask = (image % 7 == 0).astype(np.uint8)
    aug = segmentation_augmentations(flip=False, vertical_flip=True, rotate_limit=0, scale_limit=0, seed=0)
    flipped = []
    for _ in range(10):
        out = aug(image=image, mask=mask)
        is_flipped = np.array_equal(out["image"], image[::-1])
        assert is_flipped or np.array_equal(out["image"], image)
        assert np.array_equal(out["mask"], mask[::-1] if is_flipped else mask)
        flipped.append(is_flipped)
    assert any(flipped) and not all(flipped)  # p=0.5: both cases occur in 10 draws with seed 0


def test_segmentation_augmentation_moves_masks_with_image():
    import numpy as np

    image = np.zeros((32, 32), np.float32)
    image[4:10, 2:6] = 1.0
    masks = [(image > 0).astype(np.uint8), (image > 0).astype(np.uint8)]
    aug = segmentation_augmentations(rotate_limit=15, scale_limit=0.1, p=1.0, seed=3)
    for _ in range(5):
        out = aug(image=image, masks=masks)
        assert np.array_equal(out["masks"][0], out["masks"][1])
        bright, m = out["image"] > 0.5, out["masks"][0].astype(bool)
        # the image is resampled bilinearly and the masks by nearest neighbour: edges may differ by a pixel
        assert (bright & m).sum() / max(1, (bright | m).sum()) > 0.7


def test_seed_worker_transforms_reseeds_the_worker_copy_of_the_pipeline(monkeypatch):
    """Each DataLoader worker must reseed its dataset's transform from torch's per-worker seed (all of it, through
    reseed_pipeline's SeedSequence); in the main process (no worker info) nothing is touched."""
    from types import SimpleNamespace

    seeds = []
    transform = SimpleNamespace(set_random_seed=seeds.append)
    info = SimpleNamespace(seed=2**32 + 2**31 + 7, dataset=SimpleNamespace(transform=transform))
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: info)
    seed_worker_transforms(0)
    expected = [int(np.random.SeedSequence([2**32 + 2**31 + 7]).generate_state(1, np.uint64)[0])]
    assert seeds == expected
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: None)
    seed_worker_transforms(0)
    assert seeds == expected


def test_num_workers_leave_one_core_to_training_and_respect_the_cap(monkeypatch):
    import os

    for cores, cap, expected in ((1, 4, 0), (2, 4, 1), (3, 4, 2), (16, 4, 4), (16, 8, 8), (16, 0, 0)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid, n=cores: set(range(n)), raising=False)
        assert default_num_workers(cap) == expected, (cores, cap)
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)  # macOS / Windows: the CPU count
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    assert default_num_workers() == 2


def test_repeat_factors_hand_values():
    # 5 images; threshold 0.5. Class 0 in 3/5 images: sqrt(0.5 / 0.6) < 1 -> 1. Classes 1 and 2 in 1/5:
    # sqrt(0.5 / 0.2) = sqrt(2.5). An image takes its rarest class's factor; no class -> 1.
    got = repeat_factors([{0}, {0, 1}, [0, 0], {2}, set()], threshold=0.5)
    assert got.tolist() == pytest.approx([1.0, 2.5**0.5, 1.0, 2.5**0.5, 1.0])
    with pytest.raises(ValueError, match="threshold"):
        repeat_factors([{0}], threshold=0.0)
    with pytest.raises(ValueError, match="no images"):
        repeat_factors([], threshold=0.5)


class _Labelled(torch.utils.data.Dataset):
    """Image i holds class 1 if i == 0 (rare), else class 0."""

    def __len__(self):
        return 10

    def __getitem__(self, i):
        return torch.tensor(i)

    def image_classes(self):
        return [{1} if i == 0 else {0} for i in range(10)]


class _Loaders(SplitLoaders):
    def __init__(self, dataset, threshold, seed=0):
        super().__init__()
        self.datasets, self.batch_size, self.num_workers = {"train": dataset}, 10, 0
        self.repeat_threshold, self.seed = threshold, seed


def test_repeat_factor_sampler_draws_rare_images_more_often_and_repeatably():
    # class 1 in 1/10 images, threshold 0.4: r = sqrt(4) = 2 -> image 0 has weight 2 of a total 11
    loaders = _Loaders(_Labelled(), threshold=0.4)
    sampler = loaders.train_dataloader().sampler
    assert sampler.weights.tolist() == [2.0] + [1.0] * 9 and sampler.num_samples == 10
    loader = loaders.train_dataloader()  # built once per fit: its generator runs on across epochs
    draws = torch.cat([batch for _ in range(400) for batch in loader])
    assert (draws == 0).float().mean().item() == pytest.approx(2 / 11, abs=0.01)
    again = _Loaders(_Labelled(), threshold=0.4)  # same seed, same sequence (every DDP rank agrees)
    assert torch.equal(
        next(iter(again.train_dataloader())), next(iter(_Loaders(_Labelled(), 0.4).train_dataloader()))
    )
    # without a threshold: a shuffle that follows (seed, epoch), so a resumed fit goes on with its order
    assert isinstance(_Loaders(_Labelled(), threshold=None).train_dataloader().sampler, SeededShuffle)
    # counted once per dataset: a second loader (class weights, calibration) does not list the classes again
    counted = []
    dataset = _Labelled()
    dataset.image_classes = lambda: counted.append(1) or _Labelled().image_classes()
    twice = _Loaders(dataset, threshold=0.4)
    twice.train_dataloader(), twice.train_dataloader()
    assert counted == [1]
    with pytest.raises(TypeError, match="image_classes"):
        _Loaders(torch.utils.data.TensorDataset(torch.zeros(3)), threshold=0.5).train_dataloader()


def test_importing_the_suite_turns_off_albumentations_update_check():
    """albumentations asks PyPI for its latest version at import unless NO_ALBUMENTATIONS_UPDATE is set: any
    network connection while the suite's packages import ends the probe (a plain ``import albumentations``
    without the switch does, so the probe can fail)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    probe = (
        "import socket\n"
        "def refuse(*a, **k): raise SystemExit('network connection at import')\n"
        "socket.socket.connect = refuse\n"
        "socket.create_connection = refuse\n"
        "import domains\n"  # every entry point (CLIs, benchmarks, apps) imports it or shared.offline first
        "import albumentations, os\n"
        "print(os.environ['NO_ALBUMENTATIONS_UPDATE'])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], check=False, capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0 and out.stdout.strip() == "1", out.stderr[-300:]


def test_best_and_last_checkpoints_are_found_by_a_later_command(tmp_path, monkeypatch):
    """``validate --ckpt_path best`` in a new command (Lightning knows "best" only inside the fit that wrote it), and
    ``last`` with no file is an error instead of a test of the untrained model."""
    monkeypatch.chdir(tmp_path)
    common = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]
    fit = ["fit", *common, "--trainer.max_epochs", "3", "--model.optimizer.init_args.lr", "0.02"]
    fitted = run_cli(TinySegTask, SquaresDataModule, domain="tiny", monitor="val/loss", args=fit)
    best = fitted.trainer.checkpoint_callback.best_model_path
    folder = tmp_path / "lightning_logs/tiny/checkpoints"
    assert best and Path(best).parent.resolve() == folder.resolve() and (folder / "last.ckpt").is_file()

    def validate(alias: str):
        return run_cli(
            TinySegTask,
            SquaresDataModule,
            domain="tiny",
            monitor="val/loss",
            args=["validate", *common, "--ckpt_path", alias],
        )

    for alias, expected in (("best", Path(best).name), ("last", "last.ckpt")):
        cli = validate(alias)
        assert Path(cli.config["validate"]["ckpt_path"]).name == expected
        assert Path(cli.trainer.ckpt_path).name == expected  # the weights tested are that file's

    # a second fit into the same folder writes last-v1.ckpt (Lightning's version counter): the newest run wins
    refitted = run_cli(TinySegTask, SquaresDataModule, domain="tiny", monitor="val/loss", args=fit)
    newest_best = Path(refitted.trainer.checkpoint_callback.best_model_path).name
    assert (folder / "last-v1.ckpt").is_file() and newest_best != Path(best).name
    for alias, expected in (("best", newest_best), ("last", "last-v1.ckpt")):
        assert Path(validate(alias).config["validate"]["ckpt_path"]).name == expected

    with pytest.raises(
        IsADirectoryError, match=rf"--ckpt_path {folder} is a folder; give the checkpoint file"
    ):
        validate(str(folder))

    empty = tmp_path / "empty"
    empty.mkdir()
    for alias in ("best", "last"):
        with pytest.raises(FileNotFoundError, match=rf"--ckpt_path {alias}: no .* in {empty}"):
            run_cli(
                TinySegTask,
                SquaresDataModule,
                domain="tiny",
                monitor="val/loss",
                args=["validate", *common, "--ckpt_path", alias, "--checkpoint.dirpath", str(empty)],
            )


@pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
def test_evaluating_without_a_checkpoint_is_an_error_unless_asked_for(subcommand, tmp_path, monkeypatch):
    """The command line builds the network afresh: without --ckpt_path it would score random weights, exit 0."""
    monkeypatch.chdir(tmp_path)
    common = [subcommand, "--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]
    with pytest.raises(ConfigError, match=rf"{subcommand} needs trained weights: pass --ckpt_path best, last"):
        run_cli(TinySegTask, SquaresDataModule, domain="tiny", monitor="val/loss", args=common)
    if subcommand == "validate":  # the tiny data module has no test or predict loader
        with pytest.warns(UserWarning, match="--ckpt_path none: validate runs the network .* untrained"):
            cli = run_cli(
                TinySegTask, SquaresDataModule, domain="tiny", monitor="val/loss", args=[*common, "--ckpt_path", "none"]
            )
        assert cli.trainer.ckpt_path is None and "val/loss" in cli.trainer.callback_metrics


def test_resuming_with_nothing_saved_yet_says_why_and_starts_afresh(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["fit", "--trainer.logger", "false", "--trainer.max_steps", "1", "--trainer.limit_val_batches", "1"]
    with pytest.warns(UserWarning, match="fit --ckpt_path last: no last.ckpt in .* training starts from scratch"):
        cli = run_cli(
            TinySegTask, SquaresDataModule, domain="tiny", monitor="val/loss", args=[*args, "--ckpt_path", "last"]
        )
    assert cli.trainer.global_step == 1 and cli.config["fit"]["ckpt_path"] is None


def test_default_root_dir_moves_the_logs_and_checkpoints_too(tmp_path, monkeypatch):
    """The loggers and checkpoint folder default to lightning_logs/<domain>; a given root dir used to leave them
    there."""
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "runs" / "a"
    args = ["fit", "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false"]
    cli = run_cli(
        TinySegTask, SquaresDataModule, domain="tiny", monitor="val/loss",
        args=[*args, "--trainer.default_root_dir", str(root)],
    )  # fmt: skip
    assert (root / "tiny" / "checkpoints" / "last.ckpt").is_file()  # the domain's folder kept under the root
    assert (root / "tiny" / "csv").is_dir() and (root / "tiny" / "tensorboard").is_dir()
    assert Path(cli.trainer.checkpoint_callback.dirpath) == root / "tiny" / "checkpoints"
    assert not (tmp_path / "lightning_logs").exists()
    own = tmp_path / "mine"  # a folder of one's own is left as given
    run_cli(
        TinySegTask, SquaresDataModule, domain="tiny", monitor="val/loss",
        args=[*args, "--trainer.default_root_dir", str(root), "--checkpoint.dirpath", str(own)],
    )  # fmt: skip
    assert (own / "last.ckpt").is_file()


def test_each_config_file_keeps_its_checkpoints_in_a_folder_named_after_it(tmp_path, monkeypatch):
    """Configs of one task shared lightning_logs/<task>/checkpoints, so `predict -c transfer.yaml --ckpt_path
    last` took the quick run's network; a folder written in each config was copied along with it to mine.yaml."""
    monkeypatch.chdir(tmp_path)
    for name in ("quick", "mine", "overlay"):
        (tmp_path / f"{name}.yaml").write_text("trainer:\n  max_epochs: 1\n")
    (tmp_path / "pinned.yaml").write_text("checkpoint:\n  dirpath: elsewhere\n")

    def folder(*args):
        cli = run_cli(TinySegTask, SquaresDataModule, domain="tiny", monitor="val/loss", args=list(args), run=False)
        return cli.config["checkpoint"]["dirpath"]

    (tmp_path / "expA" / "configs").mkdir(parents=True)
    (tmp_path / "expA" / "configs" / "quick.yaml").write_text("trainer:\n  max_epochs: 1\n")
    # a copy named like a suite config does not share the suite's folder
    assert folder("-c", "quick.yaml") == f"lightning_logs/tiny/{tmp_path.name}-quick/checkpoints"
    assert config_run_name(Path(__file__).parents[2] / "domains/medical/configs/quick.yaml") == "quick"
    # same-named configs of two experiment folders: expA/config.yaml and expB/config.yaml shared one folder
    assert folder("-c", "expA/configs/quick.yaml") == "lightning_logs/tiny/expA-configs-quick/checkpoints"
    assert folder("--config=mine.yaml") == "lightning_logs/tiny/mine/checkpoints"
    assert folder("-c", "mine.yaml", "-c", "overlay.yaml") == "lightning_logs/tiny/mine/checkpoints"  # the first
    assert folder("-c", "pinned.yaml") == "elsewhere"  # written in the file: kept
    assert folder("-c", "quick.yaml", "--checkpoint.dirpath", "own") == "own"
    assert folder() == "lightning_logs/tiny/checkpoints"  # no config file
    root = str(tmp_path / "runs")  # --trainer.default_root_dir moves the derived folder with the logs
    assert folder("-c", "mine.yaml", "--trainer.default_root_dir", root) == f"{root}/tiny/mine/checkpoints"


def test_print_config_shows_the_folders_the_run_writes_to(tmp_path, monkeypatch, capsys):
    """--print_config printed lightning_logs/<domain>/checkpoints and the loggers' default folder, where no run
    with a config file or a root dir writes; a printed config run again keeps the folder of the first run."""
    import yaml

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.yaml").write_text("trainer:\n  max_epochs: 1\n")
    root = str(tmp_path / "runs")

    def printed(*args, run=False):
        with pytest.raises(SystemExit) as done:
            run_cli(TinySegTask, SquaresDataModule, domain="tiny", monitor="val/loss", args=list(args), run=run)
        assert done.value.code in (0, None)
        return yaml.safe_load(capsys.readouterr().out)

    config = printed("-c", "mine.yaml", "--print_config")
    assert config["checkpoint"]["dirpath"] == "lightning_logs/tiny/mine/checkpoints"
    assert printed("fit", "-c", "mine.yaml", "--print_config", run=True)["checkpoint"] == config["checkpoint"]
    assert {logger["init_args"]["save_dir"] for logger in config["trainer"]["logger"]} == {"lightning_logs/tiny"}
    config = printed("-c", "mine.yaml", "--print_config=skip_null", "--trainer.default_root_dir", root)
    assert config["checkpoint"]["dirpath"] == f"{root}/tiny/mine/checkpoints"
    assert {logger["init_args"]["save_dir"] for logger in config["trainer"]["logger"]} == {f"{root}/tiny"}
    assert "ckpt_path" not in config  # skip_null still applies
    (tmp_path / "printed.yaml").write_text(yaml.safe_dump(config))
    again = run_cli(TinySegTask, SquaresDataModule, domain="tiny", monitor="val/loss", args=["-c", "printed.yaml"], run=False)
    assert again.config["checkpoint"]["dirpath"] == f"{root}/tiny/mine/checkpoints"
    assert printed("--trainer.logger", "false", "--print_config")["trainer"]["logger"] is False
    with pytest.raises(SystemExit):  # --help names the folder too, not only Lightning's own default
        run_cli(TinySegTask, SquaresDataModule, domain="tiny", monitor="val/loss", args=["--help"], run=False)
    assert "With -c FILE: lightning_logs/tiny/<FILE's name>/checkpoints" in " ".join(capsys.readouterr().out.split())


def test_last_checkpoint_is_the_last_state_even_when_the_metric_stops_improving(tmp_path, monkeypatch, caplog):
    """Lightning 2.6 writes last.ckpt only beside a new top-k checkpoint: with lr 0 the validation loss never
    improves after epoch 0, and last.ckpt stayed at epoch 0 (resume and --ckpt_path last went back in time)."""
    monkeypatch.chdir(tmp_path)
    common = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]
    fit = ["fit", *common, "--trainer.max_epochs", "3", "--model.optimizer.init_args.lr", "0"]
    cli = run_cli(TinySegTask, SquaresDataModule, domain="tiny", monitor="val/loss", args=fit)
    folder = tmp_path / "lightning_logs/tiny/checkpoints"
    last = torch.load(folder / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == cli.trainer.global_step > 0 and last["epoch"] == 2
    # a second fit into the config's folder: said as what happens, not Lightning's "exists and is not empty"
    earlier = "holds an earlier run's checkpoints: this run's are saved beside them under new names"
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.INFO):
        warnings.simplefilter("always")
        again = run_cli(TinySegTask, SquaresDataModule, domain="tiny", monitor="val/loss",
                        args=[*fit[:-4], "--trainer.max_epochs", "1"])  # fmt: skip
    assert not [w for w in caught if "exists and is not empty" in str(w.message)]
    assert Path(again.trainer.checkpoint_callback.last_model_path).name == "last-v1.ckpt" and earlier in caplog.text
    caplog.clear()  # a resume goes on in its own file: not said
    with caplog.at_level(logging.INFO):
        resumed = run_cli(TinySegTask, SquaresDataModule, domain="tiny", monitor="val/loss",
                          args=[*fit[:-4], "--trainer.max_epochs", "2", "--ckpt_path", "last"])  # fmt: skip
    assert earlier not in caplog.text and Path(resumed.trainer.checkpoint_callback.last_model_path).name == "last-v1.ckpt"
    best = torch.load(cli.trainer.checkpoint_callback.best_model_path, map_location="cpu", weights_only=True)
    assert best["global_step"] < last["global_step"]  # the best stayed at epoch 0
    assert any(key.startswith("ModelCheckpoint{") for key in last["callbacks"])  # the parent's state key
    # training that ends between validations (every 2nd epoch validates, 3 epochs): last.ckpt at the end
    sparse = run_cli(
        TinySegTask, SquaresDataModule, domain="tiny", monitor="val/loss",
        args=[*fit, "--trainer.check_val_every_n_epoch", "2", "--checkpoint.dirpath", str(tmp_path / "sparse")],
    )  # fmt: skip
    assert (
        torch.load(tmp_path / "sparse" / "last.ckpt", weights_only=True)["global_step"]
        == sparse.trainer.global_step
    )
    # a smoke run (fast_dev_run: documented as not checkpointing) leaves the folder as it was
    before = sorted(p.name for p in folder.iterdir())
    run_cli(
        TinySegTask,
        SquaresDataModule,
        domain="tiny",
        monitor="val/loss",
        args=[*fit, "--trainer.fast_dev_run", "1"],
    )
    assert sorted(p.name for p in folder.iterdir()) == before


def test_best_checkpoint_without_last_is_the_single_best_file(tmp_path):
    from shared.cli import saved_checkpoint

    (tmp_path / "best-00-5.ckpt").write_bytes(b"")
    assert saved_checkpoint("best", tmp_path) == str(tmp_path / "best-00-5.ckpt")
    (tmp_path / "best-01-9.ckpt").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"2 best-\*\.ckpt files .* give --ckpt_path FILE"):
        saved_checkpoint("best", tmp_path)
    (tmp_path / "best-01-9.ckpt").unlink()
    # a newer run whose last.ckpt records no best: not the earlier run's lone best file
    torch.save({"callbacks": {}}, tmp_path / "last-v1.ckpt")
    with pytest.raises(FileNotFoundError, match=r"the newest run's last-v1\.ckpt in .* records none \(no best checkpoint was kept: --checkpoint.save_top_k 0"):
        saved_checkpoint("best", tmp_path)
    torch.save(
        {"callbacks": {"ModelCheckpoint{}": {"best_model_path": "/gone/best-03-4.ckpt"}}},
        tmp_path / "last-v1.ckpt",
    )
    with pytest.raises(FileNotFoundError, match=r"records /gone/best-03-4\.ckpt, which is gone"):
        saved_checkpoint("best", tmp_path)
    (tmp_path / "last-v1.ckpt").write_bytes(b"truncated")
    with pytest.raises(FileNotFoundError, match=r"last-v1\.ckpt cannot say which file is the best: .*a text file"):
        saved_checkpoint("best", tmp_path)


@pytest.mark.parametrize(
    ("units", "precision", "hinted"),
    [(True, "32-true", True), (False, "32-true", False), (True, "bf16-mixed", False), (True, "smoke", False)],
)
def test_fit_on_a_cpu_with_bf16_units_hints_at_bf16_mixed(
    tmp_path, monkeypatch, caplog, units, precision, hinted
):  # smoke: a fast_dev_run, whose speed is not its point
    import logging

    import shared.cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(shared.cli, "cpu_has_bf16_units", lambda: units)
    monkeypatch.setattr(shared.cli, "_BF16_HINT_PARAMETERS", 0)  # the tiny network is below it (test_console_fit_s41)
    args = ["fit", "--trainer.logger", "false", "--trainer.max_steps", "1", "--trainer.limit_val_batches", "1",
            "--trainer.precision", precision]  # fmt: skip
    if precision == "smoke":
        args[-2:] = ["--trainer.fast_dev_run", "1"]
    with caplog.at_level(logging.INFO):
        run_cli(TinySegTask, SquaresDataModule, domain="tiny", monitor="val/loss", args=args)
    assert ("--trainer.precision bf16-mixed may train faster" in caplog.text) == hinted



def test_a_split_drawn_otherwise_than_the_checkpoints_is_named():
    """`test --data.seed 1` (or the fractions an empty-split error suggests) after a fit with seed 0 scored
    the network partly on its training images, unsaid. Only settings that move images count."""
    from domains.driving.anomaly.data import SegmentationDataModule
    from domains.medical.data import MedicalDataModule

    png = MedicalDataModule(seed=1)  # lidc_png is split by its folders: no seed moves an image
    assert png.other_split_than({"data_format": "lidc_png", "data_path": None, "seed": 0}, "test") is None
    dec = MedicalDataModule("decathlon", "data/x", dataset_kwargs={"fractions": [0.5, 0.25, 0.25]})
    trained = {"data_format": "decathlon", "data_path": "./data/x", "seed": 0, "dataset_kwargs": {"fractions": (0.7, 0.15, 0.15)}}
    assert dec.other_split_than(trained, "test") == (
        "data.fractions (0.7, 0.15, 0.15) (this command: [0.5, 0.25, 0.25])"
    )  # ./data/x is data/x; a tuple stored as a list is the same
    assert dec.other_split_than({**trained, "dataset_kwargs": {"fractions": [0.5, 0.25, 0.25]}}, "test") is None
    assert dec.other_split_than({**trained, "data_path": "/elsewhere"}, "test") is None  # another data set
    assert dec.other_data_set_than({**trained, "data_path": "/elsewhere"}, "test") == (
        "data.data_path '/elsewhere' (this command: 'data/x')"
    )
    assert dec.other_data_set_than(trained, "test") is None  # ./data/x is data/x
    # a seed in dataset_kwargs is the one the dataset draws with, over data.seed
    reseeded = MedicalDataModule("decathlon", "data/x", dataset_kwargs={"fractions": [0.7, 0.15, 0.15], "seed": 1})
    assert reseeded.other_split_than(trained, "test") == "data.seed 0 (this command: 1)"
    from domains.driving.accident.data import AccidentDataModule

    clips = AccidentDataModule(split_seed=4)  # the accident module draws with split_seed and its two fractions
    assert clips.other_split_than({"data_format": "synthetic", "data_path": None, "split_seed": 0, "val_fraction": 0.15, "test_fraction": 0.15}, "test") == (
        "data.split_seed 0 (this command: 4)"
    )
    seg = SegmentationDataModule(seed=2)
    assert seg.other_split_than({"seed": 0, "data_path": None}, "test") is None  # test reads the anomaly set
    assert seg.other_split_than({"seed": 0, "data_path": None}, "validate") == "data.seed 0 (this command: 2)"
    # validation is drawn from the road scenes whatever anomaly set the run tested on
    other_test_set = {"seed": 0, "data_path": None, "anomaly_path": "/smiyc"}
    assert seg.other_split_than(other_test_set, "validate") == "data.seed 0 (this command: 2)"
    # an anomaly test set is never trained on: another one is no "other data" than the checkpoint's
    smiyc = SegmentationDataModule(anomaly_path="/smiyc")
    assert smiyc.other_data_set_than({"data_path": None, "anomaly_path": None}, "test") is None
    assert smiyc.other_data_set_than({"data_path": "/roads", "anomaly_path": None}, "validate") == (
        "data.data_path '/roads' (this command: None)"
    )


def test_an_image_folder_split_moves_with_no_setting(tmp_path):
    """ImageFolder and LIDC patches are split by their folders: another seed at test time moves nothing."""
    from domains.driving.classification.data import DrivingClassificationData
    from domains.medical.classification.data import MedicalClassificationData

    folder = MedicalClassificationData(data_format="imagefolder", data_path=str(tmp_path), seed=3)
    assert folder.other_split_than({"data_format": "imagefolder", "data_path": str(tmp_path), "seed": 0}, "test") is None
    lidc = MedicalClassificationData(seed=3)
    assert lidc.other_split_than({"data_format": "lidc_png", "data_path": None, "seed": 0}, "test") is None
    kitti = DrivingClassificationData(seed=3)  # crops split by drive with the seed
    assert kitti.other_split_than({"data_format": "kitti", "data_path": None, "seed": 0}, "test") == (
        "data.seed 0 (this command: 3)"
    )


@pytest.mark.slow
def test_group_split_is_the_same_under_every_hash_seed():
    """A set's order changes with PYTHONHASHSEED only, so only separate processes show ties broken by it
    (about 10 s: each process imports Lightning)."""
    import os
    import subprocess
    import sys

    code = (
        "from shared.data import group_split; "
        "print(group_split([1, '1', 2, '2', 3, '3', 4, '4', 5, '5', 6, '6'], (0.25, 0.5, 0.25), verbose=False))"
    )
    outs = {
        subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": str(seed)},
                       capture_output=True, text=True, check=True).stdout
        for seed in (0, 8, 14)  # seeds whose set orders of these ids differ
    }  # fmt: skip
    assert len(outs) == 1, outs


@pytest.mark.parametrize(
    "module, option",
    [
        ("domains.driving.detection.data:DetectionDataModule", "max_items"),
        ("domains.driving.instances.data:InstanceDataModule", "max_items"),
        ("domains.driving.anomaly.data:SegmentationDataModule", "max_items"),
        ("domains.driving.accident.data:AccidentDataModule", "max_clips"),
        ("domains.driving.classification.data:DrivingClassificationData", "max_items"),
        ("domains.medical.data:MedicalDataModule", "max_items"),
    ],
)
def test_a_smoke_test_cap_below_one_is_refused(module, option):
    """[:0] read no data and [:-3] all but the last three, without a word."""
    import importlib

    path, name = module.split(":")
    data_module = getattr(importlib.import_module(path), name)
    extra = {"data_format": "kitti"} if name in ("DetectionDataModule", "InstanceDataModule") else {}
    for bad in (0, -3, True, 2.5):
        with pytest.raises(ValueError, match=rf"--data.{option}: a cap is a whole number >= 1, or null for all, got {bad}"):
            data_module(**{option: bad}, **extra)
    data_module(**{option: 2}, **extra)


def test_under_ddp_each_rank_evaluates_its_own_items_and_none_twice():
    """Lightning's DistributedSampler padded the ranks' shares with repeated items: Dice over 6 images of 5, a
    confusion matrix of 8 items of 7."""
    from types import SimpleNamespace

    from shared.data import SplitLoaders

    class Seven(SplitLoaders):
        def __init__(self):
            super().__init__()
            self.set_loader_options(batch_size=2, num_workers=0)
            self.datasets = {"val": list(range(7)), "test": list(range(7))}

    shares = []
    for rank in (0, 1):
        data = Seven()
        data.trainer = SimpleNamespace(world_size=2, global_rank=rank)
        shares.append([int(i) for batch in data.test_dataloader() for i in batch])
        assert [int(i) for batch in data.val_dataloader() for i in batch] == shares[-1]
    assert sorted(shares[0] + shares[1]) == list(range(7))
    single = Seven()
    assert single.test_dataloader().sampler.__class__.__name__ == "SequentialSampler"  # one process: as before
    tiny = Seven()
    tiny.datasets["test"] = [0]
    tiny.trainer = SimpleNamespace(world_size=2, global_rank=1)  # one item, two ranks: Lightning's own sampler
    assert tiny.test_dataloader().sampler.__class__.__name__ == "SequentialSampler"


@pytest.mark.parametrize(
    ("every", "step"),
    [
        ([], 4),
        (["--trainer.val_check_interval", "2"], 2),
        (["--trainer.val_check_interval", "2", "--checkpoint.every_n_train_steps", "3"], 2),  # step saves
    ],
)
def test_a_mistyped_monitor_saves_last_and_lists_the_logged_metrics(tmp_path, monkeypatch, every, step):
    """--checkpoint.monitor val/lsos stopped the run at its first validation with Lightning's error, before any
    checkpoint: the epoch's training was lost. Saved at the epoch's end, or after a validation within it."""
    monkeypatch.chdir(tmp_path)
    args = ["fit", "--trainer.logger", "false", "--trainer.max_epochs", "2", "--trainer.limit_val_batches", "1",
            "--checkpoint.dirpath", str(tmp_path / "ckpt"), "--checkpoint.monitor", "val/lsos", *every]  # fmt: skip
    with pytest.raises(ValueError, match=r"--checkpoint.monitor val/lsos is not a metric this run logs \(logged: .*val/loss"):
        run_cli(TinySegTask, SquaresDataModule, domain="tiny", monitor="val/loss", args=args)
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == step  # the training before the first validation kept (4 steps an epoch)
    # with save_top_k 0 no checkpoint reads the monitor: the run goes on, as with Lightning's own callback
    kept = run_cli(TinySegTask, SquaresDataModule, domain="tiny", monitor="val/loss",
                   args=[*args, "--checkpoint.save_top_k", "0", "--checkpoint.dirpath", str(tmp_path / "k0")])  # fmt: skip
    assert kept.trainer.global_step == 8


class ValidationScores(pl.Callback):
    """Each validation's ``val/loss`` by global step, and the best-k files a resumed run starts with (given to
    the CLI with ``--trainer.callbacks+=``)."""

    def __init__(self):
        self.by_step = {}
        self.best_at_start: dict = {}

    def on_train_start(self, trainer, pl_module):  # after a resume restored the checkpoint callback's state
        self.best_at_start = {Path(p).name for p in trainer.checkpoint_callback.best_k_models}

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.by_step[trainer.global_step] = float(trainer.callback_metrics["val/loss"])


def test_step_saves_write_last_and_the_best_is_chosen_at_validations_by_its_own_score(tmp_path, monkeypatch):
    """With --checkpoint.every_n_train_steps, Lightning saved its top-k at those steps, each scored with the
    previous validation's value, and none at validations: `best` was a model one step after the best
    validation, never validated itself, and the validated models were in no file."""
    monkeypatch.chdir(tmp_path)
    args = ["fit", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false", "--trainer.max_epochs", "2",
            "--trainer.limit_val_batches", "1", "--trainer.val_check_interval", "2",
            "--trainer.callbacks+=tests.shared.test_cli_and_data.ValidationScores",
            "--checkpoint.dirpath", str(tmp_path / "ckpt"), "--checkpoint.every_n_train_steps", "3",
            "--checkpoint.save_top_k", "2"]  # fmt: skip
    cli = run_cli(TinySegTask, SquaresDataModule, domain="tiny", monitor="val/loss", args=args)
    (scores,) = [c.by_step for c in cli.trainer.callbacks if isinstance(c, ValidationScores)]
    assert sorted(scores) == [2, 4, 6, 8]  # 4 steps an epoch, validated every 2
    ckpt = cli.trainer.checkpoint_callback
    kept = {torch.load(p, weights_only=True)["global_step"]: float(v) for p, v in ckpt.best_k_models.items()}
    assert sorted(kept) == sorted(sorted(scores, key=scores.get)[:2])  # validated models, at their steps
    assert all(kept[step] == pytest.approx(scores[step]) for step in kept)  # each scored with its own value
    last = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert last["global_step"] == cli.trainer.global_step == 8
    assert Path(_best_model_path(tmp_path / "ckpt" / "last.ckpt")).name == Path(ckpt.best_model_path).name
    # resumed without step saves: the same best-k state is found (its key no longer holds the step setting)
    plain = [a for a in args if a not in ("--checkpoint.every_n_train_steps", "3")]
    plain[plain.index("--trainer.max_epochs") + 1] = "3"
    again = run_cli(TinySegTask, SquaresDataModule, domain="tiny", monitor="val/loss", args=[*plain, "--ckpt_path", "last"])
    (restored,) = [c.best_at_start for c in again.trainer.callbacks if isinstance(c, ValidationScores)]
    assert restored == {Path(p).name for p in ckpt.best_k_models}


def test_a_resume_from_an_epochs_end_warns_of_no_missing_metric_and_saves_on(tmp_path, monkeypatch):
    """A checkpoint saved at an epoch's end makes the resume run that end again before any step; Lightning then
    warned "ModelCheckpoint(monitor='val/loss') could not find the monitored key", as for a typo."""
    monkeypatch.chdir(tmp_path)
    common = ["fit", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]
    run_cli(TinySegTask, SquaresDataModule, domain="tiny", monitor="val/loss", args=[*common, "--trainer.max_steps", "12"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli = run_cli(TinySegTask, SquaresDataModule, domain="tiny", monitor="val/loss",
                      args=[*common, "--trainer.max_steps", "20", "--ckpt_path", "last"])  # fmt: skip
    assert not [w for w in caught if "could not find the monitored key" in str(w.message)]
    assert cli.trainer.global_step == 20
    folder = tmp_path / "lightning_logs/tiny/checkpoints"
    newest = max(folder.glob("last*.ckpt"), key=lambda p: p.stat().st_mtime)
    assert torch.load(newest, weights_only=True)["global_step"] == 20  # the resumed run's epochs still saved
    best = torch.load(cli.trainer.checkpoint_callback.best_model_path, weights_only=True)
    assert best["global_step"] in (4, 8, 12, 16, 20)  # ranked at validations (4 steps an epoch)


def test_build_network_before_save_hyperparameters_still_saves_the_network():
    """The README says build_network follows save_hyperparameters; the other order saved no network, so the
    checkpoint could not be rebuilt (and was said to predate model.network)."""
    class Reversed(BaseTask):
        def __init__(self, network: ImageClassifier, **base_task_args):
            super().__init__(**base_task_args)
            self.model = self.build_network(network, ImageClassifier)
            self.save_hyperparameters()

    task = Reversed(ImageClassifier(2, "tiny_cnn", in_channels=1))
    assert task.hparams["network"]["class_path"] == "shared.classification.model.ImageClassifier"
    assert task.hparams["network"]["init_args"]["backbone"] == "tiny_cnn"


def test_no_last_checkpoint_says_a_fast_dev_run_saves_none(tmp_path):
    from shared.cli import saved_checkpoint

    with pytest.raises(FileNotFoundError, match=r"no last\.ckpt in .*run fit first, not as a fast_dev_run, which "
                       r"saves none"):  # fmt: skip
        saved_checkpoint("last", tmp_path)


class _ClassifierTask(BaseTask):
    """A task whose network is a classifier (for the CLI_LINKS check)."""

    def __init__(self, network: ImageClassifier, **args):
        super().__init__(**args)
        self.save_hyperparameters()
        self.model = network


def test_a_link_into_an_argument_the_network_does_not_take_is_refused(tmp_path, monkeypatch):
    """A CLI_LINKS target the network lacks (a typo: in_chanels) was applied to nothing: fit ran, the value never
    reached the network."""
    monkeypatch.chdir(tmp_path)
    network = ["--model.network", "shared.classification.model.ImageClassifier", "--model.network.init_args.num_classes",
               "2", "--model.network.init_args.backbone", "tiny_cnn", "--trainer.logger", "false"]  # fmt: skip
    typo = (("data.batch_size", "model.network.init_args.in_chanels"),)
    with pytest.raises(ConfigError, match=r"the link data\.batch_size -> model\.network\.init_args\.in_chanels "
                       r"\(CLI_LINKS\) names an argument ImageClassifier does not take: 'in_chanels' \(it takes "
                       r"num_classes, backbone, in_channels"):  # fmt: skip
        run_cli(_ClassifierTask, SquaresDataModule, domain="tiny", monitor="val/loss", args=network, links=typo, run=False)
    right = (("data.batch_size", "model.network.init_args.in_channels"),)  # a real argument: linked
    cli = run_cli(_ClassifierTask, SquaresDataModule, domain="tiny", monitor="val/loss", args=network, links=right, run=False)
    assert cli.model.model.in_channels == cli.datamodule.batch_size == 4


class _SigTermAtStep(pl.Callback):
    """A real SIGTERM to this process after optimiser step ``at`` (Lightning's handler stops the fit there)."""

    def __init__(self, at: int):
        self.at = at

    def on_train_batch_end(self, trainer, *args):
        import os
        import signal

        if trainer.global_step == self.at:
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_sigterm_saves_the_fits_state_and_the_resume_goes_on_from_it(tmp_path, monkeypatch):
    """SIGTERM (preemption) stopped the fit and saved nothing: killed at step 17 with last.ckpt at 16, the steps
    since the last save were lost (an epoch, with per-epoch saves)."""
    monkeypatch.chdir(tmp_path)
    common = ["fit", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
              "--trainer.max_steps", "10"]  # fmt: skip
    with pytest.raises(SystemExit):
        run_cli(TinySegTask, SquaresDataModule, domain="tiny", monitor="val/loss",
                args=[*common, "--trainer.callbacks+=tests.shared.test_cli_and_data._SigTermAtStep",
                      "--trainer.callbacks.init_args.at", "6"])  # fmt: skip
    last = tmp_path / "lightning_logs/tiny/checkpoints/last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 6  # mid-epoch 1 (4 steps an epoch)
    cli = run_cli(TinySegTask, SquaresDataModule, domain="tiny", monitor="val/loss", args=[*common, "--ckpt_path", "last"])
    assert cli.trainer.global_step == 10
