"""What a run records to be repeated: a random ``--seed_everything true`` seed, the config and package versions in
each checkpoint (``--trainer.logger false`` runs share one overwritten config.yaml), a worker count left null."""

import importlib.metadata
import logging
from pathlib import Path

import pytest
import torch
import yaml

import shared.data
from shared.cli import ConfigError, _random_seed, run_cli
from shared.data import SplitLoaders
from tests.shared.tiny_task import SquaresDataModule, TinySegTask, make_squares

pytestmark = pytest.mark.usefixtures("one_thread")


class SquareSplits(SplitLoaders):
    """The tiny squares as a suite data module: ``num_workers`` null resolves as the domains' do."""

    def __init__(self, batch_size: int = 4, num_workers: int | None = None):
        super().__init__()
        self.save_hyperparameters()
        self.set_loader_options(batch_size, num_workers)

    def setup(self, stage=None):
        self.datasets = {"train": make_squares(8, seed=0), "val": make_squares(4, seed=1)}

    def _loader(self, *args, **kwargs):
        """The suite's loader, filled in this process whatever ``num_workers`` resolved to: the tests check
        the count resolved, said and recorded, not the workers (a worker process for each of a fit's loaders
        made the test 2-3 times slower)."""
        workers, self.num_workers = self.num_workers, 0
        try:
            return super()._loader(*args, **kwargs)
        finally:
            self.num_workers = workers


def tiny_cli(args, data=SquaresDataModule, run=False):
    return run_cli(TinySegTask, data, domain="tiny", monitor="val/loss", args=list(args), run=run)


def test_seed_everything_true_draws_a_new_seed_each_run_and_an_int_stays(tmp_path, monkeypatch, caplog):
    """Lightning's seed_everything(None) takes 0: every ``--seed_everything true`` run had seed 0."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    with caplog.at_level(logging.INFO):
        seeds = [tiny_cli(["--seed_everything", "true"]).config["seed_everything"] for _ in range(2)]
    assert all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**32 for s in seeds)
    assert seeds[0] != seeds[1], seeds  # two draws from 2**32 values
    assert f"--seed_everything true: seed {seeds[1]}, drawn at random" in caplog.text
    assert f"--seed_everything {seeds[1]} repeats it" in caplog.text
    assert tiny_cli(["--seed_everything", "7"]).config["seed_everything"] == 7
    assert tiny_cli(["--seed_everything", "1"]).config["seed_everything"] == 1  # an int, not True
    assert tiny_cli(["--seed_everything", "false"]).config["seed_everything"] is False


def test_a_ddp_rank_takes_rank_zeros_drawn_seed_and_outside_lightning_is_refused(monkeypatch):
    """Lightning's launcher starts ranks 1.. with rank 0's PL_GLOBAL_SEED; samplers shuffle by it, so a rank
    drawing its own seed would shuffle differently."""
    from pytorch_lightning.utilities import rank_zero_only

    monkeypatch.setattr(rank_zero_only, "rank", 1)
    monkeypatch.setenv("PL_GLOBAL_SEED", "123456")
    assert _random_seed() == 123456
    monkeypatch.delenv("PL_GLOBAL_SEED")
    with pytest.raises(ConfigError, match=r"rank 1 .*torchrun.*--seed_everything N"):
        _random_seed()


def test_each_checkpoint_carries_its_runs_config_versions_and_resolved_workers(tmp_path, monkeypatch, capsys, caplog):
    """With --trainer.logger false, two runs into one root dir overwrite one config.yaml: each checkpoint keeps its
    own run's config (seed drawn included), package versions and the worker count null resolved to, readable
    weights-only; the config given back with -c parses."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    monkeypatch.setattr(shared.data, "default_num_workers", lambda: 1)  # this machine's count, whatever it is
    root = tmp_path / "runs"
    fit = ["fit", "--trainer.logger", "false", "--trainer.default_root_dir", str(root), "--seed_everything", "true"]
    fit += ["--trainer.max_steps", "1", "--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false"]
    with caplog.at_level(logging.INFO):
        first = tiny_cli([*fit, "--model.optimizer.init_args.lr", "0.02"], data=SquareSplits, run=True)
    assert "--data.num_workers null: 1 loader workers" in caplog.text
    assert "--data.num_workers 1 reproduces this run's draws on another machine" in caplog.text
    second = tiny_cli([*fit, "--model.optimizer.init_args.lr", "0.5"], data=SquareSplits, run=True)
    seeds = [cli.config["fit"]["seed_everything"] for cli in (first, second)]
    assert seeds[0] != seeds[1]
    # config.yaml: the second run's only (and with the seed drawn, not true or 0)
    assert yaml.safe_load((root / "config.yaml").read_text())["seed_everything"] == seeds[1]
    for cli, seed, lr in zip((first, second), seeds, (0.02, 0.5), strict=True):
        path = cli.trainer.checkpoint_callback.last_model_path
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        config = yaml.safe_load(checkpoint["suite_config"])
        assert config["seed_everything"] == seed and config["trainer"]["max_steps"] == 1
        assert config["model"]["optimizer"]["init_args"]["lr"] == lr and config["data"]["num_workers"] is None
        assert checkpoint["suite_resolved"] == {"data.num_workers": 1}
        versions = checkpoint["suite_versions"]
        assert versions["torch"] == importlib.metadata.version("torch") == torch.__version__.split("+")[0]
        assert {"python", "pytorch_lightning", "numpy", "torchvision", "albumentations"} <= set(versions)
    # config.yaml's, but for the checkpoint folder: as given (the default), not the one derived under the root
    stored, written = yaml.safe_load(checkpoint["suite_config"]), yaml.safe_load((root / "config.yaml").read_text())
    assert written["checkpoint"]["dirpath"] == str(root / "tiny" / "checkpoints")
    assert stored["checkpoint"]["dirpath"] == "lightning_logs/tiny/checkpoints"
    assert stored | {"checkpoint": None} == written | {"checkpoint": None}
    (tmp_path / "again.yaml").write_text(checkpoint["suite_config"])
    # a rerun from it, given another root dir, writes there (the derived folder had pinned it into the first run's)
    rerun = tiny_cli(["fit", "-c", "again.yaml", "--trainer.default_root_dir", str(tmp_path / "elsewhere")],
                     data=SquareSplits, run=True)  # fmt: skip
    assert Path(rerun.trainer.checkpoint_callback.last_model_path).is_relative_to(tmp_path / "elsewhere")
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        tiny_cli(["fit", "-c", "again.yaml", "--print_config"], data=SquareSplits, run=True)
    assert done.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["seed_everything"] == seeds[1] and printed["model"]["optimizer"]["init_args"]["lr"] == 0.5


def test_a_given_worker_count_is_not_said_nor_recorded_as_resolved(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    fit = ["fit", "--trainer.logger", "false", "--data.num_workers", "0", "--trainer.max_steps", "1"]
    fit += ["--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false"]
    with caplog.at_level(logging.INFO):
        cli = tiny_cli(fit, data=SquareSplits, run=True)
    assert "--data.num_workers null" not in caplog.text
    checkpoint = torch.load(cli.trainer.checkpoint_callback.last_model_path, map_location="cpu", weights_only=True)
    assert checkpoint["suite_resolved"] == {} and yaml.safe_load(checkpoint["suite_config"])["data"]["num_workers"] == 0
