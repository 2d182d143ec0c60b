"""What a fit's terminal shows: the closing line of a fit that kept no best checkpoint (and no Lightning
"could not find the monitored key"), the model summary without a FLOPs column counting nothing, a progress
bar that redraws rarely in a log, ``fit --help``'s first screen, and the bf16 hint only for larger models."""

from __future__ import annotations

import io
import logging
import re
import warnings

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelSummary, Timer, TQDMProgressBar

from domains.medical.__main__ import main as medical_main
from shared import cli
from shared.checkpointing import LastIsLastCheckpoint
from shared.cli import SuiteTrainer, saved_checkpoint
from tests.shared.tiny_task import SquaresDataModule, TinySegTask

pytestmark = pytest.mark.usefixtures("one_thread")

QUIET = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False, "accelerator": "cpu"}


class _Linear(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(8, 4)

    def forward(self, x):
        return self.layer(x)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_fit_stopped_before_its_first_validation_says_so_and_points_to_last(tmp_path, caplog):
    """``max_steps`` 1 in a 4-step epoch: Lightning warned "could not find the monitored key ... HINT: Did you
    call log" and the closing lines named the last checkpoint alone; ``test --ckpt_path best`` then failed."""
    caplog.set_level(logging.INFO)
    callback = LastIsLastCheckpoint(dirpath=tmp_path, monitor="val/loss", save_last=True)
    trainer = SuiteTrainer(max_steps=1, callbacks=[callback], **QUIET)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(TinySegTask(), SquaresDataModule())
    assert not [w for w in caught if "could not find the monitored key" in str(w.message)]
    assert (
        "no best checkpoint: no validation ran before the fit stopped (step 1, --trainer.max_steps 1 was "
        "reached; an epoch is 4 steps): test with --ckpt_path last"
    ) in caplog.text
    with pytest.raises(FileNotFoundError) as err:
        saved_checkpoint("best", tmp_path)
    said = str(err.value)
    assert "no validation ran before its fit stopped" in said and "--ckpt_path last takes" in said
    assert said.count("give --ckpt_path FILE") == 1


def test_the_model_summary_leaves_out_flops_it_did_not_count(caplog):
    """Lightning 2.6 counts FLOPs only with an ``example_input_array``: ``FLOPs 0`` on every row otherwise."""
    caplog.set_level(logging.INFO)
    trainer = SuiteTrainer(logger=False, enable_progress_bar=False, accelerator="cpu")
    summary = next(c for c in trainer.callbacks if isinstance(c, ModelSummary))
    module = _Linear()
    summary.on_fit_start(trainer, module)
    assert "Total params" in caplog.text
    assert "FLOPs" not in caplog.text and "Total Flops" not in caplog.text
    caplog.clear()
    module.example_input_array = torch.zeros(2, 8)  # counted: the column stays, with real figures
    summary.on_fit_start(trainer, module)
    total = re.search(r"^(\S+)\s+Total Flops$", caplog.text, re.MULTILINE)
    assert "FLOPs" in caplog.text and total and total.group(1) != "0"


def test_a_progress_bar_into_a_log_redraws_rarely(monkeypatch):
    monkeypatch.setattr("sys.stdout", io.StringIO())
    monkeypatch.delenv("TQDM_MINITERS", raising=False)
    # a list of callbacks given, as the CLI gives: Lightning adds its defaults to that very list
    piped = SuiteTrainer(callbacks=[Timer(duration="00:00:01:00")], logger=False, accelerator="cpu")
    assert any(isinstance(c, cli._SummaryWithoutUncountedFlops) for c in piped.callbacks)
    assert piped.progress_bar_callback.refresh_rate >= 50  # a redraw per 50 batches or fewer
    # the user's own choices are kept: an explicit enable_progress_bar, a bar given as a callback
    assert SuiteTrainer(**{**QUIET, "enable_progress_bar": True}).progress_bar_callback.refresh_rate == 1
    own = TQDMProgressBar(refresh_rate=3)
    assert SuiteTrainer(callbacks=[own], logger=False, accelerator="cpu").progress_bar_callback is own
    monkeypatch.setattr("sys.stdout", _Terminal())
    assert SuiteTrainer(logger=False, accelerator="cpu").progress_bar_callback.refresh_rate == 1


def test_fit_help_opens_with_the_domain_description_not_every_option(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    with pytest.raises(SystemExit):
        medical_main(["fit", "--help"])
    text = capsys.readouterr().out
    head = text.splitlines()[:20]
    assert head[0].startswith("usage: python -m domains.medical fit [-h] [-c CONFIG]") and head[1] == ""
    first = " ".join(" ".join(head).split())
    assert "fit: train (and validate) the model" in first
    assert "Example: python -m domains.medical fit -c domains/medical/configs/" in first
    titles = [line for line in text.splitlines() if line and not line.startswith(" ") and line.endswith(":")]
    assert titles and not [t for t in titles if "``" in t]
    assert "``" not in first


def test_the_bf16_hint_is_for_models_of_a_million_parameters_or_more(monkeypatch):
    """It printed the Prob. U-Net's figures on the 112 K-parameter accident model too."""
    monkeypatch.setattr(cli, "cpu_has_bf16_units", lambda: True)
    trainer = SuiteTrainer(**QUIET)
    small, large = torch.nn.Linear(300, 300), torch.nn.Linear(1000, 1000)
    assert cli._parameter_count(small) < cli._BF16_HINT_PARAMETERS <= cli._parameter_count(large)
    assert not cli._bf16_hint_applies(trainer, small)
    assert cli._bf16_hint_applies(trainer, large)
