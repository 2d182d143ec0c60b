"""What the terminal shows: warnings and the ``error:`` line beside a progress bar, a classification predict
where no image reads, OpenCV's own log, and what a classification predict says it predicted."""

from __future__ import annotations

import contextlib
import csv
import io
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from tqdm import tqdm

from shared.classification.data import ClassificationDataError, ClassificationDataWarning
from shared.cli_help import _is_input_error, report_input_errors
from tests.driving.test_classification import _folder, _folder_args, main
from tests.shared.test_notify_weights_audit2 import _stderr

pytestmark = pytest.mark.usefixtures("one_thread")
BROKEN_PNG = b"\x89PNG\r\n\x1a\n not really"  # a PNG's signature, no IHDR after it


def _screen(text: str) -> list[str]:
    """The lines a terminal shows for ``text``: ``\\r`` goes back to the line's start and what follows
    overwrites it, as a progress bar redraws itself (no library here plays a terminal; a few lines do)."""
    lines, line, col = [], [], 0
    for char in text:
        if char == "\n":
            lines.append("".join(line).rstrip())
            line, col = [], 0
        elif char == "\r":
            col = 0
        else:
            line[col : col + 1] = [char]
            col += 1
    return [*lines, "".join(line).rstrip()] if line else lines


@contextlib.contextmanager
def _terminal():
    """stdout and stderr as one terminal (``2>&1``): Lightning's bar draws on stdout, warnings go to stderr.
    Set inside the test: pytest's capture replaces both streams again after the fixtures' setup."""
    term = io.StringIO()
    with contextlib.redirect_stdout(term), contextlib.redirect_stderr(term):
        yield term


def _bar() -> tqdm:
    """A drawn bar, as Lightning's (on stdout, redrawn at every update)."""
    bar = tqdm(total=10, desc="Epoch 0", file=sys.stdout, mininterval=0, miniters=1, ascii=True)
    bar.update(3)
    return bar


def _write_to_stderr(message, category, filename, lineno, file=None, line=None):
    """Python's own ``showwarning`` as a command line has it: pytest's warnings plugin records warnings
    instead of writing them, which would leave nothing on the screen to check."""
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def test_a_warning_shown_while_a_bar_is_drawn_gets_a_line_of_its_own(monkeypatch):
    """It was written after the bar's text on the bar's line (the bar's redraw then wrote over it)."""
    monkeypatch.setattr(warnings, "showwarning", _write_to_stderr)
    with _terminal() as terminal, warnings.catch_warnings(), report_input_errors():
        warnings.simplefilter("always")
        bar = _bar()
        warnings.warn("predict: 2 of 2 images could not be read", ClassificationDataWarning)
        bar.update(1)
        bar.close()
    screen = _screen(terminal.getvalue())
    assert "ClassificationDataWarning: predict: 2 of 2 images could not be read" in screen, screen
    assert screen[-1].startswith("Epoch 0:  40%")  # the bar drawn again below it


def test_warnings_are_still_recorded_by_a_hook_set_before_the_command():
    """A test's ``pytest.warns`` (Python's record hook) still gets the warnings shown during the command."""
    before = warnings.showwarning  # Python's, or MONAI's once it was imported (it replaces it process-wide)
    with pytest.warns(ClassificationDataWarning, match="kept"), report_input_errors():
        warnings.warn("kept", ClassificationDataWarning)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with report_input_errors():
            warnings.warn("also kept", ClassificationDataWarning)
    assert [str(w.message) for w in caught] == ["also kept"]
    assert warnings.showwarning is before  # given back after the command


def test_the_error_line_starts_on_a_fresh_line_below_a_bar(monkeypatch):
    monkeypatch.delenv("SUITE_TRACEBACK", raising=False)
    with _terminal() as terminal, pytest.raises(SystemExit) as stop, report_input_errors():
        bar = _bar()
        raise ValueError("an image of (64, 64) is too small")
    bar.close()  # already closed by the command: nothing more is drawn
    assert stop.value.code == 1
    screen = _screen(terminal.getvalue())
    assert screen[-3].startswith("Epoch 0:  30%")  # the bar left as it was, on its own line
    assert screen[-2] == "error: ValueError: an image of (64, 64) is too small", screen
    assert screen[-1].startswith("(raised at ")


def test_opencvs_decoder_errors_are_silent_unless_the_user_asks(tmp_path):
    """``[ERROR:0@1.395] global grfmt_png.cpp:296 readHeader IHDR chunk shall be first`` came for every image
    that does not decode, beside the suite's own message naming the file."""
    bad = tmp_path / "a.png"
    bad.write_bytes(BROKEN_PNG)
    read = f"import shared.images, cv2; assert cv2.imread({str(bad)!r}) is None"
    assert "IHDR" not in _stderr(read)
    assert "IHDR" in _stderr(read, OPENCV_LOG_LEVEL="ERROR")  # the user's level is kept


def _rows(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_classification_predict_of_the_test_split_says_so(tmp_path, monkeypatch, capsys):
    """Its closing line said "predict: 4 rows in ..." only: not which images (the accident task's says)."""
    monkeypatch.chdir(tmp_path)
    root = _folder(tmp_path / "data")
    shutil.copytree(root / "val", root / "test")
    main(["predict", "--ckpt_path", "none", *_folder_args(root, "--model.predict_dir", str(tmp_path / "t"))])
    said = capsys.readouterr().out
    assert "predict: 4 rows (the test split's; --data.predict_path for your own images) in " in said, said


def test_classification_predict_of_no_readable_image_is_an_error_and_keeps_the_earlier_set(
    tmp_path, monkeypatch, capsys
):
    """It exited 0 with a header-only probabilities.csv (the earlier set gone), where the other tasks' predict
    stop with an error naming the option."""
    import cv2

    monkeypatch.chdir(tmp_path)
    root = _folder(tmp_path / "data")
    own, broken, pred = tmp_path / "own", tmp_path / "broken", tmp_path / "pred"
    own.mkdir()
    broken.mkdir()
    for i in range(2):
        cv2.imwrite(str(own / f"o{i}.png"), np.zeros((20, 20, 3), np.uint8))
        (broken / f"b{i}.png").write_bytes(BROKEN_PNG)
    main(["predict", "--ckpt_path", "none", *_folder_args(root, "--data.predict_path", str(own),
                                                           "--model.predict_dir", str(pred))])  # fmt: skip
    said = capsys.readouterr().out
    assert "predict: 2 rows in " in said and "test split" not in said, said  # one's own images: no note
    earlier = _rows(pred / "probabilities.csv")
    args = _folder_args(root, "--data.predict_path", str(broken), "--model.predict_dir", str(pred))
    with pytest.raises(ClassificationDataError) as caught:
        main(["predict", "--ckpt_path", "none", *args])
    message = str(caught.value)
    assert message.startswith(f"--data.predict_path {broken}: none of its 2 images can be read"), message
    assert f"{broken / 'b0.png'}: cannot decode image" in message and _is_input_error(caught.value)  # exit 1
    assert _rows(pred / "probabilities.csv") == earlier and not (pred / "unreadable.csv").exists()
