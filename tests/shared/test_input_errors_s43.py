"""The CLI's input errors are told by class, subclasses included: a ``NothingLoadedError`` (a
``WeightLoadingError``) ends the command with its one ``error:`` line, not a traceback."""

from __future__ import annotations

import pytest
from lightning_fabric.utilities.exceptions import MisconfigurationException

from shared.backbones.weights import LoadReport, NothingLoadedError
from shared.cli_help import _is_input_error, report_input_errors
from shared.task import NonFiniteLossError


class MyMisconfiguration(MisconfigurationException):
    """A plugin's own refusal of a setting, extending Lightning's."""


class MyNonFinite(NonFiniteLossError):
    """A task's own non-finite loss error."""


@pytest.mark.parametrize(
    "err",
    [
        NothingLoadedError("no tensor of weights.pth fits the encoder", LoadReport()),
        MyMisconfiguration("--trainer.devices 3: only 1 available"),
        MyNonFinite("loss is nan at step 3"),
    ],
)
def test_subclasses_of_the_suites_input_errors_are_input_errors(err):
    assert _is_input_error(err)


def test_a_nothing_loaded_error_reaching_the_cli_is_one_error_line(capsys):
    with pytest.raises(SystemExit) as stop, report_input_errors():
        raise NothingLoadedError("weights.pth: no tensor fits the encoder", LoadReport())
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: NothingLoadedError: weights.pth: no tensor fits the encoder\n"), err
    assert "Traceback" not in err
    assert not _is_input_error(RuntimeError("a bug"))  # other errors (bugs) keep their traceback
