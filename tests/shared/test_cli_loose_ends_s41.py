"""Loose ends of the CLI (task clismall): a Trainer argument Lightning refuses is named as the option typed
(``--trainer.devices``), one line, exit 2; ``ConfigError`` lives in :mod:`shared.cli_help` so that
:mod:`shared.cli` imports :mod:`shared.prediction_set` at the top; the TensorBoard HPARAMS values written."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pytorch_lightning.accelerators import CUDAAccelerator
from pytorch_lightning.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

import shared.cli
import shared.cli_help
import shared.prediction_set
from shared.cli import _missing_package, _start_tensorboard_session, _trainer_argument, run_cli
from shared.cli_help import report_input_errors
from tests.helpers import REPO
from tests.shared.tiny_task import SquaresDataModule, TinySegTask

pytestmark = pytest.mark.usefixtures("one_thread")

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


# --------------------------------------------------------- 1: a Trainer argument Lightning refuses, as typed


@pytest.mark.parametrize(
    ("message", "argument"),
    [
        ("`devices` selected with `CPUAccelerator` should be an int > 0.", "devices"),
        ("`Trainer(devices='0')` value is not a valid input using cpu accelerator.", "devices"),
        ("You selected an invalid accelerator name: `accelerator='foo'`. Available names: cpu.", "accelerator"),
        ("You have passed invalid value -1 for limit_train_batches, it has to be in [0.0, 1.0].",
         "limit_train_batches"),
        ("No supported gpu backend found!", None),  # names no argument
        ("`Timer(duration='abc')` is not a valid duration.", None),  # Timer's, not the Trainer's
        ("`devices` and `num_nodes` do not fit", None),  # two: not tied to one
    ],
)
def test_the_trainer_argument_a_lightning_message_names(message, argument):
    assert _trainer_argument(message) == argument


@pytest.mark.parametrize(
    ("given", "line"),
    [
        (["--trainer.devices", "1.5"],
         "--trainer.devices: `devices` selected with `CPUAccelerator` should be an int > 0. (got '1.5')"),
        (["--trainer.devices", "0"],
         "--trainer.devices: `Trainer(devices='0')` value is not a valid input using cpu accelerator."),
        (["--trainer.accelerator", "foo"],
         "--trainer.accelerator: You selected an invalid accelerator name: `accelerator='foo'`."),
    ],
    ids=["devices-1.5", "devices-0", "accelerator-foo"],
)
def test_a_trainer_argument_lightning_refuses_is_named_as_typed(tmp_path, monkeypatch, capsys, given, line):
    """Lightning's message named ``devices`` after ``error: TypeError:`` and a "raised at" line, exit 1."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["python"])
    monkeypatch.delenv("SUITE_TRACEBACK", raising=False)
    with pytest.raises(SystemExit) as stop, report_input_errors():
        run_cli(TinySegTask, SquaresDataModule, domain="tiny", monitor="val/loss", prog="tiny",
                args=["fit", "--trainer.accelerator", "cpu", *given, *QUIET])  # fmt: skip
    assert stop.value.code == 2
    (said,) = capsys.readouterr().err.splitlines()
    assert said.startswith(f"tiny fit: {line}"), said


def _refused(monkeypatch, capsys, given: list[str], code: int = 2) -> list[str]:
    """The stderr lines of a tiny fit given ``given`` (after ``--trainer.accelerator cpu``), which must end
    with exit status ``code``."""
    monkeypatch.setattr(sys, "argv", ["python"])
    monkeypatch.delenv("SUITE_TRACEBACK", raising=False)
    with pytest.raises(SystemExit) as stop, report_input_errors():
        run_cli(TinySegTask, SquaresDataModule, domain="tiny", monitor="val/loss", prog="tiny",
                args=["fit", "--trainer.accelerator", "cpu", *given, *QUIET])  # fmt: skip
    said = capsys.readouterr().err.splitlines()
    assert stop.value.code == code, said
    return said


def test_a_lightning_error_naming_no_trainer_argument_keeps_its_report(tmp_path, monkeypatch, capsys):
    """``--trainer.strategy fsdp`` with ``--trainer.accelerator cpu`` given: Lightning's message quotes both
    values ("The strategy `fsdp` requires a GPU accelerator, but received `accelerator='cpu'`"), so neither is
    named alone."""
    monkeypatch.chdir(tmp_path)
    said = _refused(monkeypatch, capsys, ["--trainer.strategy", "fsdp"], code=1)
    assert said[0].startswith("error: ValueError: The strategy `fsdp` requires a GPU accelerator"), said


