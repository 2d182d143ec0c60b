"""A new user's first commands (session 45): a ``-c`` config that is not there names the config it is close to."""

from __future__ import annotations

import pytest

from shared.cli_help import SUITE_ROOT

pytestmark = pytest.mark.usefixtures("one_thread")

USAGE = "usage: python -m domains.medical fit [-h] [-c CONFIG] [options]  (python -m domains.medical fit --help lists them)"


def _fit_error(config: str, capsys) -> list[str]:
    """The lines ``fit -c config`` prints from its usage line on, before it exits with status 2 (Lightning's
    warning that a test gives ``args`` besides pytest's ``sys.argv`` comes before them)."""
    from domains.medical.__main__ import main

    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(["fit", "-c", config])
    assert done.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    return lines[next(i for i, line in enumerate(lines) if line.startswith("usage: ")) :]


@pytest.mark.parametrize("cwd", ["repository", "elsewhere"])
def test_a_misspelled_config_names_the_one_it_is_close_to(cwd, tmp_path, monkeypatch, capsys):
    """``-c domains/medical/configs/quik.yaml`` printed jsonargparse's "File does not exist" under a usage line
    promising options "listed below" (none were): now the one-line usage, the error and quick.yaml, from the
    repository or from another folder (where ``-c`` reads the suite's own configs)."""
    monkeypatch.chdir(SUITE_ROOT if cwd == "repository" else tmp_path)
    lines = _fit_error("domains/medical/configs/quik.yaml", capsys)
    missing = (SUITE_ROOT if cwd == "repository" else tmp_path) / "domains/medical/configs/quik.yaml"
    assert lines == [
        USAGE,
        f"error: Parser key \"config\": File does not exist: '{missing}'",
        "domains/medical/configs/quik.yaml: did you mean domains/medical/configs/quick.yaml?",
    ]


def test_a_config_named_without_its_folder_is_found_in_the_task_s_own(tmp_path, monkeypatch, capsys):
    """``-c quick.yaml`` and ``-c configs/prob_unet.yaml`` (the task's folder left out) name the task's own."""
    monkeypatch.chdir(tmp_path)
    assert _fit_error("quik.yaml", capsys)[2:] == ["quik.yaml: did you mean domains/medical/configs/quick.yaml?"]
    assert _fit_error("configs/prob_unet.yaml", capsys)[2:] == [
        "configs/prob_unet.yaml: did you mean domains/medical/configs/prob_unet.yaml?"
    ]


