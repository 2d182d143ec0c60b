"""Two jobs of one config run at once from one working directory (the concurrency audit): each fit logs into a
version folder of its own, the same for CSV and TensorBoard; ``--ckpt_path last`` / ``best`` among several
``last*.ckpt`` says which file it took and how to take another; a second predict run into a busy
``--model.predict_dir`` is refused at its start; a converter whose ``--dst`` another run wrote meanwhile refuses
to replace it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import pytest
import torch
import yaml

from domains.driving import convert
from shared.cli import ConfigError, reserve_log_version, run_cli, saved_checkpoint
from shared.prediction_set import PredictionSet
from tests.driving.layouts import write_instance_kitti
from tests.shared.test_prediction_set import contents, predict, run_a
from tests.shared.tiny_task import SquaresDataModule, TinySegTask

QUIET = ["--trainer.max_steps", "1", "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false",
         "--trainer.enable_model_summary", "false"]  # fmt: skip


def test_runs_reserving_at_once_never_share_a_version(tmp_path):
    """Lightning lists the folder and makes ``version_N`` later: two runs started together both took
    ``version_0``. Eight at once here, each reserving in a CSV and a TensorBoard folder."""
    folders = [tmp_path / "csv", tmp_path / "tensorboard"]
    start, got = threading.Barrier(8), []

    def run():
        start.wait()
        got.append(reserve_log_version(folders))

    threads = [threading.Thread(target=run) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(got) == list(range(8))
    for folder in folders:
        assert sorted(p.name for p in folder.iterdir()) == [f"version_{n}" for n in range(8)]


def test_a_version_taken_in_one_folder_only_is_given_up_in_the_others(tmp_path):
    """``tensorboard/version_0`` taken (here by a file) after the listing: the ``csv/version_0`` just made is
    removed again, and both loggers get version 1."""
    (tmp_path / "tensorboard").mkdir()
    (tmp_path / "tensorboard" / "version_0").write_text("not a run's folder, but the name is taken")
    assert reserve_log_version([tmp_path / "csv", tmp_path / "tensorboard"]) == 1
    assert sorted(p.name for p in (tmp_path / "csv").iterdir()) == ["version_1"]


def test_a_fit_logs_into_its_own_version_the_same_for_csv_and_tensorboard(tmp_path, monkeypatch):
    """Another run of the config has just taken ``csv/version_0`` and written nothing yet (the audit's two
    fits): this one logged into it too, metrics.csv interleaving both runs' rows, while TensorBoard took
    version_0 or 1 by luck. A logger version given by the user is kept."""
    monkeypatch.chdir(tmp_path)
    logs = tmp_path / "lightning_logs" / "tiny"
    (logs / "csv" / "version_0").mkdir(parents=True)  # the other run's
    cli = run_cli(TinySegTask, SquaresDataModule, domain="tiny", monitor="val/loss", args=["fit", *QUIET])
    assert [(logger.name, logger.version) for logger in cli.trainer.loggers] == [("csv", 1), ("tensorboard", 1)]
    assert not any((logs / "csv" / "version_0").iterdir())  # the other run's folder untouched
    assert (logs / "csv" / "version_1" / "metrics.csv").is_file()
    assert sorted(p.name for p in (logs / "tensorboard").iterdir()) == ["version_1"]
    saved = yaml.safe_load((logs / "csv" / "version_1" / "config.yaml").read_text())
    assert saved["trainer"]["logger"][0]["init_args"].get("version") is None  # a rerun from it takes a new one
    own = [{"class_path": "pytorch_lightning.loggers.CSVLogger",
            "init_args": {"save_dir": str(tmp_path / "mine"), "name": "csv", "version": "run_a"}}]  # fmt: skip
    args = ["fit", *QUIET, "--trainer.logger", yaml.safe_dump(own)]
    cli = run_cli(TinySegTask, SquaresDataModule, domain="tiny", monitor="val/loss", args=args)
    assert cli.trainer.logger.version == "run_a" and (tmp_path / "mine" / "csv" / "run_a" / "metrics.csv").is_file()
    assert sorted(p.name for p in (tmp_path / "mine" / "csv").iterdir()) == ["run_a"]


def _checkpoint(path: Path, best: str, mtime: int) -> None:
    """A ``last*.ckpt`` whose ModelCheckpoint state records ``best``, modified at ``mtime``."""
    torch.save({"callbacks": {"ModelCheckpoint{}": {"best_model_path": best}}}, path)
    path.with_name(Path(best).name).write_bytes(b"weights")
    os.utime(path, (mtime, mtime))


def test_last_and_best_among_several_last_files_say_which_was_taken(tmp_path):
    """Two fits of one config at once: ``--ckpt_path last`` took the other run's ``last-v1.ckpt`` (the newest),
    and only its name was printed."""
    _checkpoint(tmp_path / "last.ckpt", str(tmp_path / "best-a.ckpt"), mtime=1_000)
    _checkpoint(tmp_path / "last-v1.ckpt", str(tmp_path / "best-b.ckpt"), mtime=2_000)
    with pytest.warns(UserWarning) as caught:
        assert saved_checkpoint("last", tmp_path) == str(tmp_path / "last-v1.ckpt")
    assert str(caught[0].message) == (
        f"--ckpt_path last: {tmp_path} holds 2 last*.ckpt files (fits of this config one after another, or at "
        f"once), and the newest is taken: {tmp_path / 'last-v1.ckpt'}. For another run's weights give its file, "
        f"--ckpt_path FILE ({tmp_path / 'last.ckpt'}); fits of one config run at once should each get their own "
        "--checkpoint.dirpath"
    )
    with pytest.warns(UserWarning, match=r"--ckpt_path best: .* holds 2 last\*\.ckpt files .* and the best that "
                                         r"the newest, last-v1\.ckpt, records is taken: .*best-b\.ckpt\. "):
        assert saved_checkpoint("best", tmp_path) == str(tmp_path / "best-b.ckpt")
    (tmp_path / "last.ckpt").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one last file: nothing to say
        assert saved_checkpoint("last", tmp_path) == str(tmp_path / "last-v1.ckpt")


def test_a_second_predict_run_into_a_busy_folder_is_refused_at_its_start(tmp_path):
    """Two predict runs into one --model.predict_dir at once both exited 0, and the folder held one run's set:
    the other's output was gone. Another process holds the folder's lock here, as a running predict does."""
    out = tmp_path / "pred"
    first = run_a(out)
    hold = (
        "import filelock, sys; lock = filelock.FileLock(sys.argv[1]); lock.acquire(); print('held', flush=True); "
        "sys.stdin.read()"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(out / PredictionSet.LOCK)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(ConfigError) as refused:
            predict(out, "B")
        assert str(refused.value) == (
            f"--model.predict_dir {out}: another predict run is writing there (it holds {out / '.predictions.lock'}); "
            "nothing was moved or written: wait for it to finish, or give another --model.predict_dir"
        )
        assert {k: v for k, v in contents(out).items() if k != PredictionSet.LOCK} == first
    finally:
        holder.communicate("")
    predict(out, "C")  # the other run finished: the folder is free, and no lock file stays in it
    assert sorted(contents(out)) == [".predictions.json", "mine.txt", "pred_0.txt", "pred_1.txt", "pred_2.txt"]


@pytest.mark.parametrize("start", ["absent", "empty"])
def test_a_destination_another_converter_wrote_meanwhile_is_refused_not_replaced(tmp_path, monkeypatch, capsys, start):
    """Two converters to one --dst at once (no --overwrite) both printed "converted" and exited 0: the second
    renamed the first's output aside and deleted it, as the destination was checked empty only at the start."""
    write_instance_kitti(tmp_path / "kitti", n=1)
    dst = tmp_path / "out"
    if start == "empty":
        dst.mkdir()
    written = convert.write_destination

    def and_another_run_finishes(*args, **kwargs):
        dropped = written(*args, **kwargs)
        dst.mkdir(exist_ok=True)
        (dst / "annotations.json").write_text("the other run's")
        return dropped

    monkeypatch.setattr(convert, "write_destination", and_another_run_finishes)
    args = ["--from", "kitti", "--to", "coco", "--src", str(tmp_path / "kitti"), "--dst", str(dst)]
    assert convert.main(args) == convert.INPUT_ERROR
    out, err = capsys.readouterr()
    assert "converted" not in out
    assert err == (
        f"error: --dst {dst}: another run wrote it while this one converted (it was empty or absent at the start); "
        "it is left as that run made it, and this run's output removed: give another --dst, or --overwrite to "
        f"replace it\nnothing was written to {dst}\n"
    )
    assert contents(dst) == {"annotations.json": "the other run's"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kitti", "out"]  # no temporary folder left
    monkeypatch.setattr(convert, "write_destination", written)
    (dst / "annotations.json").unlink()  # empty again: converted into it as before
    assert convert.main(args) == 0 and sorted(p.name for p in dst.iterdir()) == ["annotations.json", "images"]