# ---------------------------------------------- 1b: named where the message does not say it alone (trainerargs)


@pytest.mark.parametrize(
    ("message", "given", "argument"),
    [
        ("The strategy `fsdp` requires a GPU accelerator, but received `accelerator='cpu'`.",
         {"strategy": "fsdp", "accelerator": "auto"}, "strategy"),
        ("The strategy `fsdp` requires a GPU accelerator, but received `accelerator='cpu'`.",
         {"strategy": "fsdp", "accelerator": "cpu"}, None),  # both values quoted: not told apart
        ("`devices` and `num_nodes` do not fit", {"devices": 1, "num_nodes": 10}, None),  # 1 is not in 10
        ("`devices=2` and `num_nodes` do not fit", {"devices": 2, "num_nodes": 1}, "devices"),
    ],
    ids=["fsdp-auto", "fsdp-cpu", "neither", "devices"],
)
def test_of_several_trainer_arguments_named_the_one_whose_value_is_quoted(message, given, argument):
    assert _trainer_argument(message, given) == argument


def test_strategy_refused_on_cpu_names_strategy_without_the_auto_accelerator(tmp_path, monkeypatch, capsys):
    """It named ``--trainer.accelerator`` and ended "(got 'auto')", while Lightning's message said
    ``accelerator='cpu'``; the user had typed ``--trainer.strategy fsdp``."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(CUDAAccelerator, "is_available", staticmethod(lambda: False))  # auto is the CPU
    (said,) = _refused(monkeypatch, capsys, ["--trainer.accelerator", "auto", "--trainer.strategy", "fsdp"])
    assert said.startswith("tiny fit: --trainer.strategy: The strategy `fsdp` requires a GPU accelerator"), said
    assert said.endswith("to use FSDP."), said  # no "(got ...)": fsdp is in the message


@pytest.fixture
def one_fake_gpu(monkeypatch):
    """Lightning sees one CUDA device (no GPU needed), as the audit's fakegpu.py stubbed it."""
    import lightning_fabric.accelerators.cuda as fabric_cuda

    monkeypatch.setattr(CUDAAccelerator, "is_available", staticmethod(lambda: True))
    monkeypatch.setattr(fabric_cuda, "num_cuda_devices", lambda: 1)
    monkeypatch.setattr(fabric_cuda, "_check_cuda_matmul_precision", lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


@pytest.mark.parametrize(
    ("devices", "line"),
    [
        ("1.5", "tiny fit: --trainer.devices: invalid literal for int() with base 10: '1.5'"),
        ("3", "tiny fit: --trainer.devices: You requested gpu: [0, 1, 2] But your machine only has: [0] (got '3')"),
    ],
)
def test_gpu_devices_lightning_refuses_are_named(tmp_path, monkeypatch, capsys, one_fake_gpu, devices, line):
    """Lightning's GPU device parser names no argument: "error: ValueError: invalid literal for int()", and a
    two-line "You requested gpu: [0, 1, 2]\n But your machine only has: [0]", exit 1."""
    monkeypatch.chdir(tmp_path)
    said = _refused(monkeypatch, capsys, ["--trainer.accelerator", "gpu", "--trainer.devices", devices])
    assert said == [line]


def test_accumulate_grad_batches_below_one_is_refused_before_training(tmp_path, monkeypatch, capsys):
    """0 was taken, and the fit failed at its first step with a ZeroDivisionError traceback."""
    monkeypatch.chdir(tmp_path)
    said = _refused(monkeypatch, capsys, ["--trainer.accumulate_grad_batches", "0"])
    line = (
        "tiny fit: --trainer.accumulate_grad_batches: `accumulate_grad_batches` must be an int >= 1 "
        "(1: the optimizer steps every batch) (got 0)"
    )
    assert said == [line]


def test_a_precision_whose_package_is_missing_names_option_and_package(tmp_path, monkeypatch, capsys):
    """It was a ModuleNotFoundError traceback from Lightning's TransformerEnginePrecision."""
    if importlib.util.find_spec("transformer_engine") is not None:
        pytest.skip("transformer_engine is installed: nothing is missing")
    monkeypatch.chdir(tmp_path)
    (said,) = _refused(monkeypatch, capsys, ["--trainer.precision", "transformer-engine"])
    assert said.startswith("tiny fit: --trainer.precision: needs the package transformer_engine>="), said
    assert "pip install -U 'transformer_engine>=" in said and said.endswith("(got 'transformer-engine')"), said


def test_a_missing_module_is_said_as_the_package_to_install():
    assert _missing_package(ModuleNotFoundError("No module named 'te'", name="te")) == (
        "needs the package te, which is not installed: pip install -U 'te'"
    )


@pytest.mark.parametrize("max_time", ["1:00", "abc"])
def test_a_max_time_lightning_refuses_is_named_with_the_formats_it_takes(tmp_path, monkeypatch, capsys, max_time):
    """Lightning's Timer named ``Timer(duration='1:00')``, exit 1."""
    monkeypatch.chdir(tmp_path)
    (said,) = _refused(monkeypatch, capsys, ["--trainer.max_time", max_time])
    assert said == ('tiny fit: --trainer.max_time: expected a duration "DD:HH:MM:SS" (00:12:00:00: 12 hours) or a '
                    f"mapping of days, hours, minutes and seconds ({{hours: 12}}) (got {max_time!r})")  # fmt: skip


# ------------------------------------------------- 2: ConfigError in cli_help, PredictionSet imported at the top


def test_config_error_is_one_class_wherever_imported_and_prediction_set_is_a_top_level_import():
    assert shared.cli.ConfigError is shared.cli_help.ConfigError is shared.prediction_set.ConfigError
    assert shared.cli.PredictionSet is shared.prediction_set.PredictionSet


@pytest.mark.slow  # a fresh interpreter importing torch and Lightning: 4-12 s
def test_prediction_set_then_cli_import_without_a_cycle():
    """Imported first, shared.prediction_set must not import shared.cli (which imports it back at the top)."""
    code = (
        "import shared.prediction_set, shared.cli, sys; "
        "assert 'shared.cli' in sys.modules and shared.cli.PredictionSet is shared.prediction_set.PredictionSet"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]


# ------------------------------------------------------------------ 3: the HPARAMS values TensorBoard gets


def _session_start(tmp_path: Path, settings: dict) -> dict:
    """The hparams of the session-start record :func:`_start_tensorboard_session` writes: name -> (kind, value)."""
    logger = TensorBoardLogger(tmp_path, name="", version=0)
    _start_tensorboard_session(logger, settings)
    (events,) = Path(logger.log_dir).glob("events.*")
    for event in EventFileLoader(str(events)).Load():
        for value in event.summary.value:
            if value.tag == "_hparams_/session_start_info":
                info = HParamsPluginData.FromString(value.metadata.plugin_data.content).session_start_info
                return {k: (v.WhichOneof("kind"), getattr(v, v.WhichOneof("kind"))) for k, v in info.hparams.items()}
    raise AssertionError(f"{events}: no session start record")


def test_hparams_values_are_written_as_before(tmp_path):
    """What the suite's own settings hold (numbers, text, lists, paths, None) is written as it was."""
    settings = {"lr": 0.001, "max_epochs": 8, "augment": True, "name": "unet", "ckpt_path": None,
                "channels": [16, 32], "path": Path("data/x"), "opt": {"a": 1}}  # fmt: skip
    assert _session_start(tmp_path, settings) == {
        "lr": ("number_value", 0.001), "max_epochs": ("number_value", 8.0), "augment": ("number_value", 1.0),
        "name": ("string_value", "unet"), "channels": ("string_value", "[16, 32]"),
        "path": ("string_value", "data/x"), "opt": ("string_value", "{'a': 1}"),
    }  # fmt: skip  (None left out, as before; torch writes a bool as the number 1)


def test_a_tensor_or_numpy_value_is_written_as_text(tmp_path):
    """Why the suite cleans the values itself: Lightning's ``_sanitize_params`` keeps a tensor, and torch's
    ``hparams`` fails on a 0-dim one (IndexError), so the run would stop at its start."""
    written = _session_start(tmp_path, {"scale": torch.tensor(0.5), "steps": np.int64(3)})
    assert written == {"scale": ("string_value", "tensor(0.5000)"), "steps": ("string_value", "3")}
