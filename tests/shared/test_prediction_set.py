"""``PredictionSet``: a predict folder holds one whole run (a failed, interrupted or killed run leaves the set
before it), and files no run wrote stay. A toy module writes ``pred_<i>.txt`` per batch, as the task writers do."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.exceptions import SIGTERMException
from torch.utils.data import DataLoader

from shared import cli
from shared.files import written_whole
from shared.prediction_set import PredictionSet
from tests.helpers import quiet_trainer


class Writer(pl.LightningModule):
    """Writes ``<prefix>_<batch>.txt`` holding ``tag`` per batch into ``predict_dir``; raises at ``fail_at``."""

    def __init__(self, predict_dir: Path, tag: str, fail_at: int | None = None, prefix: str = "pred"):
        super().__init__()
        self.predict_dir, self.tag, self.fail_at, self.prefix = predict_dir, tag, fail_at, prefix
        self.layer = torch.nn.Linear(1, 1)

    def predict_step(self, batch, batch_idx):
        if batch_idx == self.fail_at:
            raise ValueError(f"batch {batch_idx} is corrupt")
        Path(self.predict_dir).mkdir(parents=True, exist_ok=True)
        with written_whole(Path(self.predict_dir) / f"{self.prefix}_{batch_idx}.txt") as tmp:  # as the writers
            tmp.write_text(self.tag)


def predict(out: Path, tag: str, fail_at: int | None = None, batches: int = 3, callbacks=(), prefix="pred"):
    trainer = quiet_trainer(callbacks=[PredictionSet(), *callbacks])
    trainer.predict(Writer(out, tag, fail_at, prefix), DataLoader(torch.zeros(batches, 1), batch_size=1))


def contents(folder: Path) -> dict[str, str]:
    """Every file under ``folder``, hidden ones too (a leftover aside folder or journal shows here)."""
    return {p.relative_to(folder).as_posix(): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def run_a(out: Path) -> dict[str, str]:
    predict(out, "A")
    (out / "mine.txt").write_text("mine")
    return contents(out)


def test_a_failed_run_puts_the_earlier_set_back_and_a_finished_one_replaces_it(tmp_path):
    out = tmp_path / "pred"
    first = run_a(out)
    assert json.loads(first[".predictions.json"]) == ["pred_0.txt", "pred_1.txt", "pred_2.txt"]
    with pytest.raises(ValueError, match="batch 1 is corrupt"):
        predict(out, "B", fail_at=1)
    assert contents(out) == first  # pred_0 of B gone, A back whole, no aside folder or journal left
    predict(out, "C", batches=2)
    assert contents(out) == {".predictions.json": '[\n"pred_0.txt",\n"pred_1.txt"\n]', "mine.txt": "mine",
                             "pred_0.txt": "C", "pred_1.txt": "C"}  # fmt: skip


def test_a_move_that_fails_at_the_start_touches_nothing(tmp_path, monkeypatch):
    """A file the earlier set holds open (Windows) stopped the move half-way: every file under the folder then
    counted as the failed run's and was deleted, the user's own with it."""
    out = tmp_path / "pred"
    first = run_a(out)
    real, calls = cli.os.replace, []

    def replace(src, dst):
        calls.append(src)
        if len(calls) == 2:
            raise PermissionError(13, "in use", str(src))
        real(src, dst)

    monkeypatch.setattr(cli.os, "replace", replace)
    with pytest.raises(PermissionError):
        predict(out, "B")
    monkeypatch.setattr(cli.os, "replace", real)
    assert contents(out) == first


def test_an_error_after_the_set_is_complete_keeps_it(tmp_path):
    """A callback failing after PredictionSet's on_predict_end: the new set and the old were both deleted."""

    class FailsAtEnd(pl.Callback):
        def on_predict_end(self, trainer, pl_module):
            raise RuntimeError("teardown failed")

    out = tmp_path / "pred"
    run_a(out)
    with pytest.raises(RuntimeError, match="teardown failed"):
        predict(out, "B", callbacks=[FailsAtEnd()])
    assert {k: v for k, v in contents(out).items() if k.startswith("pred_")} == {f"pred_{i}.txt": "B" for i in range(3)}


def test_a_folder_of_an_earlier_version_is_taken_over_by_one_finished_run(tmp_path):
    """Files of the same names, no manifest: the outputs written over them were never "new", so no manifest was
    ever written and a failed run left a mix."""
    out = tmp_path / "pred"
    out.mkdir()
    for i in range(3):
        (out / f"pred_{i}.txt").write_text("old")
    predict(out, "A")
    assert json.loads((out / ".predictions.json").read_text()) == ["pred_0.txt", "pred_1.txt", "pred_2.txt"]
    with pytest.raises(ValueError):
        predict(out, "B", fail_at=2)
    assert {k: v for k, v in contents(out).items() if k.startswith("pred_")} == {f"pred_{i}.txt": "A" for i in range(3)}


