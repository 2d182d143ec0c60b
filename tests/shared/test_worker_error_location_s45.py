"""An input error raised in a real DataLoader worker is located at the worker's own frame (torch's re-raise put it
at ``torch/_utils.py ... in reraise``, which told the user nothing)."""

from __future__ import annotations

import pytest
from torch.utils.data import DataLoader, Dataset

from shared.cli_help import report_input_errors


class _Broken(Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, index):
        raise ValueError(f"/data/{index}.txt line 3: 14 fields, expected 15")


def test_a_worker_s_error_names_the_worker_s_line(capsys, monkeypatch):
    monkeypatch.delenv("SUITE_TRACEBACK", raising=False)
    with pytest.raises(SystemExit), report_input_errors():
        next(iter(DataLoader(_Broken(), num_workers=1)))
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "error: ValueError: /data/0.txt line 3: 14 fields, expected 15"
    assert lines[1].startswith(f"(raised at {__file__}:")
    assert lines[1].endswith(
        " in __getitem__ (in DataLoader worker process 0); SUITE_TRACEBACK=1 shows the whole traceback)"
    )
