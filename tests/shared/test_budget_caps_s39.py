"""s39: a time budget that ends a run says so and the checkpoint keeps its end (Lightning said only
"`max_steps=41` reached", a limit never set); a cap given by key (``--data.max_items.val 4``) reaches
``check_cap`` as the string '4' and is read as 4."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from shared.budget import FitScheduleToBudget
from shared.data import check_cap
from tests.helpers import quiet_trainer, tiny_medical_args
from tests.shared.test_budget import FakeClock
from tests.shared.tiny_task import SquaresDataModule, TinySegTask

pytestmark = pytest.mark.usefixtures("one_thread")


def _fit_and_save(callback, tmp_path: Path, caplog, **trainer_kwargs) -> tuple[list[str], dict, int]:
    """Fit the tiny task under ``callback``: the lines that say the budget ended it, the checkpoint saved
    after, the steps run."""
    trainer = quiet_trainer(callbacks=[callback], **trainer_kwargs)
    with caplog.at_level(logging.INFO):
        trainer.fit(TinySegTask(), SquaresDataModule(n_train=16, batch_size=4))
    trainer.save_checkpoint(tmp_path / "end.ckpt")
    checkpoint = torch.load(tmp_path / "end.ckpt", weights_only=True)
    lines = [r.getMessage() for r in caplog.records if "ended the run" in r.getMessage()]
    return lines, checkpoint, trainer.global_step


def test_max_time_ending_the_run_is_said_with_its_step_and_kept_in_the_checkpoint(tmp_path, caplog):
    # max_time leaves ~3600 s; the fake clock says 100 s per step: at step 5 (500 s) 3100 s less the
    # start-up remain, 30 more steps: end 35 of the 100 planned, the same at every later check
    callback = FitScheduleToBudget(seconds=None, every=5, window=10, clock=FakeClock([0.0, 500.0]))
    lines, checkpoint, steps = _fit_and_save(callback, tmp_path, caplog, max_steps=100, max_time={"hours": 1})
    assert steps == 35
    assert lines == [
        (
            "--trainer.max_time: the time budget ended the run at step 35 of the 100 first planned "
            "(Lightning's `max_steps=35` is this end, no setting; shared.budget.FitScheduleToBudget)"
        )
    ]
    assert checkpoint["suite_time_budget"] == {"end_step": 35, "planned_steps": 100}
    assert "callbacks" not in checkpoint or "FitScheduleToBudget" not in checkpoint["callbacks"]


def test_a_given_budget_ending_the_run_is_said_too(tmp_path, caplog):
    # 2 s per step: after 5 steps (10 s) 20 s remain for 10 more (tests/shared/test_budget.py)
    callback = FitScheduleToBudget(seconds=30, every=5, window=10, clock=FakeClock([0.0, 10.0]))
    lines, checkpoint, steps = _fit_and_save(callback, tmp_path, caplog, max_steps=100)
    assert steps == 15
    assert lines and lines[0].startswith("the 30 s budget ended the run at step 15 of the 100 first planned ")
    assert checkpoint["suite_time_budget"] == {"end_step": 15, "planned_steps": 100}


def test_a_run_that_ends_at_its_plan_is_not_said_to_be_ended_by_the_budget(tmp_path, caplog):
    # 0.001 s per step under ~3600 s: the time holds the 12 planned steps, the trainer's plan ends the run
    callback = FitScheduleToBudget(seconds=None, every=5, window=10, clock=FakeClock([0.0, 0.005]))
    lines, checkpoint, steps = _fit_and_save(callback, tmp_path, caplog, max_steps=12, max_time={"hours": 1})
    assert steps == 12 and lines == []
    assert checkpoint["suite_time_budget"] == {"end_step": None, "planned_steps": 12}


@pytest.mark.parametrize(
    "given, read", [("4", 4), (" 12 ", 12), ("none", None), ("None", None), (3, 3), (None, None)]
)
def test_a_cap_written_as_a_string_is_read_as_its_number(given, read):
    assert check_cap(given, "--data.max_items (val)") == read


@pytest.mark.parametrize("bad", ["4.5", "-1", "abc", "0", "", 0, 2.5, True])
def test_other_caps_are_still_refused_with_the_same_message(bad):
    with pytest.raises(ValueError) as err:
        check_cap(bad, "--data.max_items (val)")
    expected = f"--data.max_items (val): a cap is a whole number >= 1, or null for all, got {bad!r}"
    assert str(err.value) == expected


def test_dotted_cap_options_cap_their_split_through_the_cli(lidc, tmp_path, monkeypatch):
    """``--data.max_items.val 1`` was refused ("got '1'"): jsonargparse passes a key of a
    ``dict | int | None`` option as a string. The lidc fixture holds 12 train and 2 val images."""
    from domains.medical.__main__ import main

    monkeypatch.chdir(tmp_path)
    config = Path(__file__).resolve().parents[2] / "domains" / "medical" / "configs" / "unet.yaml"
    caps = ["--data.max_items.train", "4", "--data.max_items.val", "1", "--data.max_items.test", "null"]
    cli = main(["fit", *tiny_medical_args(lidc, config, "unet", 1, *caps), "--trainer.fast_dev_run", "1"])
    assert cli.trainer.state.finished
    sizes = {split: len(dataset) for split, dataset in cli.datamodule.datasets.items()}
    assert sizes == {"train": 4, "val": 1}
