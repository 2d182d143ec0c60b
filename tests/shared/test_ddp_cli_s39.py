"""The end-of-fit lines of a ``ddp_spawn`` fit (its main process now has the worker's checkpoint paths, score
and step), and a misspelled nested option (a class's argument, a part of a dotted option, a config file's
key) ending in the short usage, one error line and the close option, as a misspelled top-level one does."""

from __future__ import annotations

import logging
import pickle
import re
import sys
from pathlib import Path

import pytest
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.strategies.launchers.multiprocessing import _WorkerOutput

from shared.cli import SuiteTrainer
from tests.helpers import REPO, run_cli
from tests.shared.tiny_task import SquaresDataModule, TinySegTask

pytestmark = pytest.mark.usefixtures("one_thread")

QUIET = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False, "accelerator": "cpu"}


def _report_lines(caplog) -> list[str]:
    lines = [line for r in caplog.records for line in r.getMessage().splitlines()]
    caplog.clear()
    return [line for line in lines if " checkpoint" in line and ": " in line]


def test_the_main_process_of_ddp_spawn_reports_the_workers_checkpoints(tmp_path, caplog):
    """Lightning's spawn launcher brought back the best checkpoint's path alone: the main process printed
    "best checkpoint: PATH" without its score and no "last checkpoint (step N)" line. Its results, as the
    worker hands them over (pickled), now give the lines the worker's own fit prints."""
    caplog.set_level(logging.INFO)
    checkpoint = {"dirpath": tmp_path / "ckpt", "monitor": "val/loss", "save_last": True}
    worker = SuiteTrainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1,
                          callbacks=[ModelCheckpoint(**checkpoint)], **QUIET)  # fmt: skip
    worker.fit(TinySegTask(), SquaresDataModule())
    in_worker = _report_lines(caplog)
    main = SuiteTrainer(strategy="ddp_spawn", devices=2, callbacks=[ModelCheckpoint(**checkpoint)], **QUIET)
    launcher = main.strategy.launcher
    output = _WorkerOutput(worker.checkpoint_callback.best_model_path, None, worker.state, None,
                           launcher.get_extra_results(worker))  # fmt: skip
    launcher._recover_results_in_main_process(pickle.loads(pickle.dumps(output)), main)
    main._report_checkpoints()
    best = re.escape(str(tmp_path / "ckpt" / "epoch=0-step=2.ckpt"))
    assert re.fullmatch(rf"best checkpoint \(val/loss \d\.\d+\): {best}", in_worker[0])
    assert in_worker[1] == f"last checkpoint (step 2): {tmp_path / 'ckpt' / 'last.ckpt'}"
    assert _report_lines(caplog) == in_worker
    assert main.global_step == 2


@pytest.mark.slow
def test_a_ddp_spawn_fit_prints_the_last_checkpoint(tmp_path):
    """Two CPU processes, ``--trainer.strategy ddp_spawn``, two steps of the tiny task (about 85 s here)."""
    ddp = ["--trainer.strategy", "ddp_spawn", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
    args = ["fit", *ddp, "--trainer.max_steps", "2", "--trainer.logger", "false", "--trainer.enable_progress_bar",
            "false", "--checkpoint.dirpath", str(tmp_path / "ckpt")]  # fmt: skip
    proc = run_cli("tests.shared.tiny_main", args, tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"last checkpoint (step 2): {tmp_path / 'ckpt' / 'last.ckpt'}" in proc.stderr
    assert re.search(r"best checkpoint \(val/loss \d\.\d+\): .*best-00-2\.ckpt", proc.stderr)


MEDICAL = REPO / "domains/medical/configs/unet.yaml"
DETECTION = REPO / "domains/driving/detection/configs/quick.yaml"


def _error_lines(module: str, config: Path, *args: str, capsys, monkeypatch) -> list[str]:
    """What ``python -m module fit -c config args`` writes before it exits with status 2 (parsed, not run)."""
    main = __import__(f"{module}.__main__", fromlist=["main"]).main
    monkeypatch.setattr(sys, "argv", ["python"])  # pytest's own arguments: Lightning warns of both given
    with pytest.raises(SystemExit) as stop:
        main(["fit", "-c", str(config), *args])
    assert stop.value.code == 2
    return capsys.readouterr().err.splitlines()


@pytest.mark.parametrize(
    ("module", "config", "args", "error", "suggestion"),
    [
        ("domains.medical", MEDICAL, ["--model.network.init_args.chanels", "[8]"],
         "unrecognized option: --model.network.init_args.chanels", "--model.network.init_args.channels"),
        ("domains.medical", MEDICAL, ["--model.optimizer.init_args.lrr=0.1"],
         "unrecognized option: --model.optimizer.init_args.lrr", "--model.optimizer.init_args.lr"),
        ("domains.driving.detection", DETECTION, ["--model.network.init_args.num_clases", "3"],
         "unrecognized option: --model.network.init_args.num_clases", "--model.network.init_args.num_classes"),
        ("domains.medical", MEDICAL, ["--model.netwrok.init_args.x", "1"],
         "unrecognized arguments: --model.netwrok.init_args.x 1", "--model.network.init_args.x"),
    ],
)  # fmt: skip
def test_a_misspelled_nested_option_gets_one_line_and_the_close_one(
    module, config, args, error, suggestion, capsys, monkeypatch
):
    """A class's argument printed the usage of every option (95 lines) and jsonargparse's three-line error; a
    misspelled part inside a dotted option got no suggestion (the whole name is close to none)."""
    lines = _error_lines(module, config, *args, capsys=capsys, monkeypatch=monkeypatch)
    given = error.split(": ")[1].split()[0]
    assert lines == [
        f"usage: python -m {module} fit [-h] [-c CONFIG] [options]  (python -m {module} fit --help lists them)",
        f"error: {error}",
        f"{given}: did you mean {suggestion}?",
    ]


def test_a_nested_option_close_to_none_gets_no_suggestion(capsys, monkeypatch):
    """Compared with the whole name, ``zzzz`` was "close" to ``encoder``: the shared head made them alike."""
    lines = _error_lines("domains.medical", MEDICAL, "--model.network.init_args.zzzz", "1", capsys=capsys,
                         monkeypatch=monkeypatch)  # fmt: skip
    assert lines[1:] == ["error: unrecognized option: --model.network.init_args.zzzz"]


def test_a_misspelled_key_in_a_config_file_gets_one_line_and_the_close_one(tmp_path, capsys, monkeypatch):
    (tmp_path / "data.yaml").write_text("data:\n  batchsize: 4\n")
    (tmp_path / "net.yaml").write_text("model:\n  network:\n    init_args:\n      chanels: [8]\n")
    lines = _error_lines("domains.medical", MEDICAL, "-c", str(tmp_path / "data.yaml"), capsys=capsys,
                         monkeypatch=monkeypatch)  # fmt: skip
    assert lines[1:] == [
        "error: Subcommand 'fit' does not accept option 'data.batchsize'",
        "--data.batchsize: did you mean --data.batch_size?",
    ]
    lines = _error_lines("domains.medical", MEDICAL, "-c", str(tmp_path / "net.yaml"), capsys=capsys,
                         monkeypatch=monkeypatch)  # fmt: skip
    assert lines[1:] == [
        "error: unrecognized option: --model.network.init_args.chanels",
        "--model.network.init_args.chanels: did you mean --model.network.init_args.channels?",
    ]
