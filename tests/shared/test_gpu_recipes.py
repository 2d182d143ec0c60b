"""benchmarks/gpu_recipes.py's plumbing, as its CPU dry run (``--smoke``) checks it (about a minute: slow)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_a_relative_out_dir_gets_every_file_of_the_run(tmp_path, work_dir, monkeypatch, capsys):
    """The children run in the repository: a relative --out-dir put their files there, and each run's
    config.yaml went to the repository's lightning_logs/. Here the folder they run in (``ROOT``) is the
    session's ``work_dir`` with the run's configs linked in, so the synthetic set the children generate under
    data/ stays out of the repository."""
    from benchmarks import gpu_recipes

    for config in gpu_recipes.RUNS["unet"][1]:  # named relative to the folder the children run in
        folder = work_dir / Path(config).parent
        if not folder.exists():
            folder.parent.mkdir(parents=True, exist_ok=True)
            folder.symlink_to(REPO / Path(config).parent, target_is_directory=True)
    monkeypatch.setattr(gpu_recipes, "ROOT", work_dir)
    # the generator imports this checkout's benchmarks from there
    monkeypatch.setenv("PYTHONPATH", str(REPO), prepend=os.pathsep)
    monkeypatch.chdir(tmp_path)
    code = gpu_recipes.main(["--out-dir", "runs", "--smoke", "--runs", "unet"])
    out = tmp_path / "runs"
    assert code == 0, capsys.readouterr().out  # the table names the log of a failed run
    assert {"gpu_recipes.md", "unet.json", "unet.log", "unet.safetensors"} <= {p.name for p in out.iterdir()}
    assert (out / "unet" / "config.yaml").is_file()
    assert not (work_dir / "lightning_logs").exists()
    table = (out / "gpu_recipes.md").read_text()
    assert table.startswith("# GPU recipes: SMOKE run") and "--smoke --runs unet" in table  # never a result
    record = json.loads((out / "unet.json").read_text())
    command = record["command"]  # the budgeted run, pasted back
    assert "FitScheduleToBudget" in command and "--trainer.callbacks.seconds=" in command
    assert "--trainer.max_time" in command
    # training batches alone: over the whole fit (start-up, validation, checkpoints) it was 0.5 here
    whole_fit = record["steps"] * 2 / record["fit_seconds"]
    assert record["images_per_second"] > 1.3 * whole_fit
