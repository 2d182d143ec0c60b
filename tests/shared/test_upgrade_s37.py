"""Found by an upgrade audit: ``--trainer.default_root_dir`` kept each domain's folders apart, and a checkpoint
written before fits recorded their absolute data paths is not said to be fitted on other data from another folder."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch

from shared.cli import run_cli
from tests.shared import test_install_s37 as install
from tests.shared.tiny_task import SquaresDataModule, TinySegTask

pytestmark = pytest.mark.usefixtures("one_thread")

fitted = install.fitted  # a one-step fit in <root>/proj4 on "../my data/lidc": (root, its last.ckpt)


def squares_cli(domain: str, args, run=True):
    return run_cli(TinySegTask, SquaresDataModule, domain=domain, monitor="val/loss", args=list(args), run=run)


def test_each_domain_keeps_its_folders_under_one_root_dir(tmp_path, monkeypatch):
    """``--trainer.default_root_dir R`` dropped the domain: every domain's quick.yaml wrote R/quick/checkpoints,
    and one domain's ``--ckpt_path last`` took another's last.ckpt (the same task class: its network, unsaid)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.yaml").write_text("trainer:\n  max_epochs: 1\n")
    root = tmp_path / "runs"

    def folders(domain: str, *args) -> tuple[str, set[str]]:
        config = squares_cli(domain, ["-c", "mine.yaml", *args], run=False).config
        return config["checkpoint"]["dirpath"], {log.init_args.save_dir for log in config["trainer"]["logger"]}

    assert folders("tiny_a", "--trainer.default_root_dir", str(root)) == (
        f"{root}/tiny_a/mine/checkpoints",
        {f"{root}/tiny_a"},
    )
    assert folders("tiny_b", "--trainer.default_root_dir", str(root))[0] == f"{root}/tiny_b/mine/checkpoints"
    # the default folder given as the root moves nothing
    default = ("lightning_logs/tiny_a/mine/checkpoints", {"lightning_logs/tiny_a"})
    assert folders("tiny_a", "--trainer.default_root_dir", "lightning_logs") == default == folders("tiny_a")

    once = ["-c", "mine.yaml", "--trainer.default_root_dir", str(root), "--trainer.logger", "false"]
    once += ["--trainer.enable_progress_bar", "false", "--trainer.limit_val_batches", "1"]
    squares_cli("tiny_a", ["fit", *once, "--trainer.max_steps", "1"])
    last = root / "tiny_a" / "mine" / "checkpoints" / "last.ckpt"
    assert last.is_file() and not (root / "mine").exists()
    assert squares_cli("tiny_a", ["validate", *once, "--ckpt_path", "last"]).trainer.ckpt_path == str(last)
    with pytest.raises(FileNotFoundError, match=f"{root}/tiny_b/mine/checkpoints"):
        squares_cli("tiny_b", ["validate", *once, "--ckpt_path", "last"])


@pytest.fixture(scope="module")
def old_checkpoint(fitted):
    """``fitted``'s checkpoint as one written before ``suite_data_paths``: the data set's paths as given."""
    root, ckpt = fitted
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    del checkpoint["suite_data_paths"]
    checkpoint["FolderSquares"]["data_set"]["data_path"] = "../my data/lidc"  # the state_dict's as given, too
    torch.save(checkpoint, root / "old.ckpt")
    return root, root / "old.ckpt"


def said(command: str, args, caplog) -> tuple[list[str], list[str]]:
    """``command ARGS``'s warnings and the CLI's info lines on the checkpoint's data paths."""
    caplog.clear()
    with caplog.at_level(logging.INFO), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        install.tiny_cli([command, *install.QUIET, "--trainer.limit_val_batches", "1", *args])
    infos = [r.getMessage() for r in caplog.records if "predates checkpoints that record" in r.getMessage()]
    return [str(w.message) for w in caught], infos


def test_an_old_checkpoints_relative_data_path_is_not_said_to_be_other_data(old_checkpoint, monkeypatch, caplog):
    """Fitted on ``../my data/lidc`` in proj4, validated from proj5/sub on ``../../my data/lidc`` (the same
    folder): "fitted on other data", and the checks of its split and trained groups were skipped."""
    root, ckpt = old_checkpoint
    data = str((root / "my data" / "lidc").resolve())
    (root / "proj5" / "sub").mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(root / "proj5" / "sub")
    for given in ("../../my data/lidc", data):
        warned, infos = said("validate", ["--ckpt_path", str(ckpt), "--data.data_path", given], caplog)
        assert not [w for w in warned if "fitted on other data" in w]
        leaked = [w for w in warned if "checkpoint's training split" in w]  # the leak check ran
        assert len(leaked) == 1 and leaked[0].startswith("1 of the 2 groups of this val split") and "(p1)" in leaked[0]
        assert len(infos) == 1, infos
        assert f"its data.data_path '../my data/lidc' (this command: {given!r}) is relative" in infos[0]
        assert "cannot be told" in infos[0]
    # a resume: not warned as other data either, said once
    resume = ["--ckpt_path", str(ckpt), "--data.data_path", "../../my data/lidc", "--trainer.max_steps", "2"]
    warned, infos = said("fit", resume, caplog)
    assert not [w for w in warned if "other data or input" in w] and len(infos) == 1


def test_what_could_be_compared_before_is_compared_as_before(old_checkpoint, fitted, monkeypatch, caplog):
    """The same relative words from the fit's own folder: the same data, nothing said; a checkpoint with its
    absolute path recorded, given the same words from elsewhere: another folder, said."""
    root, old = old_checkpoint
    monkeypatch.chdir(root / "proj4")
    warned, infos = said("validate", ["--ckpt_path", str(old), "--data.data_path", "../my data/lidc"], caplog)
    assert infos == [] and not [w for w in warned if "fitted on other data" in w]
    assert len([w for w in warned if "checkpoint's training split" in w]) == 1
    (root / "proj5" / "sub").mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(root / "proj5" / "sub")
    warned, infos = said("validate", ["--ckpt_path", str(fitted[1]), "--data.data_path", "../my data/lidc"], caplog)
    data = str((root / "my data" / "lidc").resolve())
    other = [w for w in warned if "fitted on other data" in w]
    assert infos == [] and len(other) == 1 and f"data.data_path {data!r}" in other[0]
    # an old checkpoint given no path now: not a path that could be the same
    assert install.FolderSquares().uncomparable_paths({"data_path": "../x"}, "validate") is None
