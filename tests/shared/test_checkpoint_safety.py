"""Checkpoints run no code and need nothing but themselves: a checkpoint named by URL is read as data only, and a
loaded task is ready to predict (eval mode) without the weight file its training started from."""

from __future__ import annotations

import functools
import http.server
import os
import sys
import threading
import types
from pathlib import Path

import pytest
import torch

from shared.cli import run_cli
from tests.shared.tiny_task import SquaresDataModule, TinySegTask


class _RunsCode:
    """Pickled, it makes a folder when unpickled: what a hostile checkpoint can do with weights_only=False."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


@pytest.fixture
def served(tmp_path):
    """A local HTTP server of ``tmp_path/www``; yields (folder, base URL)."""
    folder = tmp_path / "www"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    # a short poll: shutdown() waits for the serving loop to look again (0.5 s of teardown at the default)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_checkpoint_named_by_url_is_read_as_data_only(tmp_path, monkeypatch, served):
    """Lightning reads a URL with weights_only=False; the suite skipped its own check for URLs, so a served
    checkpoint's pickled code ran and `test` went on as if nothing happened. A URL is now refused before
    anything is read (the suite loads local files only)."""
    monkeypatch.chdir(tmp_path)
    folder, url = served
    marker = tmp_path / "code_ran"
    torch.save({"state_dict": {}, "payload": _RunsCode(marker)}, folder / "model.ckpt")
    args = ["validate", "--ckpt_path", f"{url}/model.ckpt", "--trainer.logger", "false"]
    with pytest.raises(Exception, match="a URL; checkpoints are read from local files only"):
        run_cli(TinySegTask, SquaresDataModule, domain="tiny", monitor="val/loss", args=args)
    assert not marker.exists()


def test_a_loaded_task_is_ready_to_predict(tmp_path):
    """Lightning's load_from_checkpoint returns a training module: dropout on, BatchNorm updating its statistics
    from each batch, the accident model's temperature unused (its 2 s risk 0.86 where 0.52)."""
    from tests.helpers import quiet_trainer

    task = TinySegTask()
    trainer = quiet_trainer(max_steps=1, default_root_dir=str(tmp_path))
    trainer.fit(task, SquaresDataModule())
    trainer.save_checkpoint(tmp_path / "tiny.ckpt")
    loaded = TinySegTask.load_checked(tmp_path / "tiny.ckpt")
    assert not any(module.training for module in loaded.modules())


def test_class_paths_of_the_data_module_are_checked_and_imported_modules_trusted(monkeypatch):
    from shared.task import CheckpointMismatchError, _check_class_paths
    with pytest.raises(CheckpointMismatchError, match="helpers.Transform"):
        _check_class_paths({"datamodule_hyper_parameters": {"t": {"class_path": "helpers.Transform"}}}, "x.ckpt")
    monkeypatch.setitem(sys.modules, "users_own_module", types.ModuleType("users_own_module"))
    _check_class_paths({"hyper_parameters": {"network": {"class_path": "users_own_module.Net"}}}, "x.ckpt")


def test_a_safetensors_file_given_as_a_checkpoint_says_what_it_is(tmp_path):
    """The demo's shipped weights given to an export or --ckpt_path were "not a zip archive: truncated, or not
    written by torch.save", which reads as a broken file."""
    from safetensors.torch import save_file

    from shared.task import CheckpointMismatchError, check_checkpoint_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "weights.safetensors"))
    with pytest.raises(CheckpointMismatchError, match=r"weights.safetensors: a .safetensors file holds weights only, not a Lightning checkpoint"):
        check_checkpoint_file(tmp_path / "weights.safetensors", TinySegTask)


def test_a_bare_state_dict_given_as_a_checkpoint_says_what_it_is(tmp_path):
    """torch.save({"state_dict": ...}) passed every check and ended in Lightning's bare
    "KeyError: 'pytorch-lightning_version'"."""
    from shared.task import CheckpointMismatchError, check_checkpoint_file

    torch.save({"state_dict": TinySegTask().state_dict()}, tmp_path / "bare.ckpt")
    with pytest.raises(CheckpointMismatchError, match=r"bare.ckpt: a state dict saved with torch.save, not a checkpoint"):
        check_checkpoint_file(tmp_path / "bare.ckpt", TinySegTask)
    with pytest.raises(CheckpointMismatchError, match="a state dict saved with torch.save"):
        TinySegTask.load_checked(tmp_path / "bare.ckpt")


def test_a_checkpoint_holding_pickled_objects_is_refused_naming_them_not_advising_an_unsafe_load(tmp_path):
    """torch's own message said to load it again with weights_only=False (running the file's code) and to file an
    issue with PyTorch."""
    from shared.task import CheckpointMismatchError, check_checkpoint_file

    marker = tmp_path / "code_ran"
    torch.save({"state_dict": {}, "payload": _RunsCode(marker)}, tmp_path / "model.ckpt")
    with pytest.raises(CheckpointMismatchError) as caught:
        check_checkpoint_file(tmp_path / "model.ckpt", TinySegTask)
    said = str(caught.value)
    assert "not a weights-only Lightning checkpoint: it holds pickled Python objects (posix.mkdir)" in said
    assert "weights_only=False" not in said and "file an issue" not in said.lower()
    assert not marker.exists()


def test_a_weights_only_refusal_is_told_by_its_cause_not_torchs_advice():
    import pickle

    from shared.backbones.weights import load_failure_cause

    err = pickle.UnpicklingError(
        "Weights only load failed. In PyTorch 2.6 ... Re-running `torch.load` with `weights_only` set to `False` "
        "will likely succeed, but it can result in arbitrary code execution.\n\n\nUnsupported operand 149\n\n"
        "Check the documentation of torch.load to learn more"
    )
    assert load_failure_cause(err) == "UnpicklingError: Unsupported operand 149"
    assert load_failure_cause(RuntimeError("")) == "RuntimeError"
