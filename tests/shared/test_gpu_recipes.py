"""benchmarks/gpu_recipes.py's plumbing, as its CPU dry run (``--smoke``) checks it (about a minute: slow)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_a_relative_out_dir_gets_every_file_of_the_run(tmp_path):
    """The children run in the repository: a relative --out-dir put their files there, and each run's
    config.yaml went to the repository's lightning_logs/."""
    logs = sorted((REPO / "lightning_logs").glob("**/config.yaml"))
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/gpu_recipes.py"), "--out-dir", "runs", "--smoke", "--runs", "unet"],
        check=False, cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    out = tmp_path / "runs"
    assert {"gpu_recipes.md", "unet.json", "unet.log", "unet.safetensors"} <= {p.name for p in out.iterdir()}
    assert (out / "unet" / "config.yaml").is_file()
    assert sorted((REPO / "lightning_logs").glob("**/config.yaml")) == logs
    table = (out / "gpu_recipes.md").read_text()
    assert table.startswith("# GPU recipes: SMOKE run") and "--smoke --runs unet" in table  # never a result
    record = json.loads((out / "unet.json").read_text())
    command = record["command"]  # the budgeted run, pasted back
    assert "FitScheduleToBudget" in command and "--trainer.callbacks.seconds=" in command
    assert "--trainer.max_time" in command
    # training batches alone: over the whole fit (start-up, validation, checkpoints) it was 0.5 here
    whole_fit = record["steps"] * 2 / record["fit_seconds"]
    assert record["images_per_second"] > 1.3 * whole_fit
