"""Benchmark leftovers (s44): driving_anomaly.py's ``--help`` names the valid encoders without importing torch
(it showed ``--encoder ENCODER`` alone), and gpu_recipes.py's table says what its runs' own processes did with
freed memory (main() called from Python said "not kept" of runs that had kept it)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from benchmarks import report

REPO = Path(__file__).resolve().parents[1]
KEPT = "freed memory kept for reuse as in `python -m domains.<domain>`: `shared.allocator`"


def test_the_backbone_names_a_help_lists_without_torch_are_the_registry_s():
    from shared.backbones import list_backbones

    assert report.BACKBONES == tuple(list_backbones())


def test_driving_anomaly_help_lists_every_valid_encoder():
    """Run as a program (its options built before torch: test_benchmarks_args_s43), the help names every
    encoder it takes."""
    probe = subprocess.run(
        [sys.executable, "benchmarks/driving_anomaly.py", "--help"],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert probe.returncode == 0, probe.stderr
    help_text = " ".join(probe.stdout.split())
    assert "--encoder NAME" in help_text
    assert f"a registered one: {', '.join(report.BACKBONES)} (default: unet_encoder)" in help_text


def test_gpu_recipes_run_from_python_says_what_its_runs_did_with_freed_memory(tmp_path, monkeypatch):
    """The runs are programs of their own (they keep freed memory); main() called from Python does not, and
    its table said "not kept" of them. Here the children are faked: each writes the record a run writes."""
    from benchmarks import gpu_recipes

    class Process:
        returncode = 0

        def __init__(self, cmd, **kwargs):
            if "--child" in cmd:
                name = cmd[cmd.index("--child") + 1]
                record = {"device": "CPU", "fit_seconds": 6.0, "steps": 3, "epochs": 1,
                          "images_per_second": 1.0, "metrics": {}, "memory": KEPT}  # fmt: skip
                (tmp_path / f"{name}.json").write_text(json.dumps(record))

        def poll(self):
            return 0

    monkeypatch.setattr(gpu_recipes.subprocess, "Popen", Process)
    clock = SimpleNamespace(perf_counter=time.perf_counter, sleep=lambda seconds: None)
    monkeypatch.setattr(gpu_recipes, "time", clock)
    monkeypatch.setattr(report, "_freed_memory_kept", False)  # this process: glibc's defaults
    assert gpu_recipes.main(["--out-dir", str(tmp_path), "--runs", "unet", "hpu_net"]) == 0
    header = (tmp_path / "gpu_recipes.md").read_text().splitlines()[2]
    assert f"` (each run: {KEPT}; each child's own command line" in header and "not kept" not in header
    (tmp_path / "unet.json").unlink()
    (tmp_path / "hpu_net.json").unlink()
    assert gpu_recipes._memory_note(tmp_path, ["unet"]) == "the runs' records do not say how they kept freed memory"


def test_a_gpu_recipes_run_records_what_its_process_did_with_freed_memory(tmp_path, monkeypatch):
    """The record a child writes (its fit and test faked) holds its own process's memory note."""
    import importlib

    from benchmarks import gpu_recipes

    fit = SimpleNamespace(
        trainer=SimpleNamespace(callbacks=[gpu_recipes.TrainingThroughput()], global_step=3, current_epoch=0),
        model=SimpleNamespace(hparams={}),
        datamodule=SimpleNamespace(hparams={}, batch_size=2),
    )
    test = SimpleNamespace(trainer=SimpleNamespace(callback_metrics={}), model=torch.nn.Linear(1, 1))
    cli = SimpleNamespace(main=lambda args: fit if args[0] == "fit" else test)
    real = importlib.import_module
    monkeypatch.setattr(
        importlib, "import_module", lambda name: cli if name.endswith(".__main__") else real(name)
    )
    monkeypatch.setattr(report, "_freed_memory_kept", True)  # as run_as_program leaves a child
    assert gpu_recipes._child("unet", tmp_path, 10.0, smoke=True) == 0
    assert json.loads((tmp_path / "unet.json").read_text())["memory"] == KEPT