def test_a_killed_run_is_rolled_back_when_the_next_one_starts(tmp_path):
    """A run killed outright (no exception to catch) left the earlier set in a hidden folder and its own
    partial files beside the next run's set."""
    out = tmp_path / "pred"
    first = run_a(out)
    killed = PredictionSet()  # started, wrote one file, never ended
    killed.on_predict_start(quiet_trainer(), Writer(out, "B"))
    with written_whole(out / "pred_0.txt") as tmp:
        tmp.write_text("B")
    (out / "notes_after_the_kill.txt").write_text("mine")  # made later: not the killed run's to remove
    assert (out / ".predictions-previous").is_dir()
    with (
        pytest.warns(UserWarning, match="an earlier predict run there stopped before it finished"),
        pytest.raises(ValueError, match="batch 0"),
    ):
        predict(out, "C", fail_at=0)  # puts the earlier set back, then fails itself at once
    assert contents(out) == {**first, "notes_after_the_kill.txt": "mine"}
    (out / ".git").mkdir()
    (out / ".git" / "HEAD").write_text("ref")  # a hidden folder is neither listed nor moved
    predict(out, "D")
    assert sorted(contents(out)) == [".git/HEAD", ".predictions.json", "mine.txt", "notes_after_the_kill.txt", "pred_0.txt",
                                     "pred_1.txt", "pred_2.txt"]  # fmt: skip


def test_a_file_that_grows_during_the_run_is_not_the_runs(tmp_path):
    """A log in the folder (`predict ... > out/predict.log`) changed during the run: it was listed as the run's
    and the next run deleted it."""

    class Log(pl.Callback):
        def on_predict_batch_end(self, trainer, *args):
            with (out / "predict.log").open("a") as log:
                log.write("batch\n")

    out = tmp_path / "pred"
    out.mkdir()
    (out / "predict.log").write_text("start\n")
    predict(out, "A", callbacks=[Log()])
    assert json.loads((out / ".predictions.json").read_text()) == ["pred_0.txt", "pred_1.txt", "pred_2.txt"]
    predict(out, "B")
    assert (out / "predict.log").read_text().count("batch") == 3


def test_a_failed_first_run_leaves_no_folder(tmp_path):
    with pytest.raises(ValueError):
        predict(tmp_path / "new" / "pred", "A", fail_at=2)
    assert not (tmp_path / "new" / "pred").exists()
    (tmp_path / "mine").mkdir()  # a folder the user made stays, empty as it was
    with pytest.raises(ValueError):
        predict(tmp_path / "mine", "A", fail_at=2)
    assert (tmp_path / "mine").is_dir() and not any((tmp_path / "mine").iterdir())


def test_a_manifest_naming_paths_outside_the_folder_moves_nothing(tmp_path):
    out = tmp_path / "pred"
    out.mkdir()
    (tmp_path / "outside.txt").write_text("not ours")
    (out / ".predictions.json").write_text(json.dumps(["../outside.txt"]))
    with pytest.raises(cli.ConfigError, match=r"entry '\.\./outside\.txt' is not a plain relative name"):
        predict(out, "B")
    assert (tmp_path / "outside.txt").read_text() == "not ours" and not (out / "outside.txt").exists()


def test_a_run_killed_while_moving_the_set_aside_is_rolled_back_too(tmp_path):
    """Killed after moving one file and before writing its journal: the aside folder alone says so."""
    out = tmp_path / "pred"
    first = run_a(out)
    (out / ".predictions-previous").mkdir()
    (out / "pred_0.txt").replace(out / ".predictions-previous" / "pred_0.txt")
    with (
        pytest.warns(UserWarning, match="stopped before it finished"),
        pytest.raises(ValueError, match="batch 0"),
    ):
        predict(out, "C", fail_at=0)
    assert contents(out) == first


class _SigTermAt(pl.Callback):
    """``docker stop`` at batch ``at``: a real SIGTERM to this process, caught by Lightning's handler; counts
    the batches that started."""

    def __init__(self, at: int = 1):
        self.at, self.started = at, 0

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.started += 1
        if batch_idx == self.at:
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_stops_the_run_after_the_batch_in_hand_and_puts_the_earlier_set_back(tmp_path):
    """Lightning's SIGTERM handler only sets a flag, which its predict loop never read: the run went on to its
    end (writing batches 2, 3, ...) or to the SIGKILL that follows ``docker stop``."""
    out = tmp_path / "pred"
    first = run_a(out)
    stop = _SigTermAt(1)
    with pytest.raises(SIGTERMException):
        predict(out, "B", batches=5, callbacks=[stop])
    assert stop.started == 2  # stopped after batch 1, not at the end
    assert contents(out) == first  # both of B's files gone, A back whole
    # at the last batch the set is whole: it is kept (as Lightning's evaluation loop, which checks before it)
    last = _SigTermAt(2)
    predict(out, "C", batches=3, callbacks=[last])
    assert {k: v for k, v in contents(out).items() if k.startswith("pred_")} == {f"pred_{i}.txt": "C" for i in range(3)}
