"""``--ckpt_path best`` reads ``last.ckpt`` to find the best file: a broken one is said to be what it is."""

import pytest

from shared import cli


def test_a_broken_last_ckpt_is_named_with_what_it_is(tmp_path):
    last = tmp_path / "last.ckpt"
    last.write_text("half a download")
    with pytest.raises(FileNotFoundError, match=r"last\.ckpt cannot say which file is the best: .*a text file"):
        cli._best_model_path(last)
