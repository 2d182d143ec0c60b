"""The suite used from another folder or installed as a wheel: shipped weights and examples in the package,
repository-relative weight and config paths found in the suite's folder, ``~`` expanded, a relative data path
compared as the folder the fit read, synthetic data generation said."""

from __future__ import annotations

import logging
import os
import subprocess
import tomllib
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from shared.backbones.weights import read_state_dict
from shared.cli import run_cli
from shared.cli_help import SUITE_ROOT
from shared.data import SplitLoaders
from tests.shared.tiny_task import TinySegTask, make_squares

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[2]


def test_package_data_ships_every_tracked_file_of_the_demo_weights_and_examples():
    """The wheel held only .py and .yaml: the demo pages found no weights, transfer.yaml no backbone file."""
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "*.yaml" in package_data["*"]
    listed = ["git", "ls-files", "apps/weights", "apps/examples"]
    tracked = subprocess.run(listed, cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    assert len(tracked) >= 20 and any(p.endswith(".safetensors") for p in tracked), tracked
    # setuptools globs each pattern from the package's folder (``*`` stays within one folder)
    shipped = {
        path.relative_to(REPO).as_posix()
        for pattern in package_data.get("apps", [])
        for path in (REPO / "apps").glob(pattern)
    }
    assert sorted(set(tracked) - shipped) == []
    assert not [p for p in shipped if not p.startswith(("apps/weights/", "apps/examples/"))]


def test_a_relative_weight_path_not_here_is_read_from_the_suites_folder(tmp_path, monkeypatch, caplog):
    """transfer.yaml names apps/weights/driving_detection.safetensors: outside the repository, not found."""
    monkeypatch.chdir(tmp_path)
    name = "apps/weights/medical_unet.safetensors"
    with caplog.at_level(logging.INFO):
        state = read_state_dict(name)
    assert len(state) > 10 and all(v.dtype == torch.float32 for v in state.values() if v.is_floating_point())
    assert f"weight file {name}: not in the working directory {tmp_path}" in caplog.text
    assert f"the suite's own {SUITE_ROOT / name} is read" in caplog.text
    # a file of that name here is the one read
    (tmp_path / "apps" / "weights").mkdir(parents=True)
    save_file({"w": torch.ones(2)}, str(tmp_path / name))
    assert list(read_state_dict(name)) == ["w"]
    # in neither place: the error names both
    with pytest.raises(FileNotFoundError) as missing:
        read_state_dict("apps/weights/nowhere.safetensors")
    tried = f"under the working directory {tmp_path} and under the suite's folder {SUITE_ROOT}"
    assert tried in str(missing.value)


def test_a_shipped_config_named_from_the_repository_root_works_from_another_folder(
    tmp_path, monkeypatch, capsys, caplog
):
    """``-c domains/medical/configs/quick.yaml`` from another folder failed: "File does not exist"."""
    from domains.medical.__main__ import main

    monkeypatch.chdir(tmp_path)
    config = "domains/medical/configs/quick.yaml"
    for given in (["-c", config], [f"--config={config}"]):
        capsys.readouterr()
        with caplog.at_level(logging.INFO), pytest.raises(SystemExit) as done:
            main(["fit", *given, "--print_config"])
        assert done.value.code in (0, None)
        printed = yaml.safe_load(capsys.readouterr().out)
        assert printed["model"]["network"]["init_args"]["channels"] == [16, 32, 64, 128]  # quick.yaml's
        assert printed["data"]["crop_size"] == 64 and printed["trainer"]["max_epochs"] == 8
        # named as the suite's own config (quick), not by its path from here
        assert printed["checkpoint"]["dirpath"] == "lightning_logs/medical/quick/checkpoints"
        assert f"{given[0].split('=')[0]} {config}: not in the working directory {tmp_path}" in caplog.text
        caplog.clear()
    # in neither place: jsonargparse's own error
    with pytest.raises(SystemExit) as done:
        main(["fit", "-c", "domains/medical/configs/nowhere.yaml"])
    assert done.value.code == 2
    nowhere = tmp_path / "domains" / "medical" / "configs" / "nowhere.yaml"
    assert f"File does not exist: '{nowhere}'" in capsys.readouterr().err


class FolderSquares(SplitLoaders):
    """The tiny squares, read from nowhere, but with the path settings a domain's data module has."""

    def __init__(self, data_path: str | None = None, predict_path: str | None = None, batch_size: int = 4):
        super().__init__()
        self.save_hyperparameters()
        self.set_loader_options(batch_size, 0)

    def setup(self, stage=None):
        self.datasets = {"train": make_squares(8, seed=0), "val": make_squares(4, seed=1)}

    def split_groups(self, name: str) -> set[str] | None:
        return {"p0", "p1"} if name == "train" else {"p1", "p2"}  # p1 in both: the leak check's warning


class PredictingTiny(TinySegTask):
    def __init__(self, predict_dir: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.predict_dir = predict_dir


def tiny_cli(args, run=True):
    return run_cli(PredictingTiny, FolderSquares, domain="tiny", monitor="val/loss", args=list(args), run=run)


QUIET = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]
QUIET += ["--trainer.enable_model_summary", "false"]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A one-step fit in ``<root>/proj4`` on ``--data.data_path "../my data/lidc"``: (root, its last.ckpt)."""
    root = tmp_path_factory.mktemp("install")
    (root / "my data" / "lidc").mkdir(parents=True)
    (root / "proj4").mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root / "proj4")
        fit = ["fit", *QUIET, "--trainer.max_steps", "1", "--trainer.limit_val_batches", "1"]
        cli = tiny_cli([*fit, "--data.data_path", "../my data/lidc"])
    return root, Path(cli.trainer.checkpoint_callback.last_model_path).resolve()


def validate_warnings(args, said: str = "was fitted on other data") -> list[str]:
    """The warnings of ``validate ARGS`` that hold ``said``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tiny_cli(["validate", *QUIET, *args])
    return [str(w.message) for w in caught if said in str(w.message)]


def test_the_data_folder_a_fit_read_is_compared_from_any_working_directory(fitted, monkeypatch):
    """The fit's relative path was resolved against the later command's folder: the same folder, given
    absolute from elsewhere, was warned as other data."""
    root, ckpt = fitted
    checkpoint = torch.load(ckpt, map_location="cpu", weights_only=True)
    data = str((root / "my data" / "lidc").resolve())
    assert checkpoint["suite_data_paths"] == {"data_path": data}
    assert checkpoint["datamodule_hyper_parameters"]["data_path"] == "../my data/lidc"  # as given
    assert checkpoint["FolderSquares"]["data_set"]["data_path"] == data  # what the leak check compares
    (root / "proj5" / "sub").mkdir(parents=True)
    monkeypatch.chdir(root / "proj5" / "sub")
    # one validate, its warnings read twice ("" is in every message)
    said = validate_warnings(["--ckpt_path", str(ckpt), "--data.data_path", data], "")
    assert [message for message in said if "was fitted on other data" in message] == []
    # the same data set, so the data module's check of the groups it trained on runs (skipped for another set)
    leaked = [message for message in said if "checkpoint's training split" in message]
    assert len(leaked) == 1 and leaked[0].startswith("1 of the 2 groups of this val split")
    assert "(p1)" in leaked[0]
    assert validate_warnings(["--ckpt_path", str(ckpt), "--data.data_path", "../../my data/lidc"]) == []
    # the same relative words here name another folder: said, with the folder the fit read
    said = validate_warnings(["--ckpt_path", str(ckpt), "--data.data_path", "../my data/lidc"])
    assert len(said) == 1 and f"data.data_path {data!r} (this command: '../my data/lidc')" in said[0]
    # a checkpoint written before the fit recorded its paths: its relative path, from another folder, cannot be
    # told the same or other data, and is not said to be other data (tests/shared/test_upgrade_s37.py)
    del checkpoint["suite_data_paths"]
    torch.save(checkpoint, root / "old.ckpt")
    assert validate_warnings(["--ckpt_path", str(root / "old.ckpt"), "--data.data_path", data]) == []


def test_a_leading_tilde_is_the_home_folder_in_path_options_and_ckpt_path(fitted, tmp_path, monkeypatch):
    """``--data.data_path=~/lidc``, a quoted ``'~/x/last.ckpt'`` and ``~`` in a YAML file stayed ``~``."""
    root, ckpt = fitted
    monkeypatch.setenv("HOME", str(root))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "paths.yaml").write_text("data:\n  predict_path: ~/own\n")
    cli = tiny_cli(["-c", "paths.yaml", "--data.data_path=~/lidc", "--model.predict_dir", "~/out"], run=False)
    data, model = cli.config["data"], cli.config["model"]
    assert (data["data_path"], data["predict_path"]) == (f"{root}/lidc", f"{root}/own")
    assert model["predict_dir"] == f"{root}/out" and cli.model.predict_dir == f"{root}/out"
    assert cli.datamodule.hparams.data_path == f"{root}/lidc"
    home_ckpt = "~/" + os.path.relpath(ckpt, root)
    validate = ["validate", *QUIET, "--trainer.limit_val_batches", "1", "--data.data_path=~/my data/lidc"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli = tiny_cli([*validate, "--ckpt_path", home_ckpt])
    assert cli.config["validate"]["ckpt_path"] == str(ckpt) and cli.trainer.ckpt_path == str(ckpt)
    assert cli.datamodule.hparams.data_path == f"{root}/my data/lidc"
    assert not [w for w in caught if "was fitted on other data" in str(w.message)]  # the fit's folder


def test_generating_the_synthetic_medical_set_is_said_with_its_absolute_folder(tmp_path, monkeypatch, caplog):
    """A fit in a new folder wrote 34 MB into ./data/medical/... unsaid (the driving generators say it)."""
    from domains.medical.synthetic import ensure_synthetic_lidc

    monkeypatch.chdir(tmp_path)
    settings = {"n_patients": 3, "images_per_patient": 2, "size": 32, "splits": (0.34, 0.33, 0.33)}
    with caplog.at_level(logging.INFO):
        ensure_synthetic_lidc("data/lidc", **settings)
    said = [r.getMessage() for r in caplog.records if "synthetic LIDC" in r.getMessage()]
    where = tmp_path / "data" / "lidc"
    what = "6 images of 32 px (3 patients, 4 readers' masks each)"
    assert said == [f"synthetic LIDC: generating {what} at {where}, once"]
    assert len(list((tmp_path / "data/lidc").glob("*/images/*/*.png"))) == 6
    caplog.clear()
    with caplog.at_level(logging.INFO):
        ensure_synthetic_lidc("data/lidc", **settings)  # already there: nothing to say
    assert "synthetic LIDC" not in caplog.text
