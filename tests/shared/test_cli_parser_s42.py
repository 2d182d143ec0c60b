"""A command builds the parser of the sub-command it runs only (SuiteCLI.subcommands): each of the four holds
every Trainer, task and data module option, and building all four was a third of a tiny fit's CPU time."""

from __future__ import annotations

import sys

import pytest
import torch
import yaml

from shared.cli import SuiteCLI, _named_subcommand, run_cli
from shared.cli_help import run_domain
from tests.shared.test_cli_logs_s40 import QUIET, SquaresWithTest, TinySegTaskWithTest

FOUR = ["fit", "validate", "test", "predict"]
TINY = {"prog": "python -m tiny", "description": "Tiny.", "task": "tests.shared.tiny_task:TinySegTask",
        "data": "tests.shared.tiny_task:SquaresDataModule", "domain": "tiny", "monitor": "val/loss"}


@pytest.fixture
def built(monkeypatch):
    """The sub-commands whose parser a command builds, in order."""
    monkeypatch.setattr(sys, "argv", ["python"])  # pytest's own arguments are no command's
    names: list[str] = []
    prepare = SuiteCLI._prepare_subcommand_parser

    def recording(self, klass, subcommand, **kwargs):
        names.append(subcommand)
        return prepare(self, klass, subcommand, **kwargs)

    monkeypatch.setattr(SuiteCLI, "_prepare_subcommand_parser", recording)
    return names


@pytest.mark.parametrize("subcommand", FOUR)
def test_a_command_builds_only_the_parser_of_its_subcommand(subcommand, built, capsys):
    with pytest.raises(SystemExit) as stop:
        run_domain([subcommand, "--help"], **TINY)
    assert stop.value.code == 0 and built == [subcommand]
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m tiny {subcommand} [-h] [-c CONFIG] [--print_config] [options]")
    if subcommand == "predict":  # the suite's default and help survive
        assert "Keep what each predict_step returns until the end" in out
        assert "(type: Optional[bool], default: False)" in " ".join(out.split())


@pytest.mark.parametrize("args", [["fti"], ["fti", "--trainer.max_epochs", "1"]])
def test_an_unknown_subcommand_still_lists_all_four(args, built, capsys):
    with pytest.raises(SystemExit) as stop:
        run_domain(args, **TINY)
    assert stop.value.code == 2 and built == FOUR
    assert "invalid choice: 'fti' (choose from 'fit', 'validate', 'test', 'predict')" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, named",
    [
        (["fit", "-c", "a.yaml"], "fit"),
        (["--print_config", "test", "--ckpt_path", "none"], "test"),
        (["--print_config=skip_null", "predict"], "predict"),
        (["--bogus", "validate"], "validate"),  # validate's parser names the unknown option, as before
        ([], None),
        (["fti"], None),
        (["-c", "all.yaml", "fit"], None),  # a top-level config file may hold every sub-command's section
        (["--config=all.yaml", "fit"], None),
        (["-call.yaml", "fit"], None),
        (["-h", "fit"], None),  # the top-level help lists every sub-command
        (["--print_config", "skip_null", "fit"], None),
        ({"fit": {}}, None),
    ],
)
def test_named_subcommand(args, named):
    assert _named_subcommand(args) == named


def test_subcommands_on_the_class_are_all_four():
    assert list(SuiteCLI.subcommands()) == FOUR
    assert SuiteCLI.subcommands()["fit"] == {"model", "train_dataloaders", "val_dataloaders", "datamodule"}


def test_a_fit_written_config_runs_test(tmp_path, monkeypatch, built):
    """config.yaml, as a fit writes it (parsed by fit's parser alone), is read by test's parser alone."""
    monkeypatch.chdir(tmp_path)
    common = [*QUIET, "--trainer.logger", "false", "--checkpoint.dirpath", "ckpt"]
    run_cli(TinySegTaskWithTest, SquaresWithTest, domain="tiny", monitor="val/loss",
            args=["fit", "--trainer.max_steps", "1", "--trainer.limit_val_batches", "1", "--data.batch_size", "2",
                  *common])  # fmt: skip
    (config,) = tmp_path.rglob("config.yaml")
    assert yaml.safe_load(config.read_text())["data"]["batch_size"] == 2
    cli = run_cli(TinySegTaskWithTest, SquaresWithTest, domain="tiny", monitor="val/loss",
                  args=["test", "-c", str(config), "--ckpt_path", "last", *QUIET])  # fmt: skip
    assert built == ["fit", "test"]
    assert cli.datamodule.batch_size == 2 and torch.isfinite(cli.trainer.callback_metrics["test/loss"])


def test_settings_from_the_environment_build_all_four(built, monkeypatch, tmp_path, capsys):
    """A config in PL_CONFIG (with JSONARGPARSE_DEFAULT_ENV) may hold a section for every sub-command: with one
    parser built, its test: section ended a fit with "not accepted before subcommand 'fit'"."""
    config = tmp_path / "all.yaml"
    config.write_text(yaml.safe_dump({"fit": {"trainer": {"max_epochs": 1}}, "test": {"trainer": {"max_epochs": 2}}}))
    monkeypatch.setenv("JSONARGPARSE_DEFAULT_ENV", "true")
    monkeypatch.setenv("PL_CONFIG", str(config))
    with pytest.raises(SystemExit) as stop:
        run_domain(["fit", "--print_config"], **TINY)
    assert stop.value.code == 0 and built == FOUR
    assert "max_epochs: 1" in capsys.readouterr().out
