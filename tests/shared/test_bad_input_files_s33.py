"""Bad input found by the s33 audit, shared side: broken symbolic links (dangling, loops) among one's files are
named with why instead of dropped without a word (or a bare RuntimeError for a loop); a batch size below 1 is
refused naming the option; a misspelled option gets a short "did you mean"; an output folder that is a file is
refused naming its option."""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

import pytest

from shared.files import (
    PREDICTIONS_MANIFEST,
    BrokenLinkWarning,
    check_output_folder,
    counting_hidden_files,
    visible_entries,
    visible_files,
    visible_inputs,
)


class _PredictWarning(UserWarning):
    pass


def _links(folder: Path) -> None:
    """``a.png`` beside a dangling ``dangling.png``, two links ``loopa.png`` / ``loopb.png`` to each other and a
    dangling ``notes.txt`` (not of the suffixes asked for)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "a.png").write_bytes(b"x")
    os.symlink("/nonexistent/x.png", folder / "dangling.png")
    os.symlink("loopb.png", folder / "loopa.png")
    os.symlink("loopa.png", folder / "loopb.png")
    os.symlink("/nonexistent/notes.txt", folder / "notes.txt")


def test_visible_files_name_dangling_links_and_loops_in_one_warning(tmp_path):
    _links(tmp_path)
    with pytest.warns(BrokenLinkWarning) as caught:
        assert visible_files(tmp_path, (".png",)) == [tmp_path / "a.png"]
    assert [str(w.message) for w in caught] == [
        (
            f"{tmp_path}: 3 broken links (dangling.png: a link to /nonexistent/x.png, which does not exist; "
            "loopa.png: a symlink loop; loopb.png: a symlink loop) left out: fix or remove a link to read its file"
        )
    ]
    with warnings.catch_warnings():  # a working link is a file like any other
        warnings.simplefilter("error")
        os.symlink(tmp_path / "a.png", tmp_path / "b.png")
        assert visible_files(tmp_path, (".jpg",)) == []


def test_a_predict_folder_with_a_loop_and_an_earlier_run_says_so_not_a_runtime_error(tmp_path):
    """An earlier run's manifest makes the listing resolve each entry: a loop raised ``RuntimeError: Symlink loop``;
    a dangling link was left out of the predict count ("4 of 20 images") without a word."""
    _links(tmp_path / "in")
    (tmp_path / "in" / "pred").mkdir()
    (tmp_path / "in" / "pred" / "a.png").write_bytes(b"x")
    (tmp_path / "in" / "pred" / PREDICTIONS_MANIFEST).write_text(json.dumps(["a.png"]))
    with pytest.warns(_PredictWarning) as caught:
        found = visible_inputs(tmp_path / "in", (".png",), "--data.predict_path", _PredictWarning)
    assert found == [tmp_path / "in" / "a.png"]
    said = [str(w.message) for w in caught]
    assert f"--data.predict_path {tmp_path / 'in'}: 3 broken links (dangling.png: a link to /nonexistent/x.png, " in said[0]
    assert "loopa.png: a symlink loop; loopb.png: a symlink loop) not read" in said[0]
    assert "1 file(s) an earlier predict run wrote there" in said[1]


def test_visible_entries_leave_out_broken_links_counted_once_per_block(tmp_path):
    """A patient folder holding a dangling ``z-55.5_c2.png``: LIDC said it "is not <patient>/<name>.png"."""
    for patient in ("p1", "p2"):
        (tmp_path / patient).mkdir()
        (tmp_path / patient / "z-1.png").write_bytes(b"x")
        os.symlink("/nonexistent/foo.png", tmp_path / patient / "z-2.png")
    with warnings.catch_warnings(record=True) as caught, counting_hidden_files(tmp_path):
        warnings.simplefilter("always")
        for patient in ("p1", "p2"):
            assert visible_entries(tmp_path / patient) == [tmp_path / patient / "z-1.png"]
        assert caught == []
    assert [w.category for w in caught] == [BrokenLinkWarning]
    assert str(caught[0].message).startswith(
        f"{tmp_path}: 2 broken links (p1/z-2.png: a link to /nonexistent/foo.png, which does not exist; p2/z-2.png:"
    )


def test_an_output_folder_that_is_a_file_or_a_broken_link_is_refused_naming_the_option(tmp_path):
    (tmp_path / "000000.txt").write_text("x")
    os.symlink("/nonexistent/out", tmp_path / "gone")
    with pytest.raises(NotADirectoryError, match=r"^--model.predict_dir .*000000.txt: is a file, not a folder"):
        check_output_folder(tmp_path / "000000.txt", "--model.predict_dir")
    with pytest.raises(NotADirectoryError, match=r"out: lies below .*000000.txt, which is a file, not a folder"):
        check_output_folder(tmp_path / "000000.txt" / "out", "--model.predict_dir")
    with pytest.raises(NotADirectoryError, match="gone: is a link to /nonexistent/out, which does not exist, not a"):
        check_output_folder(tmp_path / "gone", "--model.predict_dir")
    check_output_folder(tmp_path / "new" / "pred", "--model.predict_dir")  # made when written: fine
    check_output_folder(tmp_path, "--model.predict_dir")


@pytest.mark.parametrize(
    "batch_size, num_workers, refused",
    [(0, None, "--data.batch_size"), (-1, 0, "--data.batch_size"), (2.5, 0, "--data.batch_size"),
     (2, -1, "--data.num_workers")],
)  # fmt: skip
def test_a_batch_size_below_one_is_refused_naming_the_option(batch_size, num_workers, refused):
    """0 ended fit in a bare ZeroDivisionError (``per_rank % batch_size``), -1 in torch's message after the
    model was built."""
    from shared.data import SplitLoaders

    with pytest.raises(ValueError, match=rf"^{refused} must be a whole number >= {0 if 'workers' in refused else 1}"):
        SplitLoaders().set_loader_options(batch_size, num_workers)
    loaders = SplitLoaders()
    loaders.set_loader_options(1, 0)
    assert (loaders.batch_size, loaders.num_workers) == (1, 0)


def test_a_data_module_refuses_batch_size_zero_when_built():
    from domains.driving.detection.data import DetectionDataModule

    with pytest.raises(ValueError, match=r"^--data.batch_size must be a whole number >= 1 \(items per batch\), got 0"):
        DetectionDataModule(batch_size=0)


def test_a_misspelled_option_is_three_lines_with_the_close_option(capsys, monkeypatch):
    """``--data.batch_sise 4`` printed the usage of every option (99 lines) and suggested nothing."""
    from domains.driving.detection.__main__ import main

    monkeypatch.setattr(sys, "argv", ["python"])  # pytest's own arguments: Lightning warns of both given

    config = Path(__file__).resolve().parents[2] / "domains/driving/detection/configs/quick.yaml"
    with pytest.raises(SystemExit) as stop:
        main(["fit", "-c", str(config), "--data.batch_sise", "4"])
    assert stop.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        (
            "usage: python -m domains.driving.detection fit [-h] [-c CONFIG] [options]  (python -m "
            "domains.driving.detection fit --help lists them)"
        ),
        "error: unrecognized arguments: --data.batch_sise 4",
        "--data.batch_sise: did you mean --data.batch_size?",
    ]


def test_suggest_options_names_only_close_options():
    from shared.cli_help import suggest_options

    known = ["--data.batch_size", "--data.num_workers", "--trainer.max_epochs"]
    assert suggest_options(["--data.num_worker=2", "--trainer.max_epoch", "3", "--zzz"], known) == [
        "--data.num_worker: did you mean --data.num_workers?",
        "--trainer.max_epoch: did you mean --trainer.max_epochs?",
    ]


def test_a_classification_predict_dir_that_is_a_file_is_refused_before_predicting(tmp_path):
    """The shared prediction set checks it for every task: classification wrote its first batch's files into
    ``<file>/cam`` and failed with a NotADirectoryError naming no option."""
    from shared.prediction_set import PredictionSet
    from tests.helpers import quiet_trainer, stripes_data, stripes_folder, stripes_task

    root = stripes_folder(tmp_path / "data", {"train": 1, "val": 1, "test": 1})
    (tmp_path / "out.txt").write_text("notes")
    task = stripes_task()
    task.predict_dir = str(tmp_path / "out.txt")
    trainer = quiet_trainer(callbacks=[PredictionSet()])
    with pytest.raises(NotADirectoryError, match=r"--model\.predict_dir .*out\.txt: is a file, not a folder"):
        trainer.predict(task, stripes_data(root))
    assert (tmp_path / "out.txt").read_text() == "notes"
