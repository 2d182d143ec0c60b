"""Lightning's run settings in os.environ do not leak from one test to the next (tests/conftest.py's
``_run_env_restored``): ``seed_everything`` left PL_GLOBAL_SEED and PL_SEED_WORKERS set for the rest of the
process (tests/shared/test_repro_s35.py's first test left PL_GLOBAL_SEED=1 behind it, although it had
``monkeypatch.delenv``-ed the variable), so a later ``seed_everything(None)`` took that test's seed, not 0.

The two tests below are a pair, run in this order (pytest keeps a file's order; ``make test`` gives each worker
whole files): the second failed after the first."""

from __future__ import annotations

import os
import warnings

import pytorch_lightning as pl

from tests.conftest import RUN_ENV


def _run_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(RUN_ENV)}


#: the variables as this process had them before any test ran (the module is imported at collection)
AT_START = _run_env()


def test_a_seeded_test_sets_lightnings_seed_variables(monkeypatch):
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)  # as test_repro_s35 does: records nothing to restore
    pl.seed_everything(7, workers=True, verbose=False)
    assert os.environ["PL_GLOBAL_SEED"] == "7" and os.environ["PL_SEED_WORKERS"] == "1"


def test_the_next_test_starts_without_them_and_seed_everything_none_takes_its_default():
    assert _run_env() == AT_START
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "No seed found, seed set to 0"
        seed = pl.seed_everything(None, verbose=False)
    assert seed == int(AT_START.get("PL_GLOBAL_SEED", 0))  # it was 7, the test before's

