"""Fixtures every test package may ask for (tiny generated KITTI and LIDC sets among them); plain helper
functions live in tests/helpers.py."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

pytest.register_assert_rewrite("tests.helpers")  # its assert helpers report values like test code does

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one worker per core: a second intra-op thread in each would spin against the other worker
    # (tiny tensors gain nothing from it), and the suite took 3 min 55 s instead of 2 min 50 s.
    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # and in the commands tests start


#: what a run leaves in os.environ for the rest of the process: Lightning's seed_everything sets PL_GLOBAL_SEED and
#: PL_SEED_WORKERS (a later ``seed_everything(None)``, a DDP rank's seed and its sampler's shuffle read them),
#: Trainer(deterministic=True) CUBLAS_WORKSPACE_CONFIG. Only these: session fixtures set others on purpose
#: (tests/apps/conftest.py's demo roots), which a whole-environment restore undid after their first test.
RUN_ENV = ("PL_", "CUBLAS_WORKSPACE_CONFIG")


@contextmanager
def run_env_restored() -> Iterator[None]:
    """The :data:`RUN_ENV` variables as they were before, afterwards (by hand: ``monkeypatch`` restores only
    what it set itself, and ``mock.patch.dict`` restores the whole environment)."""
    saved = {k: v for k, v in os.environ.items() if k.startswith(RUN_ENV)}
    try:
        yield
    finally:
        for key in [k for k in os.environ if k.startswith(RUN_ENV) and k not in saved]:
            del os.environ[key]
        os.environ.update(saved)


@pytest.fixture(autouse=True)
def _run_env_restored() -> Iterator[None]:
    """Each test leaves the :data:`RUN_ENV` variables as it found them: a test's result does not depend on which
    tests ran before it in the process (tests/test_run_env_s40.py). The SIGINT handler too: Lightning's Ctrl-C
    handling sets SIGINT to be ignored for good (a graceful shutdown), and a later test of the same worker that
    sends one (tests/shared/test_longruns_s38.py) got nothing."""
    sigint = signal.getsignal(signal.SIGINT)
    with run_env_restored():
        yield
    if signal.getsignal(signal.SIGINT) is not sigint:
        signal.signal(signal.SIGINT, sigint)


@pytest.fixture(autouse=True, scope="module")
def _module_run_env_restored() -> Iterator[None]:
    """The same around each test file: a module fixture that seeds (set up before the per-test restore) leaves
    its PL_GLOBAL_SEED to its own file's tests only."""
    with run_env_restored():
        yield


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a shared 2-core machine two threads per process
    spin against other processes (5-10x slower here); restored after the module.
    Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def kitti(tmp_path_factory) -> Path:
    """12 synthetic frames of 320x96 in 6 sequences (about 6 s); copied by tests that edit it."""
    from domains.driving.synthetic import generate_kitti

    return generate_kitti(
        tmp_path_factory.mktemp("kitti"), n_images=12, size=(320, 96), frames_per_sequence=2, verbose=False
    )


@pytest.fixture(scope="module")
def lidc(tmp_path_factory) -> Path:
    """8 patients x 2 images of 32 px, split by patient: 12 train, 2 val, 2 test images; copied by tests that
    edit it."""
    from domains.medical.synthetic import generate_lidc_png

    return generate_lidc_png(tmp_path_factory.mktemp("lidc"), n_patients=8, images_per_patient=2, size=32)


@pytest.fixture(scope="session")
def work_dir(tmp_path_factory) -> Path:
    """A folder standing in for the checkout as the working directory of the slow tests whose commands write
    where they run (the synthetic sets under ``data/``, ``lightning_logs/``), so a test run leaves the
    repository's own untouched; one per session, so a synthetic set is generated in it once."""
    return tmp_path_factory.mktemp("work")
