"""An input error raised in a DataLoader worker is located at the worker's own frame (torch's re-raise put it at
``torch/_utils.py ... in reraise``, which told the user nothing)."""

from __future__ import annotations

import pytest

from shared.cli_help import report_input_errors


def test_a_worker_s_error_names_the_worker_s_line(capsys, monkeypatch):
    monkeypatch.delenv("SUITE_TRACEBACK", raising=False)
    worker = ValueError(  # how torch's DataLoader re-raises a worker's error
        "Caught LabelFormatError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "/venv/torch/utils/data/_utils/worker.py", line 349, in _worker_loop\n    data = fetcher.fetch(index)\n'
        '  File "/repo/domains/driving/formats.py", line 212, in read_label_file\n    raise LabelFormatError(path, 3)\n'
        "domains.driving.formats.LabelFormatError: /data/a.txt line 3: 14 fields, expected 15\n"
    )
    with pytest.raises(SystemExit), report_input_errors():
        raise worker
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "error: ValueError: /data/a.txt line 3: 14 fields, expected 15",
        (
            "(raised at /repo/domains/driving/formats.py:212 in read_label_file, in a DataLoader worker; "
            "SUITE_TRACEBACK=1 shows the whole traceback)"
        ),
    ]
