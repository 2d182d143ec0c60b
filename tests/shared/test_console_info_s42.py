"""Info lines logged to the terminal while a progress bar is drawn (Lightning's "`Trainer.fit` stopped: ...",
the suite's ``rank_zero_info`` notes) landed on the bar's line, as warnings did before session 41; they now get a
line of their own and the bar is drawn again below them. A log file gets the record as before."""

from __future__ import annotations

import io
import logging
import sys

from shared.cli_help import report_input_errors
from tests.shared.test_console_s41 import _bar, _screen, _terminal


def _logger_to(stream) -> tuple[logging.Logger, logging.Handler]:
    logger = logging.getLogger("tests.console_info_s42")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    return logger, handler


def test_an_info_line_logged_while_a_bar_is_drawn_gets_a_line_of_its_own():
    with _terminal() as terminal:
        logger, handler = _logger_to(sys.stderr)  # the terminal, as Lightning's handler writes to it
        try:
            with report_input_errors():
                bar = _bar()
                logger.info("`Trainer.fit` stopped: `max_steps=3` reached.")
                bar.update(1)
                bar.close()
        finally:
            logger.removeHandler(handler)
    screen = _screen(terminal.getvalue())
    assert "`Trainer.fit` stopped: `max_steps=3` reached." in screen, screen
    assert screen[-1].startswith("Epoch 0:  40%"), screen  # the bar drawn again below it


def test_a_record_to_a_file_is_written_as_before_and_the_handler_is_restored_after():
    log = io.StringIO()
    emit = logging.StreamHandler.emit
    with _terminal() as terminal:
        logger, handler = _logger_to(log)
        try:
            with report_input_errors():
                bar = _bar()
                logger.info("a note")
                bar.close()
        finally:
            logger.removeHandler(handler)
    assert log.getvalue() == "a note\n"
    assert "a note" not in terminal.getvalue()
    assert logging.StreamHandler.emit is emit
