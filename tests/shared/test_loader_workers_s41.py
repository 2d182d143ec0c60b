"""A script that iterated a suite loader with workers must exit: the workers ignore SIGTERM (so a SIGTERM to
the CLI's process group is the main process's alone), and multiprocessing's exit hook ended them with SIGTERM
and then waited for them forever (:func:`shared.data.kill_loader_workers`)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from shared.data import SplitLoaders, kill_loader_workers

ROOT = Path(__file__).resolve().parents[2]


class _TinyLoaders(SplitLoaders):
    """A suite data module over 8 numbers: its training loader is the suite's (persistent workers,
    :func:`shared.data.init_loader_worker`)."""

    def __init__(self, num_workers: int):
        super().__init__()
        self.datasets = {"train": TensorDataset(torch.arange(8.0))}
        self.set_loader_options(batch_size=2, num_workers=num_workers)


def _wait_dead(workers, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(w.is_alive() for w in workers):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the signal mask from /proc (Linux)")
def test_exit_hook_kills_workers_that_ignore_sigterm(monkeypatch):
    """The suite's workers outlive the SIGTERM multiprocessing's exit hook sends (the CLI's reason to ignore
    it), and the suite's exit hook ends them, with torch's SIGCHLD handler (which raises for a killed worker)
    left off while it does and put back after; a worker that honours SIGTERM is left to multiprocessing."""
    suite = iter(_TinyLoaders(num_workers=2).train_dataloader())
    plain = iter(DataLoader(TensorDataset(torch.arange(4.0)), num_workers=1, persistent_workers=True))
    next(suite), next(plain)
    workers, other = list(suite._workers), plain._workers[0]
    assert len(workers) == 2 and all(w.is_alive() for w in workers) and other.is_alive()
    # only this test's workers: others a test session left alive are not this test's to end
    monkeypatch.setattr(multiprocessing, "active_children", lambda: [*workers, other])
    try:
        os.kill(workers[0].pid, signal.SIGTERM)  # what multiprocessing's exit hook sends, then join() forever
        time.sleep(0.5)
        assert workers[0].is_alive(), "a suite loader worker must ignore SIGTERM (the CLI's process group)"
        handler = signal.getsignal(signal.SIGCHLD)
        assert kill_loader_workers() == 2
        assert _wait_dead(workers), "kill_loader_workers left workers alive"
        assert other.is_alive(), "a worker that honours SIGTERM is multiprocessing's to end"
        assert signal.getsignal(signal.SIGCHLD) == handler
        monkeypatch.setattr(multiprocessing, "active_children", lambda: [other])
        assert kill_loader_workers() == 0  # none ignoring SIGTERM left: nothing to do
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.kill()
        suite._shutdown_workers()
        plain._shutdown_workers()


@pytest.mark.slow
def test_script_that_iterated_a_suite_loader_exits(tmp_path):
    """The audit's case end to end: a Python script iterates a suite training loader (2 persistent workers),
    keeps the iterator, and returns; it hung at exit forever, and now ends with status 0 (the imports take
    most of its ~8 s on 2 busy cores)."""
    script = tmp_path / "iterate.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {str(ROOT)!r})
            from tests.shared.test_loader_workers_s41 import _TinyLoaders

            batches = iter(_TinyLoaders(num_workers=2).train_dataloader())
            print(next(batches)[0].tolist(), flush=True)
            """
        )
    )
    process = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, so a hung run's workers can be ended with it
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        out, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail("the script hung at exit: its loader workers were not ended")
    assert process.returncode == 0, err
    assert out.strip().startswith("["), out
    assert "killed by signal" not in err, err