def test_a_config_close_to_none_lists_its_folder_and_a_folder_its_configs(tmp_path, monkeypatch, capsys):
    """A name close to no config (compared by stem: ``zzz.yaml`` is not "gpu.yaml" for their common
    ``.yaml``) lists the folder's configs; so does the folder given as the config; a folder of none lists
    the task's own configs."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "a.yaml").write_text("seed_everything: 1\n")
    (tmp_path / "mine" / "b.yml").write_text("seed_everything: 2\n")
    assert _fit_error("mine/zzz.yaml", capsys)[2:] == ["mine: holds a.yaml, b.yml"]
    assert _fit_error("mine/quick.yaml", capsys)[2:] == ["mine: holds a.yaml, b.yml"]  # their folder, not the task's
    assert _fit_error("mine/b.yaml", capsys)[2:] == ["mine/b.yaml: did you mean mine/b.yml?"]
    assert _fit_error("mine", capsys)[1:] == [
        f"error: Parser key \"config\": Path is not a file: '{tmp_path / 'mine'}'",
        "mine: holds a.yaml, b.yml",
    ]
    lines = _fit_error(str(tmp_path / "none" / "x.yaml"), capsys)[1:]  # a folder of none: the task's configs
    assert lines[0] == f"error: Parser key \"config\": File does not exist: '{tmp_path / 'none' / 'x.yaml'}'"
    assert lines[1].startswith("domains/medical/configs: holds ") and "quick.yaml" in lines[1]


@pytest.mark.parametrize("piped", [True, False])
def test_the_progress_bar_shows_the_digits_of_the_closing_line(piped, monkeypatch):
    """The bar showed a val/ged of 1.18939 as ``val/ged=1.190`` (tqdm's three significant digits, padded with a
    zero by Lightning) just above ``best checkpoint (val/ged 1.189)``: now four, as that line, in a terminal
    or piped into a log (where it is still redrawn rarely)."""
    import io

    from shared.cli import SuiteTrainer

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.delenv("TQDM_MINITERS", raising=False)
    monkeypatch.setattr("sys.stdout", io.StringIO() if piped else Terminal())
    trainer = SuiteTrainer(logger=False, enable_model_summary=False, accelerator="cpu")
    shown = {"val/ged": 1.18939, "train/loss": 920.66, "n": 3, "val/dice": 0.5, "big": 12345.6, "small": 1e-5}
    trainer._logger_connector._progress_bar_metrics.update(shown)
    bar = trainer.progress_bar_callback
    assert bar.get_metrics(trainer, None) == {
        "val/ged": "1.189",
        "train/loss": "920.7",
        "n": 3,
        "val/dice": "0.5000",  # zeros kept: the bar keeps its width
        "big": 12345.6,  # far from 1: left to tqdm's own form, not 1.235e+04
        "small": 1e-5,
    }
    assert bar.refresh_rate == (100 if piped else 1)


def test_a_fit_ends_naming_its_log_folders(tmp_path, caplog):
    """``test`` names the folders its figures went to; a fit named its checkpoints alone, so the ``version_N``
    of its curves (for TensorBoard, or metrics.csv) was to be guessed: now its closing lines end with them."""
    import logging

    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

    from shared.cli import SuiteTrainer
    from tests.shared.tiny_task import SquaresDataModule, TinySegTask

    caplog.set_level(logging.INFO)
    (tmp_path / "logs" / "csv" / "version_0").mkdir(parents=True)  # an earlier run's
    loggers = [CSVLogger(tmp_path / "logs", name="csv"), TensorBoardLogger(tmp_path / "logs", name="tb")]
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/loss", save_last=True)
    trainer = SuiteTrainer(max_steps=2, limit_train_batches=2, limit_val_batches=1, logger=loggers,
                           callbacks=[checkpoint], enable_progress_bar=False, enable_model_summary=False,
                           accelerator="cpu")  # fmt: skip
    trainer.fit(TinySegTask(), SquaresDataModule())
    closing = [line for r in caplog.records for line in r.getMessage().splitlines()][-3:]
    assert closing[0].startswith("best checkpoint (val/loss ")
    assert closing[1] == f"last checkpoint (step 2): {tmp_path / 'ckpt' / 'last.ckpt'}"
    assert (
        closing[2]
        == f"logs: {tmp_path / 'logs' / 'csv' / 'version_1'}, {tmp_path / 'logs' / 'tb' / 'version_0'}"
    )


def test_predict_prints_its_config_without_weights(tmp_path, monkeypatch, capsys):
    """``predict -c quick.yaml --print_config``, asked where predict writes, answered "predict needs trained
    weights": the config is printed, its ``ckpt_path`` null as given (the run itself still refuses it)."""
    import yaml

    from domains.medical.__main__ import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as done:
        main(["predict", "-c", "domains/medical/configs/quick.yaml", "--print_config"])
    assert done.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["predict_dir"] == "predictions/medical" and printed["ckpt_path"] is None
    with pytest.raises(SystemExit) as done:  # an untrained network asked for on purpose prints as before
        main(["predict", "-c", "domains/medical/configs/quick.yaml", "--ckpt_path", "none", "--print_config"])
    assert done.value.code in (0, None)
    assert yaml.safe_load(capsys.readouterr().out)["ckpt_path"] == "none"
